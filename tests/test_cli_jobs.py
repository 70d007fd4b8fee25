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
