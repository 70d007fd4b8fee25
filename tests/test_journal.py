"""The Journal: schema, durability across reopen, threads, codecs, summarize/resume, and map_* on the emulator."""

from __future__ import annotations

import sqlite3
import threading

import pytest

from sail_lite.errors import (
    IdempotencyError,
    InvalidRequestError,
    NotFoundError,
    ResponseCancelledError,
    ResponseFailedError,
    SailError,
)
from sail_lite.jobs import resume, summarize
from sail_lite.journal import (
    Journal,
    JournalEntry,
    JournalError,
    JournalMismatchError,
    decode_error,
    decode_result,
    encode_error,
    encode_result,
    is_terminal_failure,
)
from sail_lite.pipeline import map_responses, map_tokens
from sail_lite.types import Response, SampledTokens, Usage

from .conftest import make_client

MODEL = "moonshotai/Kimi-K2.6"


def entry(i, fingerprint="f"):
    return JournalEntry(f"key-{i}", fingerprint, i, f"[{i}]")


def test_records_survive_close_and_reopen(tmp_path):
    path = tmp_path / "j.db"
    with Journal(path) as journal:
        journal.begin_job("exp", kind="custom", params={"t": 1})
        rows = journal.claim("exp", [entry(0), entry(1)])
        assert [r.fresh for r in rows] == [True, True]
        journal.record_accepted("key-0", "resp_a")
        journal.record_result("key-0", {"x": 1})
        journal.record_accepted("key-1", "resp_b")
        journal_id = journal.journal_id
    with Journal(path) as journal:
        assert journal.journal_id == journal_id
        first, second = journal.claim("exp", [entry(0), entry(1)])
        assert (first.status, first.fresh, decode_result(first.result_json)) == (
            "completed",
            False,
            {"x": 1},
        )
        assert first.item_json is None  # dropped once the result is in
        assert (second.status, second.response_id, second.item_json) == (
            "accepted",
            "resp_b",
            "[1]",
        )
        assert journal.job("exp") == {
            "job": "exp",
            "kind": "custom",
            "params": {"t": 1},
            "total": None,
        }


def test_the_file_maps_no_memory_and_synchronous_is_a_choice(tmp_path):
    with Journal(tmp_path / "a.db") as journal:
        # A rollback journal kept in place, no WAL -shm and no mmap: nothing to SIGBUS on.
        assert journal._db.execute("PRAGMA journal_mode").fetchone()[0] == "persist"
        assert journal._db.execute("PRAGMA mmap_size").fetchone()[0] == 0
        assert journal._db.execute("PRAGMA synchronous").fetchone()[0] == 0  # NORMAL: the OS cache
    with Journal(tmp_path / "b.db", synchronous="FULL") as journal:
        assert journal._db.execute("PRAGMA synchronous").fetchone()[0] == 2
    with pytest.raises(InvalidRequestError):
        Journal(tmp_path / "c.db", synchronous="OFF")


