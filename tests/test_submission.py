"""The public submission layer, and the shape rules it exists for (issues 20, 21, 22).

- one seam for background work (``sail_lite.submission``): no module reads another's ``_private``
  names, and the package's import graph (deferred imports included) has no cycle;
- each blocking call knows the responses it has in flight through one place (``InFlight``);
- the ``**kwargs`` entry points spell their parameters out, and a bare int is a one-token stop;
- bad arguments to ``map`` are typed errors at the call, not at the first ``next()``.
"""

from __future__ import annotations

import ast
import inspect
import pathlib
import threading
from typing import Dict, List, Set, Tuple

import pytest

from sail_lite import InvalidRequestError, SampledTokens
from sail_lite.resources.responses import Responses
from sail_lite.resources.tokens import Tokens
from sail_lite.submission import InFlight, Submitter, block_on

MODEL = "moonshotai/Kimi-K2.6"
PACKAGE = pathlib.Path(__file__).resolve().parent.parent / "sail_lite"


# --- the import graph and private reads -------------------------------------------------------------------------


def _modules() -> Dict[str, Tuple[pathlib.Path, bool]]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        is_package = parts[-1] == "__init__"
        found[".".join(parts[:-1] if is_package else parts)] = (path, is_package)
    return found


def _target(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def import_graph() -> Dict[str, Set[str]]:
    """Every module's imports of package modules, wherever they are written (functions included)."""
    modules = _modules()
    graph: Dict[str, Set[str]] = {name: set() for name in modules}
    for name, (path, is_package) in modules.items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom):
                target = _target(name, is_package, node)
                for alias in node.names:
                    if f"{target}.{alias.name}" in modules:
                        graph[name].add(f"{target}.{alias.name}")
                    elif target in modules:
                        graph[name].add(target)
            elif isinstance(node, ast.Import):
                graph[name].update(a.name for a in node.names if a.name in modules)
    return graph


