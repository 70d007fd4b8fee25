"""``submit`` with a Journal: one request at a time, recorded and resumed as ``map`` does (issue 12).

Real HTTP against the emulator. The frozen-clock emulator holds background
responses ``queued`` until a test advances its clock, which is how a test
catches a request in flight without sleeping.
"""

from __future__ import annotations

import os
import signal
import threading

import pytest

from sail_lite import ResponseFuture
from sail_lite.errors import InvalidRequestError, SailError
from sail_lite.jobs import resume, summarize
from sail_lite.journal import Journal, JournalError, JournalMismatchError
from sail_lite.types import Response

from ._journal_submit_worker import WORKER_PROMPTS
from .conftest import make_client

MODEL = "moonshotai/Kimi-K2.6"
PROMPTS = [[5, 6, 7], [8, 9], [5, 6, 7], [10]]  # a repeat: equal prompts are distinct samples
HOUR = 3600.0


class FakeClock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now
        self.lock = threading.Lock()

    def __call__(self) -> float:
        with self.lock:
            return self.now

    def advance(self, seconds: float) -> None:
        with self.lock:
            self.now += seconds


@pytest.fixture
def frozen():
    """An emulator on a clock that moves only when told (responses stay queued until then)."""
    from sail_lite.emulator import EmulatorServer

    clock = FakeClock()
    with EmulatorServer(
        clock=clock, turn_times={"balanced": 10.0}, idempotency_retention=HOUR
    ) as server:
        server.clock = clock
        yield server


def wait_accepted(future, timeout=10):
    """Block until the create was accepted (the response exists on the server), before moving a frozen clock."""
    event = threading.Event()
    future.add_accepted_callback(lambda f: event.set())
    assert event.wait(timeout)
    return future


