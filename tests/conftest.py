"""Shared fixtures: one emulator per session, reset before each test, and fast clients.

The tests import the sail_lite that is installed (src layout); a session stops at once if that is not
this checkout's code (an install older than the source, or another project's).
"""
from __future__ import annotations

import atexit
import filecmp
import importlib.util
import os
import random
import sys
from typing import TYPE_CHECKING

import pytest

from sail_lite import PollPolicy, RetryPolicy

if TYPE_CHECKING:
    from sail_lite import Client

FAST_POLL = PollPolicy(initial_interval=0.01, multiplier=1.5, default_max_interval=0.05,
                       max_interval={"asap": 0.05, "balanced": 0.05, "standard": 0.05, "flex": 0.05})
FAST_RETRY = RetryPolicy(initial_delay=0.01, max_delay=0.05)


def pytest_configure(config):
    if hasattr(config, "workerinput"):  # an xdist worker; the check below runs once, where they start
        atexit.register(_skip_interpreter_teardown, os.getpid())
        return
    source = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "src", "sail_lite")
    spec = importlib.util.find_spec("sail_lite")
    if spec is None or spec.origin is None:
        pytest.exit('sail_lite is not installed: python3 -m pip install -e ".[test]"', returncode=4)
    installed = os.path.dirname(spec.origin)
    stale = [] if os.path.samefile(source, installed) else _differing(source, installed)
    if stale:
        pytest.exit('the installed sail_lite ({}) is not this checkout\'s src/sail_lite (not the same: {}{}); '
                    'install it again, editable so that edits are seen at once: python3 -m pip install -e ".[test]"'
                    .format(installed, ", ".join(stale[:3]), " and {} more".format(len(stale) - 3)
                            if len(stale) > 3 else ""), returncode=4)


def _skip_interpreter_teardown(worker_pid: int) -> None:
    """End an xdist worker without the interpreter's teardown.

    By the time a worker exits it has sent every result, and tearing the interpreter down (freeing each
    of its objects in turn) takes 0.3 to 1 s, which the whole run waits for. Registered when the worker
    is configured, this runs after every exit handler the tests registered (multiprocessing's, weakref
    finalizers), and skips only those of the modules pytest loaded before (logging's flush). A process
    forked from the worker exits as it would have.
    """
    if os.getpid() != worker_pid:
        return
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def _differing(source: str, installed: str) -> list:
    """The .py files (relative paths) whose installed copy is missing or not byte-for-byte the same."""
    found = []
    for folder, _, names in os.walk(source):
        for name in sorted(names):
            if name.endswith(".py"):
                path = os.path.join(folder, name)
                relative = os.path.relpath(path, source)
                copy = os.path.join(installed, relative)
                if not (os.path.exists(copy) and filecmp.cmp(path, copy, shallow=False)):
                    found.append(relative)
    return found


@pytest.fixture(scope="session")
def emulator_server():
    from sail_lite.emulator import EmulatorServer

    with EmulatorServer(seed=0) as server:
        yield server


@pytest.fixture
def emulator(emulator_server):
    emulator_server.reset()
    yield emulator_server
    emulator_server.faults.clear()


def make_client(server, **overrides) -> "Client":
    from sail_lite import Client  # here, not at the top: the process that only starts the workers never needs it

    options = dict(
        api_key=server.api_key,
        base_url=server.base_url,
        poll=FAST_POLL,
        retry=FAST_RETRY,
        rng=random.Random(0),
        environ={},
    )
    options.update(overrides)
    return Client(**options)


@pytest.fixture
def client(emulator):
    with make_client(emulator) as c:
        yield c
