"""Ctrl-C never leaves a bill behind (issue 21): a real SIGINT to a real script against the emulator.

Each test runs a user's script (tests/_interrupt_worker.py) or the ``sail-lite`` command in its own
process, lets it get some results, sends it SIGINT, and then reads the emulator's state: nothing the
program no longer waits for is left queued or in progress, every response that completed was either
returned to the script or named on stderr, and the process ends with the KeyboardInterrupt (a traceback
ending in sail_lite or the script, not inside concurrent.futures). No timed assertions: the test waits
for events (result lines, request counters), never for a duration.
"""

from __future__ import annotations

import os
import pathlib
import re
import signal
import subprocess
import sys
import time

import pytest

from sail_lite import Journal
from sail_lite.emulator import EmulatorServer, Fault

ROOT = pathlib.Path(__file__).resolve().parent.parent
RUNNING = ("queued", "in_progress")
CANCEL_ROUTE = "POST /v1/responses/{id}/cancel"
CREATE_ROUTE = "POST /v1/responses"
MODEL = "moonshotai/Kimi-K2.6"

pytestmark = pytest.mark.skipif(os.name != "posix", reason="SIGINT to a child process")


@pytest.fixture(scope="module")
def slow_server():
    # Turns of a second: whenever the SIGINT lands, a sample is most likely in flight. Flex turns of a
    # minute: one sample that is surely still running when its cancel arrives, however busy the machine.
    with EmulatorServer(seed=0, turn_times={"balanced": 1.0, "flex": 60.0}) as server:
        yield server


@pytest.fixture
def server(slow_server):
    slow_server.reset()
    yield slow_server
    slow_server.faults.clear()


def _sigint_as_in_a_terminal() -> None:
    # An xdist worker may run with SIGINT ignored, and a child would inherit that.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def start(command):
    return subprocess.Popen(
        command,
        cwd=str(ROOT),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=_sigint_as_in_a_terminal,
    )


def start_worker(server, mode, journal=None):
    command = [sys.executable, "-m", "tests._interrupt_worker", server.base_url, server.api_key]
    return start(command + [mode] + ([str(journal)] if journal else []))


def read_until(process, lines, predicate):
    """Read stdout lines into ``lines`` until ``predicate(lines)``; fail with stderr if it ends first."""
    while not predicate(lines):
        line = process.stdout.readline()
        if not line:
            process.wait()
            pytest.fail(f"the script ended first ({process.returncode}): {process.stderr.read()}")
        lines.append(line.split())


def interrupt_in_flight(process, server, lines, count):
    """SIGINT once the script got ``count`` results and its next create reached the server."""
    read_until(process, lines, lambda seen: len(results(seen)) >= count)
    wait_for(
        lambda: len(statuses(server)) > len(results(lines)) or process.poll() is not None,
        "a request in flight",
    )
    process.send_signal(signal.SIGINT)


def interrupt_in_map(process, lines, count):
    """SIGINT once the script got ``count`` results and the map's own loop (its progress callback) runs."""
    read_until(
        process, lines, lambda seen: len(results(seen)) >= count and seen[-1][0] == "progress"
    )
    process.send_signal(signal.SIGINT)


def results(lines):
    return [words[1] for words in lines if words and words[0] == "result"]


def finish(process, lines):
    """Wait for the process to end; return its stderr (stdout lines go on ``lines``)."""
    out, err = process.communicate(timeout=120)
    lines.extend(line.split() for line in out.splitlines())
    return err


def statuses(server):
    now = server.state.clock()
    records = dict(
        server.state.responses
    )  # a copy made in one step: the server adds to it meanwhile
    return {response_id: record.status(now) for response_id, record in records.items()}


def wait_for(condition, what):
    """Wait for an event (no duration is asserted: the bound only keeps a broken run from hanging)."""
    give_up = time.monotonic() + 120
    while not condition():
        if time.monotonic() > give_up:
            pytest.fail(f"gave up waiting for {what}")
        time.sleep(0.01)


