"""The README's Ray example, as written, on a 2-CPU local cluster: it finishes, and a killed actor costs nothing.

The example is read from README.rst and run by ``readme_example.py`` in a
child process (its own session, so that a hang ends with the whole process
group): prompts.parquet in, samples/ out, an emulator child process as the
server. The sampling SailSampler actors are SIGKILLed mid-batch; Ray
restarts them and retries their batches, which re-send the same keys. The emulator's counters then show
every row run exactly once.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest

pytest.importorskip("ray.data")

HARNESS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "readme_example.py")
ROWS = 2000
HANG_SECONDS = 240  # a run that has not finished by then is hung (the harness reports it)


def run_harness(*args: str) -> dict:
    """Run the harness; its last stdout line is the JSON summary. Kills its process group if it outlives the bound."""
    process = subprocess.Popen(
        [sys.executable, HARNESS, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # Ray's processes join this group; a hang ends with all of them
    )
    try:
        out, err = process.communicate(timeout=HANG_SECONDS + 90)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        out, err = process.communicate()
        pytest.fail(
            f"the README's Ray example did not end (harness killed)\n{out[-3000:]}\n{err[-3000:]}"
        )
    lines = out.strip().splitlines()
    try:
        summary = json.loads(lines[-1])
    except (IndexError, ValueError):
        pytest.fail(f"the harness failed (exit {process.returncode})\n{out[-3000:]}\n{err[-5000:]}")
    summary["stderr"] = err[-5000:]
    return summary


def test_the_readme_ray_example_finishes_on_two_cpus_and_killed_actors_run_nothing_twice():
    summary = run_harness("--kill", "--rows", str(ROWS), "--timeout", str(HANG_SECONDS))
    report = json.dumps({k: v for k, v in summary.items() if k != "stderr"})
    assert summary["hung"] is False, f"the example hung: {report}\n{summary['stderr']}"
    assert "error" not in summary, report  # e.g. a Ray deprecation warning, raised
    assert summary["deprecations"] == [], report  # the ones Ray only logs
    assert summary["killed_actors"], report  # the sampling actors did die mid-batch ...
    assert summary["creates"] > summary["inference_runs"], (
        report
    )  # ... and their batches re-sent keys
    assert summary["rows_out"] == ROWS and summary["rows_missing"] == 0, report
    assert summary["rows_duplicated"] == 0, report
    assert summary["distinct_response_ids"] == ROWS, report  # equal prompts, distinct samples
    assert summary["idempotency_keys"] == ROWS, report
    assert summary["keys_run_more_than_once"] == 0, report
    assert summary["inference_runs"] == ROWS, report
