"""Tinker is optional: sail_lite imports and works without tinker, tinker-cookbook or torch.

The checkpoint URL helpers are exercised here against stand-ins shaped like
tinker's RestClient (0.33 has ``get_checkpoint_archive_url_from_tinker_path``;
0.36+ removed it), so they are tested on every Python, Tinker installed or not.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
from concurrent.futures import Future

import pytest

from sail_lite import ConfigurationError, InvalidRequestError
from sail_lite.tinker import (
    get_tinker_checkpoint_signed_url,
    get_tinker_checkpoint_signed_url_async,
)

BLOCK_TINKER = textwrap.dedent("""
    import sys
    class Block:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in ("tinker", "tinker_cookbook", "torch"):
                raise ImportError("blocked for this test: " + name)
    sys.meta_path.insert(0, Block())
""")


def run_without_tinker(code: str) -> str:
    result = subprocess.run(
        [sys.executable, "-c", BLOCK_TINKER + textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_without_tinker_packages_nothing_imports_tinker_and_everything_but_the_completer_works():
    # One interpreter for both checks (each costs a fresh one): the imports first, then the use.
    out = run_without_tinker("""
        import sail_lite, sail_lite.client, sail_lite.resources
        print("IMPORTED", sorted(m for m in sys.modules if m.startswith("sail_lite")))
        import sail_lite.emulator, sail_lite.cli, sail_lite.adapters
        from sail_lite import Client, SailTokenCompleter, get_tinker_checkpoint_signed_url
        from sail_lite.emulator import EmulatorServer
        with EmulatorServer() as server, Client(server.api_key, base_url=server.base_url, environ={}) as client:
            sampled = client.tokens.sample([1, 2, 3], model="moonshotai/Kimi-K2.6", max_tokens=4,
                                           completion_window="flex")
            assert len(sampled.tokens) == len(sampled.logprobs) >= 1
            try:
                SailTokenCompleter(model="moonshotai/Kimi-K2.6", max_tokens=4, client=client)
            except sail_lite.ConfigurationError as exc:
                print("ERROR", exc)
        print("LOADED", sorted(m for m in ("tinker", "tinker_cookbook", "torch") if m in sys.modules))
    """)
    imported = out.split("IMPORTED ", 1)[1].splitlines()[0]
    assert "sail_lite.tinker" not in imported and "sail_lite.emulator" not in imported
    assert "LOADED []" in out
    error = out.split("ERROR ", 1)[1]
    assert "sail_lite[tinker]" in error and "tinker-cookbook" in error
    assert "client.tokens.sample" in error  # and what to use instead


class StandIn:
    """A tinker ServiceClient whose RestClient has (or lacks) the 0.33 checkpoint methods."""

    def __init__(
        self, result="https://storage.example/ckpt.tar?sig=secret&exp=1", *, has_archive=True
    ):
        self.calls = []
        self.result = result
        self.has_archive = has_archive

    def create_rest_client(self):
        outer = self

        class Rest:
            def set_checkpoint_ttl_from_tinker_path(self, path, ttl):
                outer.calls.append(("ttl", path, ttl))
                return done(None)

            async def set_checkpoint_ttl_from_tinker_path_async(self, path, ttl):
                outer.calls.append(("ttl_async", path, ttl))

        if self.has_archive:

            def get_url(self, path):
                outer.calls.append(("url", path))
                return done(outer.result)

            async def get_url_async(self, path):
                outer.calls.append(("url_async", path))
                return outer.result

            Rest.get_checkpoint_archive_url_from_tinker_path = get_url
            Rest.get_checkpoint_archive_url_from_tinker_path_async = get_url_async
        return Rest()


def done(value):
    future = Future()
    future.set_result(value)
    return future


PATH = "tinker://run-1/sampler_weights/step-7"


def test_sync_sets_the_ttl_first_then_resolves_the_url():
    service = StandIn()
    url = get_tinker_checkpoint_signed_url(service, PATH, ttl_seconds=3600)
    assert url == service.result
    assert service.calls == [("ttl", PATH, 3600), ("url", PATH)]


def test_async_uses_the_async_methods_in_the_same_order():
    service = StandIn()
    url = asyncio.run(get_tinker_checkpoint_signed_url_async(service, PATH, ttl_seconds=7200))
    assert url == service.result
    assert service.calls == [("ttl_async", PATH, 7200), ("url_async", PATH)]


def test_no_ttl_means_no_ttl_call():
    service = StandIn()
    get_tinker_checkpoint_signed_url(service, PATH)
    assert service.calls == [("url", PATH)]


class WithUrl:
    url = "https://storage.example/a.tar?sig=1"


@pytest.mark.parametrize(
    "result",
    [
        "https://storage.example/a.tar?sig=1",
        {"url": "https://storage.example/a.tar?sig=1"},
        WithUrl(),
    ],
)
def test_the_url_may_be_a_string_a_dict_or_an_object(result):
    assert (
        get_tinker_checkpoint_signed_url(StandIn(result), PATH)
        == "https://storage.example/a.tar?sig=1"
    )
    assert (
        asyncio.run(get_tinker_checkpoint_signed_url_async(StandIn(result), PATH))
        == "https://storage.example/a.tar?sig=1"
    )


def test_a_tinker_without_the_archive_method_names_the_version_and_the_fix():
    service = StandIn(has_archive=False)
    for call in (
        lambda: get_tinker_checkpoint_signed_url(service, PATH, ttl_seconds=3600),
        lambda: asyncio.run(
            get_tinker_checkpoint_signed_url_async(service, PATH, ttl_seconds=3600)
        ),
    ):
        with pytest.raises(ConfigurationError) as info:
            call()
        message = str(info.value)
        assert "get_checkpoint_archive_url_from_tinker_path" in message
        assert "tinker " in message and "0.36" in message and "tinker_lora_signed_url" in message
    assert service.calls == []  # the TTL is not touched when the URL cannot be resolved


def test_bad_arguments_and_a_missing_url_are_typed_errors_without_the_query():
    with pytest.raises(InvalidRequestError, match="tinker://"):
        get_tinker_checkpoint_signed_url(StandIn(), "run-1/step")
    with pytest.raises(InvalidRequestError, match="ServiceClient"):
        get_tinker_checkpoint_signed_url(object(), PATH)
    with pytest.raises(InvalidRequestError, match="ttl_seconds"):
        get_tinker_checkpoint_signed_url(StandIn(), PATH, ttl_seconds=0)
    with pytest.raises(ConfigurationError, match="no signed archive URL") as info:
        get_tinker_checkpoint_signed_url(StandIn({"path": "x"}), PATH)
    assert "sig=" not in str(info.value)
