"""Ctrl-C in ``SailTokenCompleter.sample_tokens`` cancels its sample on the server (issue 21).

A real SIGINT to a script sampling with the completer against the emulator (see tests/test_interrupt.py
for the same with ``client.tokens``).
"""

from __future__ import annotations

import pytest

from ..test_interrupt import (
    RUNNING,
    assert_ends_with_the_interrupt,
    finish,
    interrupt_in_flight,
    results,
    start_worker,
    statuses,
)
from .conftest import MISSING

pytestmark = pytest.mark.skipif(MISSING is not None, reason=MISSING or "")


@pytest.fixture(scope="module")
def slow_server():
    from sail_lite.emulator import EmulatorServer

    with EmulatorServer(seed=0, turn_times={"balanced": 1.0}) as server:
        yield server


def test_ctrl_c_in_sample_tokens_cancels_the_sample_in_flight(slow_server):
    slow_server.reset()
    process = start_worker(slow_server, "completer")
    lines = []
    interrupt_in_flight(process, slow_server, lines, 2)
    err = finish(process, lines)
    assert_ends_with_the_interrupt(process, err)
    found = statuses(slow_server)
    assert not [rid for rid, status in found.items() if status in RUNNING], err
    # Every completed sample was returned, or is named on stderr.
    completed = [rid for rid, status in found.items() if status == "completed"]
    unnamed = [rid for rid in completed if rid not in err]
    assert len(unnamed) == len(results(lines)), (found, err)
