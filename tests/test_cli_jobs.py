"""sail-lite jobs status|resume FILE: a journal's state, and finishing it from the file alone."""

from __future__ import annotations

import io
import json

from sail_lite import Journal
from sail_lite.cli import main

MODEL = "moonshotai/Kimi-K2.6"


def run(argv, environ=None):
    out, err = io.StringIO(), io.StringIO()
    code = main(argv, out=out, err=err, environ=environ or {"CI": "true"})
    return code, out.getvalue(), err.getvalue()


def interrupted_job(client, path):
    """A job stopped after its first result: one completed, two accepted (left running), one failed."""
    with Journal(path) as journal:
        results = client.tokens.map(
            [[1, 2], [3], [4], []],
            model=MODEL,
            max_tokens=4,
            journal=journal,
            job="eval",
            return_exceptions=True,
        )
        next(results)
        results.close()


def test_status_counts_and_failures(client, emulator, tmp_path):
    path = str(tmp_path / "eval.db")
    interrupted_job(client, path)
    code, out, err = run(["jobs", "status", path])
    # Not done (two left running, one failed): exit 1, saying what.
    assert code == 1 and err.startswith("sail-lite: error: not done:") and "1 failed" in err
    assert (
        "eval  (tokens, 4 requests)" in out and "failed 1" in out and "the prompt is empty" in out
    )
    code, out, _ = run(["jobs", "status", path, "--json"])
    summary = json.loads(out)
    assert (
        summary["jobs"][0]["counts"]["failed"] == 1
        and summary["jobs"][0]["params"]["model"] == MODEL
    )


def test_resume_finishes_from_the_file_alone_and_pays_nothing_twice(client, emulator, tmp_path):
    path = str(tmp_path / "eval.db")
    interrupted_job(client, path)
    runs = emulator.stats()["inference_runs"]
    code, out, err = run(
        ["--api-key", emulator.api_key, "--base-url", emulator.base_url, "jobs", "resume", path]
    )
    assert code == 1  # one request failed for good (an empty prompt): the exit status says so
    # The two left in flight are re-attached (or, if they finished before the stop was recorded, read back).
    assert "eval: ran" in out and "failed 0" in out.splitlines()[0]
    assert "\r" not in err  # off a terminal a progress bar is a line per step
    assert (
        emulator.stats()["inference_runs"] == runs
    )  # the two in flight were re-attached, not re-run
    with Journal(path) as journal:
        assert journal.counts("eval")["completed"] == 3


def test_a_missing_file_is_one_line_and_exit_2(tmp_path):
    code, out, err = run(["jobs", "status", str(tmp_path / "nope.db")])
    assert (
        code == 2
        and err.startswith("sail-lite: error: journal file not found")
        and err.count("\n") == 1
    )


# --- crafted rows, escapes, never-submitted items, exit status (each CLI run in a subprocess) ---

import os  # noqa: E402
import sqlite3  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402

import pytest  # noqa: E402

from sail_lite.journal import JournalEntry  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def cli(*argv, environ=None):
    env = {"PATH": os.environ.get("PATH", ""), "CI": "true"}
    env.update(environ or {})
    done = subprocess.run(
        [sys.executable, "-m", "sail_lite.cli"] + list(argv),
        cwd=ROOT,
        capture_output=True,
        env=env,
    )
    return done.returncode, done.stdout.decode(), done.stderr.decode()


def pending_tokens_job(path, params=None):
    with Journal(path) as journal:
        journal.begin_job(
            "eval", kind="tokens", params=params or {"model": MODEL, "max_tokens": 4}, total=1
        )
        journal.claim("eval", [JournalEntry("eval.k.0", "f", 0, "[1,2,3]")])


def tamper(path, sql, args=()):
    db = sqlite3.connect(str(path))
    db.execute(sql, args)
    db.commit()
    db.close()


DEEP = "[" * 100_000 + "]" * 100_000


@pytest.mark.parametrize(
    "sql, args",
    [
        ("UPDATE jobs SET params = ?", ("[1,2]",)),
        ("UPDATE jobs SET params = ?", ("{not json",)),
        ("UPDATE jobs SET params = ?", (DEEP,)),
        (
            "UPDATE requests SET status = 'failed', error = ?, error_type = 'X'",
            ('{"message": ' + DEEP + "}",),
        ),
    ],
    ids=["params-list", "params-not-json", "params-deep", "error-deep"],
)
def test_crafted_rows_are_one_line_naming_the_row_and_exit_1(tmp_path, sql, args):
    path = tmp_path / "eval.db"
    pending_tokens_job(path)
    tamper(path, sql, args)
    for action in (["status"], ["status", "--json"], ["resume"]):
        code, out, err = cli(
            "jobs",
            *action,
            str(path),
            environ={"SAIL_API_KEY": "k", "SAIL_BASE_URL": "http://127.0.0.1:9/v1"},
        )
        assert code == 1, (action, code, err)
        assert "Traceback" not in err and err.count("\n") == 1, err
        assert "job 'eval'" in err or "request #0" in out + err, (out, err)