def assert_ends_with_the_interrupt(process, err):
    assert process.returncode == -signal.SIGINT, err
    frames = [line for line in err.splitlines() if line.strip().startswith('File "')]
    assert frames, err
    assert "concurrent/futures" not in frames[-1] and "threading.py" not in frames[-1], err
    assert (
        err.rstrip().splitlines()[-1].startswith("KeyboardInterrupt") or "KeyboardInterrupt" in err
    )


def assert_the_exception_names(err, response_ids):
    """The KeyboardInterrupt itself (its note, or its message before 3.11) names each id."""
    tail = err[err.rindex("KeyboardInterrupt") :]
    for response_id in response_ids:
        assert response_id in tail, (response_id, err)


def assert_nothing_left_or_lost(server, returned, err):
    """Nothing left running; every response the script did not get back is named on stderr."""
    found = statuses(server)
    assert set(returned) <= {rid for rid, status in found.items() if status == "completed"}
    assert {rid for rid, status in found.items() if status in RUNNING} == set(), err
    for response_id in set(found) - set(returned):
        assert response_id in err, (response_id, found[response_id], err)
    return found


def test_ctrl_c_in_a_sampling_loop_cancels_the_sample_in_flight(server):
    process = start_worker(server, "sample")
    lines = []
    interrupt_in_flight(process, server, lines, 2)
    err = finish(process, lines)
    assert_ends_with_the_interrupt(process, err)
    found = assert_nothing_left_or_lost(server, results(lines), err)
    assert server.stats()["cancellations"] == sum(1 for s in found.values() if s == "cancelled")
    assert_the_exception_names(err, set(found) - set(results(lines)))


def test_ctrl_c_in_a_foreground_create_names_what_it_started(server):
    # The reply of a foreground create comes when its turn ends: the interrupted call waits for it (within
    # its bound), then cancels the response, or names it as finished when it already was.
    process = start_worker(server, "create")
    lines = []
    interrupt_in_flight(process, server, lines, 1)
    err = finish(process, lines)
    assert_ends_with_the_interrupt(process, err)
    found = assert_nothing_left_or_lost(server, results(lines), err)
    assert_the_exception_names(err, set(found) - set(results(lines)))


def test_sys_exit_from_a_signal_handler_cancels_too_and_keeps_its_exit_code(server):
    process = start_worker(server, "sample-term")
    lines = []
    read_until(process, lines, lambda seen: len(results(seen)) >= 1)
    wait_for(
        lambda: len(statuses(server)) > len(results(lines)) or process.poll() is not None,
        "a request in flight",
    )
    process.send_signal(signal.SIGTERM)
    err = finish(process, lines)
    assert process.returncode == 3, err
    assert_nothing_left_or_lost(server, results(lines), err)


def test_ctrl_c_in_a_map_cancels_every_request_in_flight(server):
    process = start_worker(server, "map")
    lines = []
    interrupt_in_map(process, lines, 3)
    err = finish(process, lines)
    assert_ends_with_the_interrupt(process, err)
    found = assert_nothing_left_or_lost(server, results(lines), err)
    assert "cancelled" in found.values()  # eight in flight at any time: some were cancelled
    assert_the_exception_names(err, set(found) - set(results(lines)))


def test_a_journaled_map_records_what_ctrl_c_cancelled(server, tmp_path):
    journal_path = tmp_path / "job.db"
    process = start_worker(server, "map-journal", journal_path)
    lines = []
    interrupt_in_map(process, lines, 3)
    err = finish(process, lines)
    assert_ends_with_the_interrupt(process, err)
    found = assert_nothing_left_or_lost(server, results(lines), err)
    assert_journal_agrees(journal_path, "mapped", found)