class DiesAtAccept(Journal):
    """A journal that stops writing for good when the first create is accepted, as a SIGKILL there leaves it."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.dead = False

    def _write(self, what, sql, args):
        if self.dead or what.startswith("the response id"):
            self.dead = True
            raise SailError("killed before recording " + what)
        return super()._write(what, sql, args)


def submit_all(client, journal, job="rollout", prompts=PROMPTS, **kwargs):
    return [
        client.tokens.submit(p, model=MODEL, max_tokens=4, journal=journal, job=job, **kwargs)
        for p in prompts
    ]


def test_a_journaled_submit_is_recorded_and_a_second_one_comes_from_the_journal_with_no_request(
    emulator, tmp_path
):
    with make_client(emulator) as client, Journal(tmp_path / "j.db") as journal:
        first = [f.result(10) for f in submit_all(client, journal)]
        assert emulator.stats()["inference_runs"] == len(PROMPTS)
        assert len({r.response_id for r in first}) == len(PROMPTS)  # the repeat is its own sample
        requests_before = emulator.stats()["requests"]
    with make_client(emulator) as client, Journal(
        tmp_path / "j.db"
    ) as journal:  # a re-run, a new process
        again = submit_all(client, journal)
        assert all(
            isinstance(f, ResponseFuture) and f.done() for f in again
        )  # done at once: from the file
        assert [f.result(0) for f in again] == first
        assert [f.response_id for f in again] == [r.response_id for r in first]
    assert emulator.stats()["inference_runs"] == len(PROMPTS)
    assert emulator.stats()["requests"] == requests_before  # not one HTTP request
    status = summarize(tmp_path / "j.db")["jobs"][0]
    assert status["kind"] == "tokens.submit" and status["counts"]["completed"] == len(PROMPTS)
    assert status["total"] == len(PROMPTS)


def test_the_record_is_durable_before_the_create_is_sent_and_the_id_as_soon_as_it_is_accepted(
    frozen, tmp_path
):
    accepted = threading.Event()
    with make_client(frozen) as client, Journal(tmp_path / "j.db") as journal:
        future = client.tokens.submit(
            [1, 2, 3], model=MODEL, max_tokens=4, journal=journal, job="one"
        )
        row = journal.row(future.idempotency_key)
        assert row is not None and row.status in (
            "pending",
            "accepted",
        )  # committed before submit returned
        future.add_accepted_callback(lambda f: accepted.set())
        assert accepted.wait(10)
        row = journal.row(future.idempotency_key)
        assert (row.status, row.response_id) == (
            "accepted",
            future.response_id,
        )  # journaled before callbacks ran
        frozen.clock.advance(30)
        result = future.result(10)
        row = journal.row(future.idempotency_key)
        assert row.status == "completed" and row.response_id == result.response_id


def test_an_in_flight_submit_is_reattached_by_response_id(frozen, tmp_path):
    accepted = threading.Event()
    with make_client(frozen) as client, Journal(tmp_path / "j.db") as journal:
        future = client.tokens.submit(
            [1, 2, 3], model=MODEL, max_tokens=4, journal=journal, job="one"
        )
        future.add_accepted_callback(lambda f: accepted.set())
        assert accepted.wait(10)
        response_id = future.response_id
    # The client closed with the response queued on the server, as a crashed process leaves it.
    posts = frozen.stats()["requests"].get("POST /responses", 0)
    with make_client(frozen) as client, Journal(tmp_path / "j.db") as journal:
        again = client.tokens.submit(
            [1, 2, 3], model=MODEL, max_tokens=4, journal=journal, job="one"
        )
        assert again.response_id == response_id  # known at once, from the journal
        frozen.clock.advance(30)
        assert again.result(10).response_id == response_id
    assert frozen.stats()["requests"].get("POST /responses", 0) == posts  # re-attached, not re-sent
    assert frozen.stats()["inference_runs"] == 1


def test_a_create_that_may_have_reached_the_server_is_resent_with_the_same_key(frozen, tmp_path):
    with make_client(frozen) as client, DiesAtAccept(tmp_path / "j.db") as journal:
        future = client.tokens.submit([4, 4], model=MODEL, max_tokens=4, journal=journal, job="one")
        with pytest.raises(SailError, match="killed"):
            future.result(10)
        key = future.idempotency_key
        assert journal.row(key).status == "pending"
    with make_client(frozen) as client, Journal(tmp_path / "j.db") as journal:
        again = client.tokens.submit([4, 4], model=MODEL, max_tokens=4, journal=journal, job="one")
        assert again.idempotency_key == key
        frozen.clock.advance(30)
        again.result(10)
    assert frozen.stats()["inference_runs"] == 1  # the server replayed the key
    assert frozen.stats()["inference_runs_by_idempotency_key"] == {key: 1}


def test_responses_submit_takes_a_journal_too(emulator, tmp_path):
    with make_client(emulator) as client, Journal(tmp_path / "j.db") as journal:
        futures = [
            client.responses.submit(
                model=MODEL, input=text, max_output_tokens=4, journal=journal, job="txt"
            )
            for text in ("hello", "world", "hello")
        ]
        first = [f.result(10) for f in futures]
        assert all(isinstance(r, Response) and r.status == "completed" for r in first)
        assert len({r.id for r in first}) == 3
    with make_client(emulator) as client, Journal(tmp_path / "j.db") as journal:
        again = [
            client.responses.submit(
                model=MODEL, input=text, max_output_tokens=4, journal=journal, job="txt"
            )
            for text in ("hello", "world", "hello")
        ]
        assert [f.result(0).raw for f in again] == [r.raw for r in first]
    assert emulator.stats()["inference_runs"] == 3


def test_occurrence_counts_equal_requests_per_journal_and_can_be_pinned(emulator, tmp_path):
    with make_client(emulator) as client, Journal(tmp_path / "j.db") as journal:
        counted = [f.result(10) for f in submit_all(client, journal, prompts=[[3, 3]] * 3)]
        assert len({r.response_id for r in counted}) == 3
        # An explicit occurrence names one of them, whatever was submitted before in this run.
        pinned = client.tokens.submit(
            [3, 3], model=MODEL, max_tokens=4, journal=journal, job="rollout", occurrence=1
        )
        assert pinned.result(0) == counted[1]
        with pytest.raises(InvalidRequestError, match="occurrence"):
            client.tokens.submit(
                [3, 3], model=MODEL, max_tokens=4, journal=journal, job="rollout", occurrence=-1
            )
    assert emulator.stats()["inference_runs"] == 3


def test_a_changed_request_under_the_same_identity_is_a_mismatch_and_records_nothing(
    emulator, tmp_path
):
    with make_client(emulator) as client, Journal(tmp_path / "j.db") as journal:
        client.tokens.submit(
            [1, 2], model=MODEL, max_tokens=4, journal=journal, job="rows", identity="row-7"
        ).result(10)
    with make_client(emulator) as client, Journal(tmp_path / "j.db") as journal:
        with pytest.raises(JournalMismatchError) as info:
            client.tokens.submit(
                [1, 2, 3], model=MODEL, max_tokens=4, journal=journal, job="rows", identity="row-7"
            )
        assert info.value.job == "rows" and info.value.recorded != info.value.given
        assert journal.counts("rows")["completed"] == 1 and journal.counts("rows")["pending"] == 0
        # Without an identity a changed prompt is simply another request.
        client.tokens.submit(
            [1, 2, 3], model=MODEL, max_tokens=4, journal=journal, job="rows"
        ).result(10)
    assert emulator.stats()["inference_runs"] == 2


def test_cancelling_a_journaled_submit_cancels_on_the_server_and_a_resubmit_uses_a_new_attempt_key(
    frozen, tmp_path
):
    accepted = threading.Event()
    with make_client(frozen) as client, Journal(tmp_path / "j.db") as journal:
        future = client.tokens.submit([9], model=MODEL, max_tokens=4, journal=journal, job="c")
        future.add_accepted_callback(lambda f: accepted.set())
        assert accepted.wait(10)
        key = future.idempotency_key
        assert future.cancel()
        assert journal.row(key).status == "cancelled"
        # The same request again in this run would be the next occurrence (a new sample): pin the first.
        again = client.tokens.submit(
            [9], model=MODEL, max_tokens=4, journal=journal, job="c", occurrence=0
        )
        assert again.idempotency_key == key + ".a1"
        wait_accepted(again)
        frozen.clock.advance(30)
        assert again.result(10).stop_reason
    assert frozen.stats()["inference_runs"] == 2  # the cancelled one ran, then a new attempt


def test_a_journaled_failure_comes_back_without_a_request_unless_retried(emulator, tmp_path):
    from sail_lite.errors import ResponseFailedError

    with make_client(emulator) as client, Journal(tmp_path / "j.db") as journal:
        # The emulator loads only checkpoints it published: this response fails on the server.
        bad = client.tokens.submit(
            [1, 2],
            model=MODEL,
            max_tokens=4,
            journal=journal,
            job="f",
            tinker_lora_signed_url="https://elsewhere.example/ckpt.tar?sig=secret",
            adapter_config={"r": 8},
        )
        with pytest.raises(ResponseFailedError):
            bad.result(10)
    runs = emulator.stats()["inference_runs"]
    with make_client(emulator) as client, Journal(tmp_path / "j.db") as journal:  # a re-run
        again = client.tokens.submit(
            [1, 2],
            model=MODEL,
            max_tokens=4,
            journal=journal,
            job="f",
            tinker_lora_signed_url="https://elsewhere.example/ckpt.tar?sig=fresh",
            adapter_config={"r": 8},
        )
        assert again.done()
        with pytest.raises(ResponseFailedError):
            again.result(0)
        assert emulator.stats()["inference_runs"] == runs
        with open(journal.path, "rb") as handle:
            assert b"secret" not in handle.read()  # a signed URL's query is a credential
        retried = client.tokens.submit(
            [1, 2],
            model=MODEL,
            max_tokens=4,
            journal=journal,
            job="f",
            tinker_lora_signed_url="https://elsewhere.example/ckpt.tar?sig=fresh",
            adapter_config={"r": 8},
            retry_failed=True,
            occurrence=0,
        )
        assert retried.idempotency_key.endswith(".a1")
        with pytest.raises(ResponseFailedError):
            retried.result(10)


def test_a_job_without_a_journal_derives_the_key_from_an_explicit_occurrence(emulator):
    with make_client(emulator) as client:
        one = client.tokens.submit([2, 2], model=MODEL, max_tokens=4, job="stateless", occurrence=0)
        two = client.tokens.submit([2, 2], model=MODEL, max_tokens=4, job="stateless", occurrence=0)
        other = client.tokens.submit(
            [2, 2], model=MODEL, max_tokens=4, job="stateless", occurrence=1
        )
        assert one.idempotency_key == two.idempotency_key != other.idempotency_key
        assert one.result(10) == two.result(10) != other.result(10)
        with pytest.raises(InvalidRequestError, match="occurrence"):
            client.tokens.submit([2, 2], model=MODEL, max_tokens=4, job="stateless")
    assert emulator.stats()["inference_runs"] == 2


def test_bad_combinations_are_typed_errors(emulator, tmp_path):
    with make_client(emulator) as client, Journal(tmp_path / "j.db") as journal:
        with pytest.raises(InvalidRequestError, match="idempotency_key"):
            client.tokens.submit(
                [1], model=MODEL, max_tokens=4, journal=journal, idempotency_key="mine"
            )
        with pytest.raises(InvalidRequestError, match="journal"):
            client.responses.submit(model=MODEL, input="x", journal="j.db")
        with pytest.raises(InvalidRequestError, match="job"):
            client.responses.submit(model=MODEL, input="x", journal=journal, job="")
        with pytest.raises(JournalMismatchError):  # one job, one kind
            client.tokens.submit(
                [1], model=MODEL, max_tokens=4, journal=journal, job="mixed"
            ).result(10)
            client.responses.submit(model=MODEL, input="x", journal=journal, job="mixed")
        assert journal.default_job  # no job: the journal's own
        client.tokens.submit([1], model=MODEL, max_tokens=4, journal=journal).result(10)
        assert journal.counts(journal.default_job)["completed"] == 1
        journal.close()
        with pytest.raises(JournalError, match="closed"):
            client.tokens.submit([1], model=MODEL, max_tokens=4, journal=journal)


def test_jobs_resume_finishes_a_submitted_job_from_the_file_alone(frozen, tmp_path):
    with make_client(frozen) as client, Journal(tmp_path / "j.db") as journal:
        for future in submit_all(client, journal, prompts=[[1], [2]]):
            wait_accepted(future)
    frozen.clock.advance(30)
    with make_client(frozen) as client:
        outcome = resume(tmp_path / "j.db", client)
    assert outcome["jobs"]["rollout"] == {"ran": 2, "completed": 2, "failed": 0}
    assert outcome["summary"]["counts"]["completed"] == 2
    assert frozen.stats()["inference_runs"] == 2


# --- key retention ------------------------------------------------------------------------------------------


def lost_id_then_wait(frozen, path, wait):
    """A submit whose create reached the server but whose id was never journaled; then ``wait`` seconds pass."""
    with make_client(frozen) as client, DiesAtAccept(path, clock=frozen.clock) as journal:
        future = client.tokens.submit(
            [6, 1], model=MODEL, max_tokens=4, journal=journal, job="late"
        )
        with pytest.raises(SailError):
            future.result(10)
    frozen.clock.advance(wait)
    return future.idempotency_key


def test_within_the_retention_window_a_resent_key_is_replayed(frozen, tmp_path):
    key = lost_id_then_wait(frozen, tmp_path / "j.db", HOUR - 60)
    status = summarize(tmp_path / "j.db", idempotency_retention=HOUR, clock=frozen.clock)
    assert status["jobs"][0]["past_retention"] == 0
    with make_client(frozen) as client, Journal(
        tmp_path / "j.db", idempotency_retention=HOUR, clock=frozen.clock
    ) as journal:
        client.tokens.submit([6, 1], model=MODEL, max_tokens=4, journal=journal, job="late").result(
            10
        )
    assert frozen.stats()["inference_runs_by_idempotency_key"] == {key: 1}


def test_after_the_retention_window_a_resent_key_runs_and_is_billed_again_and_the_journal_says_so(
    frozen, tmp_path, caplog
):
    key = lost_id_then_wait(frozen, tmp_path / "j.db", HOUR + 60)
    status = summarize(tmp_path / "j.db", idempotency_retention=HOUR, clock=frozen.clock)
    assert status["idempotency_retention"] == HOUR and status["jobs"][0]["past_retention"] == 1
    assert (
        summarize(tmp_path / "j.db", clock=frozen.clock)["jobs"][0]["past_retention"] == 0
    )  # default: 24 h
    with make_client(frozen) as client, Journal(
        tmp_path / "j.db", idempotency_retention=HOUR, clock=frozen.clock
    ) as journal:
        with caplog.at_level("WARNING", logger="sail_lite.journal"):
            future = client.tokens.submit(
                [6, 1], model=MODEL, max_tokens=4, journal=journal, job="late"
            )
        assert "retention" in caplog.text and "billed again" in caplog.text
        wait_accepted(future)
        frozen.clock.advance(30)
        future.result(10)
    assert frozen.stats()["inference_runs_by_idempotency_key"] == {
        key: 2
    }  # the server ran it again


# --- a real crash ------------------------------------------------------------------------------------------


def test_sigkill_after_submits_were_accepted_then_resubmitting_pays_once(emulator, tmp_path):
    """A process submits 8 samples, dies (SIGKILL) in the 4th accepted-callback; the same submits resume it."""
    from . import _forked as forked

    path = tmp_path / "job.db"
    died = forked.run(
        "tests._journal_submit_worker",
        [emulator.base_url, emulator.api_key, path, "accepted:4"],
        tmp_path / "worker.log",
        timeout=60,
    )
    assert died.returncode == -signal.SIGKILL, died.stderr
    with Journal(path) as journal:
        counts = journal.counts("crash-submit")
    assert (
        counts["pending"] >= 1
    )  # at least the one whose id was never journaled (others race with the kill)
    with make_client(emulator) as client, Journal(path) as journal:
        futures = [
            client.tokens.submit(p, model=MODEL, max_tokens=4, journal=journal, job="crash-submit")
            for p in WORKER_PROMPTS
        ]
        results = [f.result(20) for f in futures]
    assert len({r.response_id for r in results}) == len(WORKER_PROMPTS)  # every sample exactly once
    assert emulator.stats()["inference_runs"] == len(WORKER_PROMPTS)
    assert summarize(path)["jobs"][0]["counts"]["completed"] == len(WORKER_PROMPTS)
    assert os.path.getsize(path) > 0


def test_jobs_status_counts_requests_past_the_retention_window(frozen, tmp_path):
    import io

    from sail_lite.cli import main

    lost_id_then_wait(frozen, tmp_path / "j.db", 2 * HOUR)
    out = io.StringIO()
    # The command line reads the wall clock: make the record two days old on it.
    import time

    with Journal(tmp_path / "j.db") as journal:
        journal._db.execute("UPDATE requests SET key_at = ?", (time.time() - 2 * 24 * HOUR,))
    assert (
        main(["jobs", "status", str(tmp_path / "j.db")], out=out, err=io.StringIO(), environ={})
        == 1  # a pending request: the job is not done
    )
    assert "1 request(s) claimed more than 24 h ago" in out.getvalue()
    assert "billed again" in out.getvalue()
    out = io.StringIO()
    assert (
        main(
            [
                "jobs",
                "status",
                str(tmp_path / "j.db"),
                "--idempotency-retention",
                str(3 * 24 * HOUR),
            ],
            out=out,
            err=io.StringIO(),
            environ={},
        )
        == 1  # a pending request: the job is not done
    )
    assert "billed again" not in out.getvalue()
    err = io.StringIO()
    assert (
        main(
            ["jobs", "status", str(tmp_path / "j.db"), "--idempotency-retention", "0"],
            out=io.StringIO(),
            err=err,
            environ={},
        )
        == 2
    )
    assert "idempotency_retention must be a positive number" in err.getvalue()


def test_a_journal_written_before_key_ages_were_recorded_opens_and_counts_from_created_at(tmp_path):
    import sqlite3

    from sail_lite.journal.store import _SCHEMA

    path = tmp_path / "old.db"
    db = sqlite3.connect(str(path))
    db.executescript(_SCHEMA.replace(",\n    key_at REAL", ""))
    db.execute("INSERT INTO meta VALUES ('schema', '1'), ('journal_id', 'abc')")
    db.execute("INSERT INTO jobs VALUES ('old', 'tokens', '{}', 1, 0, 0)")
    db.execute(
        "INSERT INTO requests (key, job, position, fingerprint, status, created_at, updated_at) "
        "VALUES ('k', 'old', 0, 'f', 'pending', 100, 100)"
    )
    db.commit()
    db.close()
    with Journal(path, idempotency_retention=50, clock=lambda: 160.0) as journal:
        assert journal.row("k").key_at == 100 and journal.count_past_retention("old") == 1
    assert summarize(path, idempotency_retention=100, clock=lambda: 160.0)["past_retention"] == 0
