"""Crash tests: a journaled pipeline in its own process, SIGKILLed (or Ctrl-C'd) at several points, restarted.

The emulator runs in another process too (a SIGKILL must not take the
server's memory with it). After every scenario: every result exactly once,
emulator inference runs == logical requests, results identical to an
uninterrupted run.
"""

from __future__ import annotations

import json
import os
import signal
import time

import pytest

from sail_lite.emulator import EmulatorProcess
from sail_lite.jobs import summarize
from sail_lite.journal import Journal

from . import _forked as forked

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
N = 30


@pytest.fixture(scope="module")
def server():
    with EmulatorProcess(turn_times={"priority": 0.1}) as emulator:
        yield emulator


def run_worker(server, journal_path, out_path, kill="none", on_interrupt=None):
    args = [server.base_url, server.api_key, journal_path, out_path, N, kill] + (
        [on_interrupt] if on_interrupt else []
    )
    return forked.run("tests._journal_worker", args, str(out_path) + ".log")


def comparable(results):
    return [
        item[:3] for item in results
    ]  # tokens, logprobs, stop reason (response ids differ between runs)


@pytest.fixture(scope="module")
def reference(server, tmp_path_factory):
    """An uninterrupted run of the same job: the worker's own code, in this process (one interpreter less)."""
    from ._journal_worker import main

    base = tmp_path_factory.mktemp("reference")
    server.reset()
    assert (
        main(
            [
                server.base_url,
                server.api_key,
                str(base / "job.db"),
                str(base / "out.json"),
                str(N),
                "none",
            ]
        )
        == 0
    )
    with open(base / "out.json") as handle:
        results = json.load(handle)
    assert len(results) == N and server.stats()["inference_runs"] == N
    return comparable(results)


def finish_and_check(server, tmp_path, reference, extra_runs=0):
    done = run_worker(server, tmp_path / "job.db", tmp_path / "out.json")
    assert done.returncode == 0, done.stderr
    with open(tmp_path / "out.json") as handle:
        results = json.load(handle)
    assert comparable(results) == reference
    assert len({item[3] for item in results}) == N  # every result once: N distinct responses
    stats = server.stats()
    assert stats["inference_runs"] == N + extra_runs
    status = summarize(tmp_path / "job.db")
    assert status["counts"]["completed"] == N and status["jobs"][0]["unfinished"] == 0
    return stats


@pytest.mark.parametrize(
    "kills",
    [
        ["submit:1"],  # before any create returns
        ["writing:5"],  # inside a result's transaction, before COMMIT
        # Killed again and again while resuming: first when the server has a response whose id the fresh
        # journal does not know yet, then while a result is written, mid-run, and while creates are in flight.
        # (The SIGKILL from outside below is a mid-run kill at an instant nobody chose.)
        ["accepted:2", "writing:3", "result:4", "submit:2"],
    ],
)
def test_sigkill_at_any_point_then_restart_loses_nothing_and_pays_once(
    server, reference, tmp_path, kills
):
    server.reset()
    for kill in kills:
        died = run_worker(server, tmp_path / "job.db", tmp_path / "out.json", kill)
        assert died.returncode == -signal.SIGKILL, (kill, died.returncode, died.stderr)
        assert not (tmp_path / "out.json").exists()
    finish_and_check(server, tmp_path, reference)


def test_sigkill_from_outside_mid_run(server, reference, tmp_path):
    server.reset()
    args = [server.base_url, server.api_key, tmp_path / "job.db", tmp_path / "out.json", N, "none"]
    process = forked.start("tests._journal_worker", args, tmp_path / "killed.log")
    try:
        while (
            process.exitcode is None
        ):  # wait for some progress, then kill at whatever instant it is
            if (tmp_path / "job.db").exists():
                try:
                    with Journal(tmp_path / "job.db") as journal:
                        if journal.counts()["completed"] >= N // 3:
                            break
                except Exception:  # the file is being created
                    pass
            time.sleep(0.01)
        process.kill()
    finally:
        process.join(30)
    finish_and_check(server, tmp_path, reference)


def test_ctrl_c_leaves_the_work_on_the_server_and_a_rerun_collects_it(server, reference, tmp_path):
    server.reset()
    stopped = run_worker(server, tmp_path / "job.db", tmp_path / "out.json", "sigint:5")
    assert stopped.returncode == 130, stopped.stderr
    counts = summarize(tmp_path / "job.db")["counts"]
    assert counts["completed"] >= 5 and counts["cancelled"] == 0 and counts["completed"] < N
    assert server.stats()["cancellations"] == 0
    finish_and_check(server, tmp_path, reference)


def test_ctrl_c_with_cancel_cancels_on_the_server_and_a_rerun_resends_under_new_keys(
    server, reference, tmp_path
):
    server.reset()
    stopped = run_worker(
        server, tmp_path / "job.db", tmp_path / "out.json", "sigint:5", on_interrupt="cancel"
    )
    assert stopped.returncode == 130, stopped.stderr
    counts = summarize(tmp_path / "job.db")["counts"]
    assert counts["cancelled"] > 0  # journaled before the process exited
    # Whether each cancel reached the server before the worker closed its client is the client's business
    # (Client.close() drains queued cancels); either way the journal is consistent: a cancelled item (journaled
    # "cancelled", or found cancelled when re-attached) is sent again under a new attempt key, and those re-sent
    # items, and only those, run again.
    runs_before = server.stats()["inference_runs"]
    assert runs_before < N
    done = run_worker(server, tmp_path / "job.db", tmp_path / "out.json")
    assert done.returncode == 0, done.stderr
    with open(tmp_path / "out.json") as handle:
        results = json.load(handle)
    assert comparable(results) == reference
    assert len({item[3] for item in results}) == N
    assert resent(tmp_path / "job.db") >= counts["cancelled"]
    # A re-sent item ran again only if its first create had reached the server before the cancel: one
    # cancelled while still queued in the client never ran at all. So every item ran, and nothing ran
    # twice but the re-sent ones.
    assert N <= server.stats()["inference_runs"] <= N + resent(tmp_path / "job.db")


def resent(path):
    with Journal(path) as journal:
        return sum(1 for row in journal.rows() if row.attempt > 0)
