"""Faults under a running journal, each in its own process: the file made immutable, deleted or
overwritten. Each is a typed JournalError at the next write (never a SIGBUS), and what was
committed before is kept."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from sail_lite.journal import Journal

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def start_worker(path):
    worker = subprocess.Popen(
        [sys.executable, "-m", "tests._journal_fault_worker", str(path)],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert worker.stdout.readline().strip() == "ready"
    return worker


def finish(worker):
    out, err = worker.communicate("go\n", timeout=60)
    return worker.returncode, out.split(), err


def chattr(flag, paths):
    return subprocess.run(["chattr", flag] + paths, capture_output=True).returncode == 0


def test_a_journal_made_immutable_mid_run_is_a_journal_error_not_sigbus(tmp_path):
    if shutil.which("chattr") is None:
        pytest.skip("chattr is not installed")
    probe = tmp_path / "probe"
    probe.write_text("x")
    if not chattr("+i", [str(probe)]):
        pytest.skip("chattr +i needs root on a filesystem that supports it")
    chattr("-i", [str(probe)])
    path = tmp_path / "j.db"
    worker = start_worker(path)
    files = [str(tmp_path / name) for name in os.listdir(tmp_path) if name.startswith("j.db")]
    try:
        assert chattr("+i", files)
        code, out, err = finish(worker)
    finally:
        chattr("-i", files)
    assert code == 3, (code, out, err[-2000:])  # -7 would be SIGBUS
    assert out[0] == "JournalError"
    with Journal(path) as journal:  # nothing committed before the fault was lost
        assert journal.counts("faults")["completed"] >= int(out[1]) >= 200


def test_a_journal_deleted_mid_run_is_a_journal_error_at_the_next_write(tmp_path):
    path = tmp_path / "j.db"
    worker = start_worker(path)
    os.unlink(path)
    code, out, err = finish(worker)
    assert code == 3 and out[0] == "JournalError", (code, out, err[-2000:])


def test_a_vanished_journal_warns_once_then_refuses_every_write(tmp_path, caplog):
    from sail_lite.journal import JournalEntry, JournalError

    path = tmp_path / "j.db"
    with Journal(path) as journal:
        journal.begin_job("exp", kind="custom", params={})
        os.unlink(path)
        for _ in range(2):
            with pytest.raises(JournalError, match="was deleted"):
                journal.claim("exp", [JournalEntry("k", "f", 0, "[1]")])
    warnings = [r for r in caplog.records if "was deleted" in r.getMessage()]
    assert len(warnings) == 1 and warnings[0].levelname == "WARNING"


def test_a_journal_overwritten_mid_run_is_a_journal_error_at_the_next_write(tmp_path):
    path = tmp_path / "j.db"
    worker = start_worker(path)
    with open(path, "r+b") as handle:
        handle.write(b"\0" * 8192)
    code, out, err = finish(worker)
    assert code == 3 and out[0] == "JournalError", (code, out, err[-2000:])