def test_a_journaled_sample_records_what_ctrl_c_cancelled(server, tmp_path):
    journal_path = tmp_path / "job.db"
    process = start_worker(server, "sample-journal", journal_path)
    lines = []
    interrupt_in_flight(process, server, lines, 2)
    err = finish(process, lines)
    assert_ends_with_the_interrupt(process, err)
    found = assert_nothing_left_or_lost(server, results(lines), err)
    assert_journal_agrees(journal_path, "sampled", found)


def assert_journal_agrees(journal_path, job, found):
    """What the server cancelled is journaled ``cancelled`` (so a re-run sends it again); nothing else is."""
    with Journal(journal_path) as journal:
        rows = list(journal.rows(job))
    by_id = {row.response_id: row for row in rows if row.response_id}
    for response_id, status in found.items():
        if status == "cancelled":
            assert by_id[response_id].status == "cancelled", (response_id, by_id[response_id])
        elif status == "completed" and response_id in by_id:
            assert by_id[response_id].status in ("completed", "accepted")
    for row in rows:
        if row.status == "cancelled" and row.response_id:
            assert found[row.response_id] == "cancelled", row


@pytest.fixture
def slower_server():
    # Turns of three seconds: however busy the machine, the map's window is still running when its
    # cancels go out (with 1 s turns a slow interrupt could find every sample finished).
    with EmulatorServer(seed=0, turn_times={"balanced": 3.0}) as server:
        yield server


def test_a_second_ctrl_c_skips_the_cancel(slower_server):
    server = slower_server
    # Every cancel hangs on the server: only the second Ctrl-C (or the cancel's own bound) ends the wait.
    server.faults.add(Fault("delay", method="POST", path="/v1/responses/*/cancel", delay=5.0))
    process = start_worker(server, "map")
    lines = []
    interrupt_in_map(process, lines, 1)
    wait_for(
        lambda: server.stats()["requests"].get(CANCEL_ROUTE, 0) >= 1 or process.poll() is not None,
        "the first cancel to reach the server",
    )
    process.send_signal(signal.SIGINT)
    err = finish(process, lines)
    assert_ends_with_the_interrupt(process, err)
    assert "second" in err, err  # it says why the cancel was skipped
    skipped = set(statuses(server)) - set(results(lines))
    assert skipped, err
    for response_id in skipped:  # named: the user can cancel them by hand
        assert response_id in err, (response_id, err)


def test_ctrl_c_in_unrelated_code_cancels_none_of_the_callers_futures(server):
    process = start_worker(server, "submit")
    lines = []
    read_until(process, lines, lambda seen: any(words[0] == "submitted" for words in seen))
    submitted = next(words[1:] for words in lines if words[0] == "submitted")
    process.send_signal(signal.SIGINT)
    err = finish(process, lines)
    assert process.returncode == -signal.SIGINT, err
    assert server.stats()["cancellations"] == 0
    assert all(statuses(server)[rid] != "cancelled" for rid in submitted)
    # Client.close() as documented: each future fails with ClientClosedError, the work goes on.
    closed = {words[1]: words[2] for words in lines if words[0] == "future"}
    assert closed == {rid: "ClientClosedError" for rid in submitted}, (lines, err)


def test_the_cli_names_the_sample_it_cancelled_and_exits_130(server):
    command = [sys.executable, "-m", "sail_lite.cli", "--api-key", server.api_key]
    command += ["--base-url", server.base_url, "sample", "--model", MODEL, "--tokens", "1,2,3"]
    process = start(command + ["--max-tokens", "4", "--window", "flex"])
    wait_for(
        lambda: server.stats()["requests"].get(CREATE_ROUTE, 0) >= 1 or process.poll() is not None,
        "the sample's create",
    )
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=120)
    assert process.returncode == 130, err
    assert "Traceback" not in err, err
    found = statuses(server)
    assert len(found) == 1, (found, err)
    ((response_id, status),) = found.items()
    # Turn times are drawn around their mean: a short one may finish before the cancel arrives.
    assert status in ("cancelled", "completed"), (status, err)
    said = "cancelled" if status == "cancelled" else "finished"
    assert re.search(rf"sail-lite: {said} {response_id}", err), err
