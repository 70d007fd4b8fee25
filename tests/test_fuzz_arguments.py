"""Hostile arguments, fuzzed: only our typed errors come out, and invalid input sends nothing.

Every public resource method of ``Client``, ``Client(...)`` itself,
``RetryPolicy``, ``PollPolicy``, ``Timeout`` and
``validate_sampling_options`` get wrong types, NaN, infinities, negative and
huge numbers, empty values, bytes, plain objects, lone surrogates, nested
and too-deeply-nested structures, non-latin-1 and multi-line strings, one-shot
iterators and ``None`` where a value is required.

The oracle, per call (a fresh client each time, against a private emulator
that counts requests and connections):

- success, or a typed error; never a bare ``TypeError``/``ValueError``/
  ``RecursionError``/...;
- ``InvalidRequestError`` / ``ConfigurationError``: the emulator saw no
  request and no connection;
- the emulator is healthy, so a connection error that is not a timeout means
  the client sent something it should have refused: a failure.

Deterministic (``derandomize=True``) and small (a few seconds in all).
"""

from __future__ import annotations

import concurrent.futures
import inspect
import io
import math
import os
import random
from decimal import Decimal
from typing import Any, Callable, Dict, List, Tuple

import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, example, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from sail_lite import Client, PollPolicy, RetryPolicy, Timeout, validate_sampling_options  # noqa: E402
from sail_lite.errors import (  # noqa: E402
    APIConnectionError,
    APIStatusError,
    APITimeoutError,
    ConfigurationError,
    ConflictError,
    DeadlineExceededError,
    InvalidRequestError,
    LoRAValidationError,
    ResponseFailedError,
    SailError,
)

MODEL = "moonshotai/Kimi-K2.6"
FAST_POLL = PollPolicy(
    initial_interval=0.005,
    multiplier=1.5,
    default_max_interval=0.02,
    max_interval={"asap": 0.02, "balanced": 0.02, "standard": 0.02, "flex": 0.02},
)
FAST_RETRY = RetryPolicy(max_retries=1, initial_delay=0.001, max_delay=0.005)
# SAIL_FUZZ_EXAMPLES=500 (and SAIL_FUZZ_RANDOM=1 for fresh seeds) for a deeper local hunt; CI keeps it small
# and deterministic.
FUZZ = settings(
    max_examples=int(os.environ.get("SAIL_FUZZ_EXAMPLES", "15")),
    deadline=None,
    derandomize=not os.environ.get("SAIL_FUZZ_RANDOM"),
    database=None,
    print_blob=False,
    suppress_health_check=list(HealthCheck),
)


# --- hostile values ----------------------------------------------------------------------------------


class Opaque:
    """An arbitrary object: no useful protocol at all."""

    def __repr__(self) -> str:
        return "Opaque()"


class Deep(list):
    """A list nested far past the interpreter's recursion limit (json, repr and copies recurse)."""

    def __init__(self, depth: int = 5000) -> None:
        inner: List[Any] = []
        for _ in range(depth):
            inner = [inner]
        super().__init__(inner)

    def __repr__(
        self,
    ) -> str:  # for hypothesis' report only; the library sees a plain nested list inside
        return "Deep()"


class Closed(io.BytesIO):
    def __init__(self) -> None:
        super().__init__(b"x")
        self.close()

    def __repr__(self) -> str:
        return "Closed()"