def cycles(graph: Dict[str, Set[str]]) -> List[List[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: Dict[str, int] = {}
    low: Dict[str, int] = {}
    stack: List[str] = []
    found: List[List[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for other in graph[node]:
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in graph:
        if node not in index:
            visit(node)
    return found


def private_reads(path: pathlib.Path) -> List[str]:
    """``from x import _name`` and ``obj._attr`` on anything but ``self``/``cls`` (dunders aside)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            found += [
                f"{path.name}:{node.lineno} from {node.module} import {a.name}"
                for a in node.names
                if a.name.startswith("_") and not a.name.startswith("__")
            ]
        elif (
            isinstance(node, ast.Attribute)
            and node.attr.startswith("_")
            and not node.attr.startswith("__")
            and not (isinstance(node.value, ast.Name) and node.value.id in ("self", "cls", "sys"))
        ):
            found.append(f"{path.name}:{node.lineno} {ast.unparse(node)}")
    return found


# The files of the submission layer and the modules that use it (tinker.py and ray.py: what they call).
SEAM_FILES = (
    "submission.py",
    "pipeline.py",
    "tinker.py",
    "ray.py",
    "__init__.py",
    *(f"resources/{p.name}" for p in sorted((PACKAGE / "resources").glob("*.py"))),
)


@pytest.mark.skipif(not hasattr(ast, "unparse"), reason="ast.unparse is Python 3.9+")
@pytest.mark.parametrize("name", SEAM_FILES)
def test_the_seam_and_its_users_read_no_private_name_of_another_module(name):
    assert private_reads(PACKAGE / name) == []


def test_the_packages_imports_have_no_cycle_deferred_imports_included():
    graph = import_graph()
    # The emulator package's __init__ re-exports its server, whose handler imports the package: one
    # concern, one folder. journal.resume's deferred import of the map engine moves to jobs.py (the
    # journal's own work in issue 22); until that lands, that one edge is set aside here.
    graph["sail_lite.journal"] = graph.get("sail_lite.journal", set()) - {"sail_lite.pipeline"}
    assert [
        c for c in cycles(graph) if not all(m.startswith("sail_lite.emulator") for m in c)
    ] == []


def test_the_map_engine_and_the_seam_import_no_resource():
    graph = import_graph()
    for name in ("sail_lite.submission", "sail_lite.pipeline"):
        assert not {m for m in graph[name] if m.startswith("sail_lite.resources")}, name


# --- one place for what a blocking call has in flight -----------------------------------------------------------


def test_in_flight_tracks_futures_until_they_finish(client):
    in_flight = InFlight()
    future = client.tokens.submit([1, 2, 3], model=MODEL, max_tokens=4)
    assert in_flight.track(future) is future
    result = block_on(future, in_flight)
    assert isinstance(result, SampledTokens)
    assert in_flight.futures() == [] and in_flight.response_ids() == []


def test_in_flight_names_an_accepted_response_while_it_runs(emulator):
    from .conftest import make_client

    seen: List[List[str]] = []
    gate = threading.Event()
    with make_client(emulator) as client:
        in_flight = InFlight()
        future = client.tokens.submit(
            [1, 2, 3], model=MODEL, max_tokens=4, completion_window="flex"
        )
        in_flight.track(future)
        future.add_accepted_callback(lambda f: gate.set())
        assert gate.wait(10)
        seen.append(in_flight.response_ids())
        future.cancel()
    assert seen == [[future.response_id]]


def test_the_responses_and_tokens_resources_share_one_submitter(client):
    assert isinstance(client.responses.submission, Submitter)
    assert client.tokens.submission is client.responses.submission


# --- signatures people can read (issue 21) -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "method",
    [Tokens.sample, Tokens.submit, Tokens.map, Responses.map, Responses.submit, Responses.create],
)
def test_entry_points_spell_their_parameters_out(method):
    kinds = {p.kind for p in inspect.signature(method).parameters.values()}
    assert inspect.Parameter.VAR_KEYWORD not in kinds


def test_sample_takes_exactly_submits_parameters():
    assert list(inspect.signature(Tokens.sample).parameters) == list(
        inspect.signature(Tokens.submit).parameters
    )


def test_map_takes_submits_sampling_parameters():
    per_request = {"prompt_tokens", "idempotency_key", "identity", "occurrence", "extra_headers"}
    sampling = set(inspect.signature(Tokens.submit).parameters) - per_request
    assert sampling <= set(inspect.signature(Tokens.map).parameters)


def test_a_bare_int_is_a_one_token_stop_on_every_path(client, emulator):
    plain = client.tokens.sample([1, 2, 3], model=MODEL, max_tokens=8, temperature=0.0)
    stop_id = plain.tokens[0]
    for result in (
        client.tokens.sample([1, 2, 3], model=MODEL, max_tokens=8, temperature=0.0, stop=stop_id),
        client.tokens.submit(
            [1, 2, 3], model=MODEL, max_tokens=8, temperature=0.0, stop=stop_id
        ).result(10),
        next(
            client.tokens.map([[1, 2, 3]], model=MODEL, max_tokens=8, temperature=0.0, stop=stop_id)
        ),
    ):
        assert result.tokens == plain.tokens[:1] and result.stop_reason == "stop"


# --- bad arguments to map are typed errors at the call (issue 20) ------------------------------------------------


@pytest.mark.parametrize("prompts", [5, None, "abc", b"abc", {"prompt_tokens": [1]}])
def test_tokens_map_refuses_what_is_not_a_list_of_prompts_at_the_call(client, emulator, prompts):
    before = sum(emulator.stats()["requests"].values())
    with pytest.raises(InvalidRequestError, match="prompts"):
        client.tokens.map(prompts, model=MODEL, max_tokens=4)
    assert sum(emulator.stats()["requests"].values()) == before


@pytest.mark.parametrize("requests", [5, None, "abc", {"input": "x"}])
def test_responses_map_refuses_what_is_not_a_list_of_requests_at_the_call(client, requests):
    with pytest.raises(InvalidRequestError, match="requests"):
        client.responses.map(requests, model=MODEL)


@pytest.mark.parametrize(
    "bad",
    [
        dict(max_tokens=0),
        dict(temperature=5),
        dict(top_p="x"),
        dict(completion_window="asap"),
        dict(stop=[""]),
        dict(model=""),
        dict(metadata=5),
        dict(options="x"),
        dict(progress=5),
        dict(deadline=-1),
    ],
)
def test_tokens_map_checks_its_shared_arguments_at_the_call(client, bad):
    arguments = dict(model=MODEL, max_tokens=4)
    arguments.update(bad)
    with pytest.raises(InvalidRequestError):
        client.tokens.map([[1, 2]], **arguments)


@pytest.mark.parametrize(
    "bad",
    [
        dict(max_output_tokens=0),
        dict(temperature=5),
        dict(model=""),
        dict(stop=[""]),
        dict(include="x"),
        dict(progress=5),
    ],
)
def test_responses_map_checks_its_shared_arguments_at_the_call(client, bad):
    arguments = dict(model=MODEL)
    arguments.update(bad)
    with pytest.raises(InvalidRequestError):
        client.responses.map(["hi"], **arguments)


def test_a_map_whose_items_bring_the_model_is_still_fine(client):
    prompts = [{"prompt_tokens": [1, 2], "model": MODEL, "max_tokens": 3}]
    assert [len(r.tokens) <= 3 for r in client.tokens.map(prompts)] == [True]
    assert [r.status for r in client.responses.map([{"input": "hi", "model": MODEL}])] == [
        "completed"
    ]
