"""Shared fixtures: one emulator per session, reset before each test, and fast clients."""
from __future__ import annotations

import compileall
import os
import random
import shutil
import sys
import tempfile

import pytest

from sail_lite import Client, PollPolicy, RetryPolicy

FAST_POLL = PollPolicy(initial_interval=0.01, multiplier=1.5, default_max_interval=0.05,
                       max_interval={"asap": 0.05, "balanced": 0.05, "standard": 0.05, "flex": 0.05})
FAST_RETRY = RetryPolicy(initial_delay=0.01, max_delay=0.05)


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def pytest_configure(config):
    """Compile the package once per session into a private bytecode cache every process reads.

    With PYTHONDONTWRITEBYTECODE=1 (CI sets it, and so do many containers) every Python process the
    suite starts (the xdist workers and about forty subprocesses: CLI, emulator, crash-test workers)
    would compile sail_lite from source again, about 0.1-0.3 s of CPU each. The cache lives in a
    temporary directory, never in the checkout, and goes away with the session.
    """
    if hasattr(config, "workerinput") or not sys.dont_write_bytecode or os.environ.get("PYTHONPYCACHEPREFIX"):
        return
    prefix = tempfile.mkdtemp(prefix="sail-lite-pycache-")
    sys.pycache_prefix = prefix
    for folder in ("sail_lite", "tests"):
        compileall.compile_dir(os.path.join(ROOT, folder), quiet=2, workers=1)
    os.environ["PYTHONPYCACHEPREFIX"] = prefix  # inherited by the workers and every subprocess
    config.sail_pycache = prefix


def pytest_unconfigure(config):
    prefix = getattr(config, "sail_pycache", None)
    if prefix:
        os.environ.pop("PYTHONPYCACHEPREFIX", None)
        sys.pycache_prefix = None
        shutil.rmtree(prefix, ignore_errors=True)


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


def make_client(server, **overrides) -> Client:
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