ATOMS: List[Any] = [
    None,
    True,
    False,
    0,
    1,
    -1,
    2,
    7,
    2**31,
    2**63,
    -(2**63),
    2**1000,
    -(10**400),
    0.0,
    -0.0,
    0.5,
    -1.5,
    1e-300,
    5e-324,
    1e30,
    1e308,
    math.nan,
    math.inf,
    -math.inf,
    1 + 2j,
    Decimal("0.5"),
    "",
    " ",
    "\t",
    "\n",
    "a\nb",
    "a\r\nX-Injected: 1",
    "\x00",
    "\x7f",
    "\ud800",
    "a\udfffb",
    "é",
    "☃",
    "日本語",
    "x" * 300,
    "../etc/passwd",
    "a/b",
    "a?b=c",
    "%2F",
    "moonshotai/Kimi-K2.6",
    "asap",
    "flex",
    "standard",
    "priority",
    "http://127.0.0.1:1",
    "https://example.invalid/a?sig=secret",
    b"",
    b"bytes",
    bytearray(b"x"),
    memoryview(b"m"),
    Opaque(),
    [],
    [None],
    [1, 2, 3],
    [-1],
    [2**40],
    ["a", 1],
    ["\ud800"],
    [b"x"],
    [Opaque()],
    [[]],
    [{}],
    [{"role": "user", "content": "\ud800"}],
    [{"role": "user", "content": Opaque()}],
    [{"role": 5}],
    [{"custom_id": "a", "params": {"model": MODEL, "input": "\ud800"}}],
    {},
    {1: 2},
    {None: "v"},
    {"k": None},
    {"k": Opaque()},
    {"k": "\ud800"},
    {"\ud800": "v"},
    {"k": math.nan},
    {"k": b"x"},
    {"k": {"n": {1: 2}}},
    {"Content-Length": "99999"},
    {"Host": "evil"},
    {"X-A": "a\nb"},
    {"X-A": 5},
    {"é": "v"},
    {"a b": "v"},
    {"a:b": "v"},
    {"": "v"},
    {"model": 5},
    {"input": Opaque()},
    ("a",),
    {"a"},
    frozenset(),
    range(3),
    Deep(),
    {"a": Deep()},
    io.StringIO("text"),
]
# A closed file is hostile only where a file is expected: anywhere else iterating it raises the file's own
# ValueError, which (like any error a caller's object raises from its own protocol) propagates as Python's would.
FILE_ATOMS = [Closed(), io.BytesIO(b""), "/no/such/file", "/", "\x00"]


def _fresh() -> st.SearchStrategy[Any]:
    # Values that must not be shared between examples (one-shot iterators, file objects).
    return st.sampled_from(
        [
            lambda: iter(["a", "b"]),
            lambda: iter([1, 2]),
            lambda: (x for x in [{"role": "user", "content": "hi"}]),
            lambda: io.BytesIO(b"abc"),
            lambda: io.StringIO("abc"),
        ]
    ).map(lambda make: make())


TEXT = st.text(max_size=12)
NESTED = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | TEXT | st.binary(max_size=4),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(TEXT | st.integers(), children, max_size=3)
    ),
    max_leaves=8,
)
HOSTILE = st.one_of(
    st.sampled_from(ATOMS),
    st.sampled_from(ATOMS),
    st.integers(),
    st.floats(),
    TEXT,
    st.binary(max_size=8),
    NESTED,
    _fresh(),
)
HOSTILE_FILE = st.one_of(HOSTILE, st.sampled_from(FILE_ATOMS))


def hostile(name: str) -> st.SearchStrategy[Any]:
    return HOSTILE_FILE if name in ("file", "adapter_dir") else HOSTILE


def hostile_kwargs(
    names: List[str], max_size: int, value: Callable[[str], st.SearchStrategy[Any]] = hostile
) -> st.SearchStrategy[Dict[str, Any]]:
    """One to ``max_size`` of ``names``, each with a hostile value.

    One strategy drawn whole (rather than ``st.data()`` drawn step by step) costs hypothesis half the time
    per example, and its report still names each argument and value.
    """
    chosen = st.lists(
        st.sampled_from(names), min_size=1, max_size=min(max_size, len(names)), unique=True
    )
    return chosen.flatmap(
        lambda picked: st.fixed_dictionaries({name: value(name) for name in picked})
    )


