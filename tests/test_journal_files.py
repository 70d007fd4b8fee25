"""Which files the journal opens, and what it never writes: only a missing path becomes a journal;
anything else that is not one is refused with JournalError and left byte for byte as it was.
Bad arguments are typed errors at the call."""

from __future__ import annotations

import hashlib
import math
import os
import sqlite3
import subprocess
import sys

import pytest

from sail_lite.errors import InvalidRequestError
from sail_lite.jobs import summarize
from sail_lite.journal import Journal, JournalEntry, JournalError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def snapshot(folder):
    """Every file in ``folder`` (symlinks as their target path) and a hash of its bytes."""
    state = {}
    for name in sorted(os.listdir(folder)):
        full = os.path.join(folder, name)
        if os.path.islink(full):
            state[name] = "-> " + os.readlink(full)
        else:
            with open(full, "rb") as handle:
                state[name] = hashlib.sha256(handle.read()).hexdigest()
    return state


def cli(*argv):
    done = subprocess.run(
        [sys.executable, "-m", "sail_lite.cli"] + list(argv),
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={"PATH": os.environ.get("PATH", ""), "CI": "true"},
    )
    return done.returncode, done.stdout, done.stderr


def someone_elses_db(path):
    db = sqlite3.connect(str(path))
    db.execute("CREATE TABLE notes (id INTEGER PRIMARY KEY, text TEXT)")
    db.execute("INSERT INTO notes (text) VALUES ('mine')")
    db.commit()
    db.close()


def foreign_files(tmp_path):
    someone_elses_db(tmp_path / "other.db")
    (tmp_path / "empty.db").write_bytes(b"")
    os.symlink("other.db", tmp_path / "link-to-other.db")
    os.symlink("empty.db", tmp_path / "link-to-empty.db")
    os.symlink("nowhere.db", tmp_path / "dangling.db")
    old = sqlite3.connect(str(tmp_path / "schema99.db"))
    old.execute("CREATE TABLE meta (name TEXT PRIMARY KEY, value TEXT NOT NULL)")
    old.execute("INSERT INTO meta VALUES ('schema', '99')")
    old.commit()
    old.close()
    return [
        "other.db",
        "empty.db",
        "link-to-other.db",
        "link-to-empty.db",
        "dangling.db",
        "schema99.db",
    ]


def test_files_that_are_not_journals_are_refused_and_left_unchanged(tmp_path):
    names = foreign_files(tmp_path)
    before = snapshot(tmp_path)
    for name in names:
        with pytest.raises(JournalError, match="not a sail_lite journal|schema"):
            Journal(tmp_path / name)
        with pytest.raises(JournalError):
            Journal(tmp_path / name, read_only=True)
        with pytest.raises(JournalError):
            summarize(tmp_path / name)
    assert snapshot(tmp_path) == before  # no tables added, no WAL, no target created
    assert not os.path.exists(tmp_path / "nowhere.db")


def test_jobs_status_on_a_foreign_file_is_one_line_exit_1_and_writes_nothing(tmp_path):
    names = foreign_files(tmp_path)
    before = snapshot(tmp_path)
    for name in names:
        code, out, err = cli("jobs", "status", str(tmp_path / name))
        assert code == 1 and out == "", (name, code, out, err)
        assert err.startswith("sail-lite: error:") and err.count("\n") == 1, err
        assert "Traceback" not in err
    assert snapshot(tmp_path) == before


def test_jobs_status_never_writes_a_journal(tmp_path):
    path = tmp_path / "j.db"
    with Journal(path) as journal:
        journal.begin_job("exp", kind="custom", params={}, total=2)
        journal.claim("exp", [JournalEntry("k0", "f", 0, "[0]"), JournalEntry("k1", "f", 1, "[1]")])
        journal.record_result("k0", {"x": 1})
    before = snapshot(tmp_path)
    stamps = {n: os.stat(tmp_path / n).st_mtime_ns for n in os.listdir(tmp_path)}
    code, out, err = cli("jobs", "status", str(path))
    assert code == 1 and "exp" in out  # one request still pending
    assert snapshot(tmp_path) == before
    assert {n: os.stat(tmp_path / n).st_mtime_ns for n in os.listdir(tmp_path)} == stamps


def test_only_a_missing_path_becomes_a_journal(tmp_path):
    path = tmp_path / "new.db"
    with Journal(path) as journal:
        assert journal.jobs() == []
    assert path.read_bytes().startswith(b"SQLite format 3\0")
    assert [n for n in os.listdir(tmp_path) if n.startswith(".")] == []  # no temporary left
    with pytest.raises(JournalError, match="no journal"):
        Journal(tmp_path / "absent.db", read_only=True)
    assert not os.path.exists(tmp_path / "absent.db")


@pytest.mark.parametrize(
    "kwargs",
    [{"timeout": "x"}, {"timeout": -1}, {"timeout": math.nan}, {"timeout": math.inf}],
)
def test_bad_timeouts_are_typed_errors_before_any_file_is_made(tmp_path, kwargs):
    with pytest.raises(InvalidRequestError, match="timeout"):
        Journal(tmp_path / "j.db", **kwargs)
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("path", [None, 5, b"j.db", "", "a\0b.db"])
def test_bad_paths_are_typed_errors(path):
    with pytest.raises(InvalidRequestError):
        Journal(path)


def test_a_lone_surrogate_in_a_job_name_is_a_typed_error_at_the_call(tmp_path, client):
    with Journal(tmp_path / "j.db") as journal:
        with pytest.raises(InvalidRequestError, match="job"):
            journal.begin_job("eval-\ud800", kind="custom", params={})
        with pytest.raises(InvalidRequestError, match="job"):
            client.tokens.map([[1, 2]], journal=journal, job="eval-\ud800", model="m", max_tokens=1)
        assert journal.jobs() == []