def test_a_file_that_is_not_a_journal_is_a_clear_error(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("hello, this is not sqlite " * 100)
    with pytest.raises(JournalError) as info:
        Journal(path)
    assert "journal" in str(info.value)
    with pytest.raises(JournalError):
        summarize(tmp_path / "missing.db")
    foreign = tmp_path / "foreign.db"
    db = sqlite3.connect(str(foreign))
    db.execute("CREATE TABLE meta (name TEXT PRIMARY KEY, value TEXT NOT NULL)")
    db.execute("INSERT INTO meta VALUES ('schema', '99')")
    db.commit()
    db.close()
    with pytest.raises(JournalError) as info:
        Journal(foreign)
    assert "schema" in str(info.value)


def test_a_fingerprint_mismatch_records_nothing(tmp_path):
    with Journal(tmp_path / "j.db") as journal:
        journal.claim("exp", [entry(0, "f1")])
        with pytest.raises(JournalMismatchError) as info:
            journal.claim("exp", [entry(5, "f1"), entry(0, "f2")])
        assert info.value.key == "key-0" and isinstance(info.value, SailError)
        assert journal.row("key-5") is None  # the whole claim rolled back


def test_many_threads_write_safely(tmp_path):
    with Journal(tmp_path / "j.db") as journal:
        journal.claim("exp", [entry(i) for i in range(400)])
        errors = []

        def work(start):
            try:
                for i in range(start, 400, 8):
                    journal.record_accepted(f"key-{i}", f"resp_{i}")
                    journal.record_result(f"key-{i}", {"i": i})
            except BaseException as exc:  # pragma: no cover - reported below
                errors.append(exc)

        threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        assert journal.counts("exp")["completed"] == 400
        assert [decode_result(r.result_json)["i"] for r in journal.rows("exp", batch=7)] == list(
            range(400)
        )


def test_results_round_trip_exactly():
    payload = {
        "id": "resp_1",
        "object": "response",
        "status": "completed",
        "model": MODEL,
        "created_at": 5,
        "metadata": {"completion_window": "priority"},
        "usage": {"input_tokens": 3, "output_tokens": 2, "total_tokens": 5},
        "output": [
            {
                "type": "message",
                "content": [
                    {
                        "type": "output_text",
                        "text": "hi",
                        "token_ids": [7, 9],
                        "logprobs": [
                            {"token_id": 7, "logprob": -0.1},
                            {"token_id": 9, "logprob": -2.5e-7},
                        ],
                    }
                ],
            }
        ],
        "error": None,
        "incomplete_details": None,
    }
    response = Response.from_dict(payload)
    again = decode_result(encode_result(response))
    assert again == response and again.raw == response.raw
    tokens = SampledTokens.from_response(response)
    assert decode_result(encode_result(tokens)) == tokens
    bare = SampledTokens(
        tokens=(1,), logprobs=None, stop_reason="length", response_id="r", usage=Usage(1, 1, 2)
    )
    assert decode_result(encode_result(bare)) == bare
    with pytest.raises(JournalError):
        decode_result('{"type": "Mystery"}')


def test_errors_round_trip_as_their_own_class():
    response = Response.from_dict({"id": "resp_9", "status": "cancelled"})
    cancelled = ResponseCancelledError(
        "response resp_9 was cancelled", response=response, response_id="resp_9", code="x"
    )
    again = decode_error(encode_error(cancelled))
    assert type(again) is ResponseCancelledError
    assert (again.code, again.response_id, again.response.status) == ("x", "resp_9", "cancelled")
    idem = IdempotencyError("key reused", status=400, code="idempotency_error", request_id="req_1")
    again = decode_error(encode_error(idem))
    assert type(again) is IdempotencyError and again.status == 400 and "req_1" in str(again)
    foreign = decode_error(encode_error(KeyError("boom")))
    assert type(foreign) is SailError and "KeyError" in str(foreign)


def test_which_failures_are_final():
    assert is_terminal_failure(ResponseFailedError("failed"))
    assert is_terminal_failure(InvalidRequestError("bad"))
    assert not is_terminal_failure(NotFoundError("gone", status=404))
    from sail_lite.errors import APIConnectionError, DeadlineExceededError, OverloadedError

    for transient in (
        APIConnectionError("reset"),
        OverloadedError("busy", status=503),
        DeadlineExceededError("late", response_id="r"),
    ):
        assert not is_terminal_failure(transient)


# --- against the emulator -----------------------------------------------------------------------------------------


def prompts(n):
    return [[1 + i % 5, 2, 3] for i in range(n)]  # duplicates on purpose: five distinct prompts


def test_map_tokens_journals_every_sample_and_resumes_with_no_inference(emulator, tmp_path):
    path = tmp_path / "job.db"
    with make_client(emulator) as client, Journal(path) as journal:
        first = list(
            map_tokens(
                client,
                prompts(20),
                journal=journal,
                job="eval",
                model=MODEL,
                max_tokens=4,
                max_in_flight=8,
            )
        )
        assert emulator.stats()["inference_runs"] == 20
        assert len({r.response_id for r in first}) == 20  # equal prompts are distinct samples
        second = list(
            map_tokens(client, prompts(20), journal=journal, job="eval", model=MODEL, max_tokens=4)
        )
        assert second == first
        assert emulator.stats()["inference_runs"] == 20
        with pytest.raises(JournalMismatchError):
            map_tokens(client, prompts(2), journal=journal, job="eval", model=MODEL, max_tokens=5)
    status = summarize(path)
    assert status["counts"]["completed"] == 20
    assert status["jobs"][0]["kind"] == "tokens" and status["jobs"][0]["total"] == 20


def test_map_without_a_journal_but_with_a_job_replays_a_rerun_on_the_server(emulator):
    with make_client(emulator) as client:
        first = list(
            map_tokens(client, prompts(6), job="eval-nojournal", model=MODEL, max_tokens=4)
        )
        second = list(
            map_tokens(
                client, list(reversed(prompts(6))), job="eval-nojournal", model=MODEL, max_tokens=4
            )
        )
    assert emulator.stats()["inference_runs"] == 6
    assert sorted(r.response_id for r in first) == sorted(r.response_id for r in second)


def test_map_responses_and_failures_recorded_with_their_codes(emulator, tmp_path):
    path = tmp_path / "job.db"
    with make_client(emulator) as client, Journal(path) as journal:
        out = list(
            map_responses(
                client,
                ["hello", {"input": "world", "max_output_tokens": 3}, {"input": ""}],
                journal=journal,
                job="text",
                model=MODEL,
                max_output_tokens=4,
                return_exceptions=True,
            )
        )
    assert isinstance(out[0], Response) and out[0].status == "completed"
    assert isinstance(out[2], InvalidRequestError)
    status = summarize(path)["jobs"][0]
    assert status["counts"]["completed"] == 2 and status["counts"]["failed"] == 1
    assert (
        status["failures"][0]["type"] == "InvalidRequestError"
        and status["failures"][0]["position"] == 2
    )


def test_resume_from_the_journal_alone_finishes_a_job(emulator, tmp_path):
    path = tmp_path / "job.db"
    with make_client(emulator) as client, Journal(path) as journal:
        results = map_tokens(
            client,
            prompts(10),
            journal=journal,
            job="eval",
            model=MODEL,
            max_tokens=4,
            max_in_flight=10,
            on_interrupt="leave",
        )
        next(results)
        # Stop as a crash would: leave every other request in flight, the generator never closed.
        assert journal.counts("eval")["completed"] >= 1
    with make_client(emulator) as client:
        outcome = resume(path, client)
    assert outcome["summary"]["counts"]["completed"] == 10
    assert emulator.stats()["inference_runs"] == 10
    del results