# --- the emulator and the objects the calls refer to ---------------------------------------------------------


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A private emulator with instant turns, and a few real objects (response, LoRAs, batch, files)."""
    from sail_lite.adapters import make_adapter
    from sail_lite.emulator import EmulatorServer

    folder = tmp_path_factory.mktemp("fuzz")
    server = EmulatorServer(
        seed=0,
        turn_times={"asap": 0.0, "priority": 0.0, "standard": 0.0, "flex": 0.0},
        validation_time=0.0,
    )
    with server:
        adapter = make_adapter(folder / "adapter")
        small = folder / "small.bin"
        small.write_bytes(b"sail-lite fuzz")
        with client_for(server) as client:
            response = client.responses.create(model=MODEL, input="hi", max_output_tokens=4)
            for name in ("fuzz-wait", "fuzz-update"):
                client.loras.upload(adapter, name=name, supported_models=[MODEL])
            config = client.files.create(folder / "adapter" / "adapter_config.json")
            weights = client.files.create(folder / "adapter" / "adapter_model.safetensors")
            batch = client.batches.create(
                [
                    {
                        "custom_id": "one",
                        "params": {"model": MODEL, "input": "hi", "max_output_tokens": 4},
                    }
                ],
                completion_window="standard",
            )
            client.batches.wait(batch.id, deadline=30)
        yield dict(
            server=server,
            response_id=response.id,
            adapter=adapter,
            small=str(small),
            config_id=config.id,
            weights_id=weights.id,
            batch_id=batch.id,
        )


def client_for(server, **overrides: Any) -> Client:
    options: Dict[str, Any] = dict(
        api_key=server.api_key,
        base_url=server.base_url,
        poll=FAST_POLL,
        retry=FAST_RETRY,
        rng=random.Random(0),
        environ={},
    )
    options.update(overrides)
    return Client(**options)


def settle(server) -> None:
    """Wait (bounded) until the emulator has finished every request already on the wire.

    A call that timed out on our side may leave its request still being read by the server, which would
    count it during the next example.
    """
    import time

    previous = None
    for _ in range(250):
        current = traffic(server)
        if current == previous and not getattr(server, "_sockets", ()):
            return
        previous = current
        time.sleep(0.02)


def traffic(server) -> Tuple[int, int]:
    """(requests routed, connections opened) so far: a request the stdlib rejects still opens a connection."""
    stats = server.stats()
    return sum(stats["requests"].values()), stats["connections"]


# --- the public call signatures ----------------------------------------------------------------------------

# label -> (the bound method, from a client; the valid baseline arguments, from the world)
Call = Tuple[Callable[[Client], Callable[..., Any]], Callable[[Dict[str, Any]], Dict[str, Any]]]
RAW = [1, 2, 3]
CALLS: Dict[str, Call] = {
    "responses.create": (
        lambda c: c.responses.create,
        lambda w: dict(model=MODEL, input="hi", max_output_tokens=4),
    ),
    "responses.submit": (
        lambda c: c.responses.submit,
        lambda w: dict(model=MODEL, input="hi", max_output_tokens=4),
    ),
    "responses.retrieve": (
        lambda c: c.responses.retrieve,
        lambda w: dict(response_id=w["response_id"]),
    ),
    "responses.cancel": (
        lambda c: c.responses.cancel,
        lambda w: dict(response_id=w["response_id"]),
    ),
    "responses.wait": (lambda c: c.responses.wait, lambda w: dict(response_id=w["response_id"])),
    "responses.attach": (
        lambda c: c.responses.attach,
        lambda w: dict(response_id=w["response_id"]),
    ),
    "tokens.sample": (
        lambda c: c.tokens.sample,
        lambda w: dict(prompt_tokens=RAW, model=MODEL, max_tokens=4),
    ),
    "tokens.submit": (
        lambda c: c.tokens.submit,
        lambda w: dict(prompt_tokens=RAW, model=MODEL, max_tokens=4),
    ),
    "tokens.attach": (lambda c: c.tokens.attach, lambda w: dict(response_id=w["response_id"])),
    # The maps check their own arguments when called; each item is checked (and fails in its place) as it is read.
    "tokens.map": (
        lambda c: c.tokens.map,
        lambda w: dict(prompts=[RAW], model=MODEL, max_tokens=4),
    ),
    "responses.map": (
        lambda c: c.responses.map,
        lambda w: dict(requests=["hi"], model=MODEL, max_output_tokens=4),
    ),
    "chat.completions.create": (
        lambda c: c.chat.completions.create,
        lambda w: dict(
            model=MODEL, messages=[{"role": "user", "content": "hi"}], max_completion_tokens=4
        ),
    ),
    "messages.create": (
        lambda c: c.messages.create,
        lambda w: dict(model=MODEL, max_tokens=4, messages=[{"role": "user", "content": "hi"}]),
    ),
    "messages.count_tokens": (
        lambda c: c.messages.count_tokens,
        lambda w: dict(model=MODEL, messages=[{"role": "user", "content": "hi"}]),
    ),
    "files.create": (lambda c: c.files.create, lambda w: dict(file=w["small"])),
    "loras.create": (
        lambda c: c.loras.create,
        lambda w: dict(
            name="fuzz-create",
            supported_models=[MODEL],
            config_file_id=w["config_id"],
            weights_file_id=w["weights_id"],
        ),
    ),
    "loras.retrieve": (lambda c: c.loras.retrieve, lambda w: dict(name_or_id="fuzz-wait")),
    "loras.list": (lambda c: c.loras.list, lambda w: {}),
    "loras.update": (lambda c: c.loras.update, lambda w: dict(name="fuzz-update", description="d")),
    "loras.upload": (
        lambda c: c.loras.upload,
        lambda w: dict(adapter_dir=w["adapter"], name="fuzz-upload", supported_models=[MODEL]),
    ),
    "loras.wait_for_validation": (
        lambda c: c.loras.wait_for_validation,
        lambda w: dict(name="fuzz-wait", model=MODEL),
    ),
    "batches.create": (
        lambda c: c.batches.create,
        lambda w: dict(
            requests=[
                {
                    "custom_id": "a",
                    "params": {"model": MODEL, "input": "hi", "max_output_tokens": 4},
                }
            ]
        ),
    ),
    "batches.retrieve": (lambda c: c.batches.retrieve, lambda w: dict(batch_id=w["batch_id"])),
    "batches.list": (lambda c: c.batches.list, lambda w: {}),
    "batches.result": (
        lambda c: c.batches.result,
        lambda w: dict(batch_id=w["batch_id"], custom_id="one"),
    ),
    "batches.wait": (lambda c: c.batches.wait, lambda w: dict(batch_id=w["batch_id"])),
    "models.list": (lambda c: c.models.list, lambda w: {}),
}
RESOURCES = (
    "responses",
    "tokens",
    "chat.completions",
    "messages",
    "files",
    "loras",
    "batches",
    "models",
)


def public_methods(client: Client) -> List[str]:
    found = []
    for resource in RESOURCES:
        target: Any = client
        for part in resource.split("."):
            target = getattr(target, part)
        found += [
            f"{resource}.{name}"
            for name, member in inspect.getmembers(target, inspect.ismethod)
            if not name.startswith("_")
        ]
    return sorted(found)


def parameters(method: Callable[..., Any]) -> List[str]:
    signature = inspect.signature(method)
    names = [
        p.name
        for p in signature.parameters.values()
        if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)
    ]
    if any(p.kind == p.VAR_KEYWORD for p in signature.parameters.values()):
        names += [
            n for n in parameters(method.__self__.submit) if n not in names
        ]  # tokens.sample(**submit's)
    return names


def invoke(method: Callable[..., Any], kwargs: Dict[str, Any]) -> Any:
    """Call with the first parameter positional (as users do) when it is positional-or-keyword."""
    first = next(iter(inspect.signature(method).parameters.values()))
    kwargs = dict(kwargs)
    if first.kind == first.POSITIONAL_OR_KEYWORD and first.name in kwargs:
        return method(kwargs.pop(first.name), **kwargs)
    return method(**kwargs)


# Errors a healthy server may legitimately produce for well-formed but unusual input.
SERVER_SIDE = (APIStatusError, ResponseFailedError, LoRAValidationError)
TIMING = (APITimeoutError, DeadlineExceededError)


def check_outcome(
    server,
    action: Callable[[], Any],
    *,
    sent_ok: Callable[[BaseException], bool] = lambda e: False,
    connection_ok: bool = False,
    timing_ok: bool = False,
) -> str:
    """Run ``action`` and apply the oracle; returns the outcome's name (for the distribution checks)."""
    before = traffic(server)
    try:
        result = action()
        if isinstance(result, concurrent.futures.Future):
            result = result.result(timeout=60)
    except (InvalidRequestError, ConfigurationError) as exc:
        if not sent_ok(exc):
            assert traffic(server) == before, (
                f"sent a request for invalid input, then raised {exc!r}"
            )
        return "refused"
    except SERVER_SIDE as exc:
        if isinstance(exc, APIStatusError):
            assert exc.code not in ("invalid_json", "invalid_http"), (
                f"the client sent a malformed request: {exc}"
            )
        return "server"
    except TIMING as exc:
        # Only a tiny timeout or deadline may time out against this instant emulator; otherwise the
        # client sent something that left the server waiting (a lying Content-Length, say).
        if not timing_ok:
            raise AssertionError(f"timed out against an instant server: {exc!r}")  # noqa: B904
        settle(server)
        return "server"
    except APIConnectionError as exc:
        if connection_ok:
            return "server"
        raise AssertionError(  # noqa: B904
            f"a healthy server, yet {exc!r}: the client sent what it should have refused"
        )
    except SailError:
        return "server"
    return "ok"


