"""The Tinker tier: SailTokenCompleter with the real tinker and tinker-cookbook, against the emulator.

Skipped when tinker-cookbook is not importable, unless ``SAIL_REQUIRE_TINKER=1``
(CI's Tinker tier sets it), which makes a missing package a failure.
"""

from __future__ import annotations

import os
import sys
import time

import pytest

try:
    import tinker  # noqa: F401
    import tinker_cookbook  # noqa: F401

    MISSING = None
except ImportError as exc:  # pragma: no cover - depends on the environment
    MISSING = f"tinker-cookbook is not installed ({exc}): pip install 'sail_lite[tinker]'"


def pytest_collection_modifyitems(config, items):
    here = os.path.dirname(__file__)
    for item in items:
        if str(item.fspath).startswith(here):
            item.add_marker(pytest.mark.tinker)


if MISSING is not None and os.environ.get("SAIL_REQUIRE_TINKER") == "1":  # pragma: no cover
    raise pytest.UsageError("SAIL_REQUIRE_TINKER=1 but " + MISSING)


class ByteTokenizer:
    """The emulator's vocabulary as a tokenizer: one token per byte, EOS = 256. No download."""

    eos_token_id = 256
    bos_token = None
    bos_token_id = None
    name_or_path = "sail-emulator/bytes"

    def encode(self, text, add_special_tokens=True):
        return list(text.encode("utf-8"))

    def decode(self, tokens, **kwargs):
        return bytes(t for t in tokens if t < 256).decode("utf-8", errors="replace")


@pytest.fixture
def tokenizer():
    return ByteTokenizer()


def wait_for(condition, timeout=5.0):
    """Poll ``condition`` until it holds; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"condition not met in {timeout} s"
        time.sleep(0.01)


@pytest.fixture
def cookbook(monkeypatch):
    """tinker-cookbook's ``completers`` module: the real one, or (without it) the stand-in for this test.

    The stand-in goes into ``sys.modules`` for the test only, so the completer's
    sync, async and map paths run in the default test run, tinker absent.
    """
    from ..tinker_standin import cookbook_completers

    completers, modules = cookbook_completers()
    for name, module in modules.items():
        monkeypatch.setitem(sys.modules, name, module)
    return completers