def test_an_unreadable_item_stops_resume_before_anything_is_sent(tmp_path, emulator):
    path = tmp_path / "eval.db"
    pending_tokens_job(path)
    tamper(path, "UPDATE requests SET item = '{not json'")
    code, out, err = cli(
        "jobs",
        "resume",
        str(path),
        environ={"SAIL_API_KEY": emulator.api_key, "SAIL_BASE_URL": emulator.base_url},
    )
    assert code == 1 and "request #0 of job 'eval'" in err and "Traceback" not in err, err
    assert emulator.stats()["inference_runs"] == 0


def test_stored_params_are_data_not_keyword_arguments(tmp_path, emulator):
    path = tmp_path / "eval.db"
    pending_tokens_job(path)
    crafted = json.dumps(
        {"model": MODEL, "max_tokens": 4, "extra_headers": {"Authorization": "Bearer sk-crafted"}},
        sort_keys=True,
    )
    tamper(path, "UPDATE jobs SET params = ?", (crafted,))
    code, out, err = cli(
        "jobs",
        "resume",
        str(path),
        environ={"SAIL_API_KEY": emulator.api_key, "SAIL_BASE_URL": emulator.base_url},
    )
    assert code == 1 and "'extra_headers'" in err and "Traceback" not in err, err
    assert emulator.stats()["inference_runs"] == 0  # nothing reached the wire
    tamper(path, "UPDATE jobs SET params = ?", (json.dumps({"model": MODEL, "max_tokens": 4}),))
    tamper(
        path, "UPDATE requests SET item = ?", (json.dumps({"prompt_tokens": [1], "timeout": 0}),)
    )
    code, out, err = cli(
        "jobs",
        "resume",
        str(path),
        environ={"SAIL_API_KEY": emulator.api_key, "SAIL_BASE_URL": emulator.base_url},
    )
    assert code == 1 and "'timeout'" in err, err


def test_terminal_escapes_in_names_errors_and_codes_are_printed_escaped(tmp_path):
    path = tmp_path / "eval.db"
    evil = "\x1b]0;pwned\x07\x1b[2J"
    with Journal(path) as journal:
        journal.begin_job("job" + evil, kind="tokens", params={"model": MODEL}, total=1)
        journal.claim("job" + evil, [JournalEntry("k", "f", 0, "[1]")])
        from sail_lite.errors import BadRequestError

        journal.record_failure("k", BadRequestError("bad" + evil, status=400, code="c" + evil))
    code, out, err = cli("jobs", "status", str(path))
    assert code == 1
    assert "\x1b" not in out and "\x07" not in out and "\x1b" not in err
    assert "\\x1b]0;pwned\\x07" in out


def test_items_never_submitted_are_shown_counted_and_fail_the_exit_status(
    client, emulator, tmp_path
):
    path = str(tmp_path / "eval.db")
    prompts = [[1 + i % 7, i] for i in range(60)]
    with Journal(path) as journal:
        results = client.tokens.map(
            prompts, model=MODEL, max_tokens=2, journal=journal, job="eval", max_in_flight=4
        )
        next(results)  # a crash after the first result: the rest of the input never read
    code, out, err = cli("jobs", "status", path, "--json")
    summary = json.loads(out)
    job = summary["jobs"][0]
    recorded = sum(job["counts"].values())
    assert job["total"] == 60 and recorded < 60
    assert job["never_submitted"] == 60 - recorded
    assert job["unfinished"] >= job["never_submitted"] + job["counts"]["pending"]
    assert code == 1 and "never submitted" in err
    env = {"SAIL_API_KEY": emulator.api_key, "SAIL_BASE_URL": emulator.base_url}
    code, out, err = cli("jobs", "resume", path, environ=env)
    assert f"{60 - recorded} never submitted: run the job's script again" in out
    assert code == 1 and "never submitted" in err
    del results


def test_a_resume_that_fails_exits_1_and_says_what(emulator, tmp_path):
    path = tmp_path / "eval.db"
    pending_tokens_job(path)
    env = {"SAIL_API_KEY": "wrong", "SAIL_BASE_URL": emulator.base_url}
    code, out, err = cli("jobs", "resume", str(path), environ=env)
    last = err.splitlines()[-1]  # after the progress lines
    assert code == 1 and last == "sail-lite: error: not done: 1 request(s) not finished", err
    assert "AuthenticationError" in out  # what went wrong with the unfinished one