@pytest.mark.parametrize("label", sorted(CALLS))
def test_hostile_call_arguments_get_typed_errors_and_send_nothing(world, label):
    server = world["server"]
    getter, baseline = CALLS[label]
    with client_for(server) as probe:
        names = parameters(getter(probe))
    outcomes: List[str] = []

    @FUZZ
    @given(fuzzed=hostile_kwargs(names, 3))
    def fuzz(fuzzed: Dict[str, Any]) -> None:
        kwargs = dict(baseline(world), **fuzzed)
        if label == "loras.wait_for_validation" and isinstance(kwargs.get("model"), str):
            # A model id can only be checked against the LoRA once it is fetched.
            sent_ok: Callable[[BaseException], bool] = lambda exc: "does not list" in str(exc)  # noqa: E731
        else:
            sent_ok = lambda exc: False  # noqa: E731
        with client_for(server) as client:
            outcomes.append(
                check_outcome(
                    server,
                    lambda: invoke(getter(client), kwargs),
                    sent_ok=sent_ok,
                    timing_ok=bool({"timeout", "deadline"} & set(fuzzed)),
                )
            )

    fuzz()
    assert "refused" in outcomes  # the fuzzer did reach the checks


def test_every_public_method_is_fuzzed(world):
    with client_for(world["server"]) as client:
        assert public_methods(client) == sorted(CALLS)


