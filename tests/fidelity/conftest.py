"""The fidelity tier: SDKs no one here wrote (openai, anthropic, sail) drive the emulator unmodified.

Skipped when an SDK is not installed, unless ``SAIL_REQUIRE_FIDELITY=1``
(CI sets it), which turns a missing SDK into a failure instead of a skip.
"""

from __future__ import annotations

import importlib
import os
import time

import pytest


def pytest_collection_modifyitems(items):
    here = os.path.dirname(__file__)
    for item in items:
        if str(item.fspath).startswith(here):
            item.add_marker(pytest.mark.fidelity)


def require(module: str, package: str):
    """Import ``module`` or skip (fail when SAIL_REQUIRE_FIDELITY=1) naming the package to install."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        reason = f"{package} is not installed ({exc}): pip install {package}"
        if os.environ.get("SAIL_REQUIRE_FIDELITY") == "1":
            pytest.fail(reason)
        pytest.skip(reason)


def poll(fetch, response_id, *, timeout=10.0):
    """Retrieve with ``fetch`` until the response leaves queued/in_progress."""
    deadline = time.monotonic() + timeout
    while True:
        response = fetch(response_id)
        status = response["status"] if isinstance(response, dict) else response.status
        if status not in ("queued", "in_progress"):
            return response
        assert time.monotonic() < deadline, (
            f"response {response_id} still {status} after {timeout}s"
        )
        time.sleep(0.01)
