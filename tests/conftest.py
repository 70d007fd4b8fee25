"""Shared fixtures: one emulator per session, reset before each test, and fast clients.

``python3 -m pytest`` from the checkout imports the checkout's ``sail_lite`` (the current directory is
first on ``sys.path``), so an edit is seen at once, with or without an install.
"""

from __future__ import annotations

import random
from typing import TYPE_CHECKING

import pytest

from sail_lite import PollPolicy, RetryPolicy

if TYPE_CHECKING:
    from sail_lite import Client

FAST_POLL = PollPolicy(
    initial_interval=0.01,
    multiplier=1.5,
    default_max_interval=0.05,
    max_interval={"asap": 0.05, "balanced": 0.05, "standard": 0.05, "flex": 0.05},
)
FAST_RETRY = RetryPolicy(initial_delay=0.01, max_delay=0.05)


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
    from sail_lite import (
        Client,  # here, not at the top: the process that only starts the workers never needs it
    )

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


def response_for(emulator, prompt):
    """The emulator's record of the response sampled from ``prompt`` (it keeps a digest, not ids)."""
    from sail_lite.emulator.model import prompt_state

    state = emulator.state
    (record,) = [
        r
        for r in list(state.responses.values())
        if r.prompt_state == prompt_state(tuple(prompt), seed=state.seed, model=r.params.model)
    ]
    return record


@pytest.fixture
def client(emulator):
    with make_client(emulator) as c:
        yield c