# --- configuration -------------------------------------------------------------------------------------------


def test_hostile_client_settings_are_configuration_errors(world):
    server = world["server"]
    names = [n for n in inspect.signature(Client).parameters]
    outcomes: List[str] = []

    environ = st.one_of(
        HOSTILE,
        st.dictionaries(
            st.sampled_from(
                [
                    "SAIL_API_KEY",
                    "SAIL_BASE_URL",
                    "SAIL_API_URL",
                    "SAIL_LOG",
                    "HTTP_PROXY",
                    "NO_PROXY",
                    "REQUESTS_CA_BUNDLE",
                    "SSL_CERT_FILE",
                ]
            ),
            HOSTILE,
            max_size=3,
        ),
    )

    @FUZZ
    @given(fuzzed=hostile_kwargs(names, 2, lambda name: environ if name == "environ" else HOSTILE))
    @example(
        fuzzed={}
    )  # the derandomized draw depends on the test's source: always one sane client
    def fuzz(fuzzed: Dict[str, Any]) -> None:
        settings_ = dict(
            api_key=server.api_key,
            base_url=server.base_url,
            poll=FAST_POLL,
            retry=FAST_RETRY,
            environ={},
        )
        settings_.update(fuzzed)
        try:
            client = Client(**settings_)
        except ConfigurationError:
            outcomes.append("refused")
            return
        # Accepted settings must make a working client (or fail a call with a typed error).
        with client:
            outcomes.append(
                check_outcome(
                    server,
                    lambda: client.models.list(deadline=10),
                    connection_ok=True,
                    timing_ok=True,
                )
            )

    fuzz()
    assert "refused" in outcomes and "ok" in outcomes


@pytest.mark.parametrize("cls", [RetryPolicy, PollPolicy, Timeout])
def test_hostile_policy_fields_are_configuration_errors(cls):
    names = list(inspect.signature(cls).parameters)

    @FUZZ
    @given(fields=hostile_kwargs(names, 2, lambda name: HOSTILE))
    def fuzz(fields: Dict[str, Any]) -> None:
        try:
            policy = cls(**fields)
        except ConfigurationError:
            return
        # An accepted policy must compute, for any attempt, without an untyped error.
        rng = random.Random(0)
        if isinstance(policy, RetryPolicy):
            for index in (0, 1, 5, 64, 10**6):
                delay = policy.backoff(index, rng)
                assert 0.0 <= delay <= policy.max_delay
            policy.delay(0, 1.0, rng)
        elif isinstance(policy, PollPolicy):
            previous = None
            for window in (None, "balanced", "flex", "unknown"):
                for _ in range(5):
                    interval, previous = policy.next_interval(previous, window, rng)
                    assert interval >= 0 and not math.isnan(interval)
        else:
            assert all(
                0 < getattr(policy, n) < math.inf
                for n in ("connect", "read", "inference", "upload")
            )

    fuzz()


def test_hostile_sampling_options_are_invalid_request_errors():
    names = [n for n in inspect.signature(validate_sampling_options).parameters]
    base = dict(model=MODEL, max_tokens=4)

    @FUZZ
    @given(fuzzed=hostile_kwargs(names, 3, lambda name: HOSTILE))
    def fuzz(fuzzed: Dict[str, Any]) -> None:
        kwargs = dict(base, **fuzzed)
        try:
            options = validate_sampling_options(**kwargs)
            options.body(
                RAW, stop=None
            )  # accepted options must build a body, or refuse with a typed error
        except InvalidRequestError:
            pass

    fuzz()


# --- pinned cases ---------------------------------------------------------------------------------------------


def test_a_non_string_api_key_is_a_configuration_error():
    with pytest.raises(ConfigurationError, match="API key must be a string"):
        Client(api_key=5, environ={})


@pytest.mark.parametrize(
    "key",
    ["sk_live_secret\nX-Evil: 1", "sk_live_sec\rret", "sk_live_\x00secret", "sk_\u2603_secret"],
)
def test_an_api_key_that_cannot_be_a_header_is_refused_without_echoing_it(key):
    with pytest.raises(ConfigurationError) as caught:
        Client(api_key=key, environ={})
    text = str(caught.value) + repr(caught.value) + repr(caught.value.args)
    assert "secret" not in text and key not in text
    assert "API key" in text


def test_upload_of_no_folder_is_an_invalid_request(world):
    server = world["server"]
    with client_for(server) as client:
        before = traffic(server)
        with pytest.raises(InvalidRequestError, match="adapter_dir"):
            client.loras.upload(None, name="fuzz-none", supported_models=[MODEL])
        assert traffic(server) == before


@pytest.mark.parametrize(
    "options",
    [
        dict(deadline=math.nan),
        dict(deadline=-1),
        dict(deadline=math.inf),
        dict(deadline=0),
        dict(deadline="5"),
        dict(timeout=-1),
        dict(timeout=math.nan),
        dict(timeout=math.inf),
        dict(timeout=1e30),
        dict(timeout=0),
        dict(timeout=True),
        dict(idempotency_key="a\nb"),
        dict(idempotency_key="\u2603"),
        dict(idempotency_key=""),
        dict(idempotency_key="k" * 256),
        dict(extra_headers={"X-A": "a\r\nb"}),
        dict(extra_headers=["X-A"]),
        dict(extra_headers={"a:b": "v"}),
        dict(extra_headers={"a\u00e9": "v"}),
        dict(extra_headers={"a b": "v"}),
        dict(extra_headers={"Content-Length": "5"}),
        dict(extra_headers={"transfer-encoding": "chunked"}),
        dict(extra_headers={"Host": "elsewhere"}),
        dict(extra_headers={5: "v"}),
    ],
)
def test_bad_per_call_options_are_refused_before_sending(world, options):
    server = world["server"]
    with client_for(server) as client:
        before = traffic(server)
        with pytest.raises(InvalidRequestError):
            client.responses.create(model=MODEL, input="hi", max_output_tokens=4, **options)
        assert traffic(server) == before


def test_valid_unusual_values_still_work(world):
    """The checks are not a blanket refusal: edge-of-range values go through."""
    server = world["server"]
    with client_for(server) as client:
        response = client.responses.create(
            model=MODEL,
            input="é ☃ 日本語\nsecond line",
            max_output_tokens=1,
            temperature=0,
            top_p=1,
            metadata={"n": 1, "nested": {"a": [1, 2]}, "skip": None},
            extra_body={"x_unknown": [1]},
            idempotency_key="k" * 255,
            timeout=1e7,
            deadline=1e7,
            extra_headers={"X-Trace": "caf\xe9"},
            include=iter(["message.output_text.logprobs"]),
        )
        assert response.status == "completed"
        assert (
            client.tokens.sample(range(1, 4), model=MODEL, max_tokens=2, stop=iter([5])).tokens
            is not None
        )


def test_conflict_is_typed(world):
    # Sanity for the oracle: a taken name is a server-side typed error, not a refusal.
    server = world["server"]
    with client_for(server) as client:
        with pytest.raises(ConflictError):
            client.loras.create(
                "fuzz-wait",
                supported_models=[MODEL],
                config_file_id=world["config_id"],
                weights_file_id=world["weights_id"],
            )


# --- each defect the fuzzer found, pinned (the fuzzer's small CI budget may not draw them again) ---------------


def deep(depth: int = 5000) -> List[Any]:
    """A plain list nested past the recursion limit (``repr``, ``json`` and copies of it recurse)."""
    value: List[Any] = []
    for _ in range(depth):
        value = [value]
    return value


FOUND = {
    "batches.create(requests=None)": lambda c, w: c.batches.create(None),
    "batches.create(requests=5)": lambda c, w: c.batches.create(5),
    "batches.wait(on_poll=True)": lambda c, w: c.batches.wait(w["batch_id"], on_poll=True),
    "loras.wait_for_validation(on_poll=1)": lambda c, w: c.loras.wait_for_validation(
        "fuzz-wait", MODEL, on_poll=1
    ),
    "loras.wait_for_validation(model=None)": lambda c, w: c.loras.wait_for_validation(
        "fuzz-wait", None
    ),
    "files.create(progress=True)": lambda c, w: c.files.create(w["small"], progress=True),
    "loras.upload(progress='x')": lambda c, w: c.loras.upload(
        w["adapter"], name="fuzz-progress", supported_models=[MODEL], progress="x"
    ),
    "loras.upload(description=5)": lambda c, w: c.loras.upload(
        w["adapter"], name="fuzz-description", supported_models=[MODEL], description=5
    ),
    "responses.create(include=[deep])": lambda c, w: c.responses.create(
        model=MODEL, input="hi", include=[deep()]
    ),
    "responses.create(stop=deep)": lambda c, w: c.responses.create(
        model=MODEL, input="hi", stop=deep()
    ),
    "responses.create(raw_prompt_tokens=deep)": lambda c, w: c.responses.create(
        model=MODEL, raw_prompt_tokens=deep()
    ),
    "responses.create(model=deep)": lambda c, w: c.responses.create(model=deep(), input="hi"),
    "responses.create(max_output_tokens=deep)": lambda c, w: c.responses.create(
        model=MODEL, input="hi", max_output_tokens=deep()
    ),
    "tokens.sample(metadata={k: deep-in-set})": lambda c, w: c.tokens.sample(
        RAW, model=MODEL, max_tokens=2, metadata={"k": {Opaque()}}
    ),
    "batches.create(custom_id=deep)": lambda c, w: c.batches.create(
        [{"custom_id": deep(), "params": {}}]
    ),
    "loras.create(name=deep)": lambda c, w: c.loras.create(
        deep(), supported_models=[MODEL], config_file_id="a", weights_file_id="b"
    ),
    "models.list(extra_headers={'a:b': ...})": lambda c, w: c.models.list(
        extra_headers={"a:b": "v"}
    ),
    "models.list(extra_headers={'Content-Length': ...})": lambda c, w: c.models.list(
        extra_headers={"Content-Length": "99"}
    ),
}


@pytest.mark.parametrize("label", sorted(FOUND))
def test_found_defects_are_refused_before_sending(world, label):
    server = world["server"]
    with client_for(server) as client:
        before = traffic(server)
        with pytest.raises(InvalidRequestError) as caught:
            FOUND[label](client, world)
        assert traffic(server) == before
    assert len(str(caught.value)) < 600  # a bounded message, whatever the value


@pytest.mark.parametrize(
    "settings_",
    [
        dict(environ=True),
        dict(environ=["SAIL_LOG"]),
        dict(environ={"SAIL_LOG": 5}),
        dict(environ={"HTTP_PROXY": None}),
        dict(sleep=5),
        dict(clock=None),
        dict(rng=5),
        dict(retry=RetryPolicy),
        dict(timeout=math.nan),
        dict(timeout=Timeout),
        dict(max_workers=deep()),
    ],
    ids=lambda s: ",".join(s),
)
def test_found_bad_client_settings_are_configuration_errors(world, settings_):
    server = world["server"]
    with pytest.raises(ConfigurationError):
        client_for(server, **settings_)


@pytest.mark.parametrize(
    "make",
    [
        lambda: RetryPolicy(initial_delay=2**2000),
        lambda: RetryPolicy(max_delay=1e300),
        lambda: RetryPolicy(max_retries=deep()),
        lambda: RetryPolicy(retry_statuses=[deep()]),
        lambda: PollPolicy(initial_interval=None),
        lambda: PollPolicy(initial_interval=0),
        lambda: PollPolicy(multiplier=math.nan),
        lambda: PollPolicy(jitter=1),
        lambda: PollPolicy(max_interval=None),
        lambda: PollPolicy(max_interval={"flex": -1}),
        lambda: PollPolicy(max_consecutive_failures=1.5),
        lambda: PollPolicy(default_max_interval=math.inf),
    ],
)
def test_found_bad_policy_fields_are_configuration_errors(make):
    with pytest.raises(ConfigurationError):
        make()


@pytest.mark.parametrize("multiplier", [65536, 1e7, 2**20])
def test_back_off_never_overflows(multiplier):
    policy = RetryPolicy(multiplier=multiplier, max_delay=3.0)
    rng = random.Random(0)
    assert all(0 <= policy.backoff(index, rng) <= 3.0 for index in (0, 10, 64, 10**9))
    assert RetryPolicy(initial_delay=0, multiplier=multiplier).backoff(64, rng) == 0.0
