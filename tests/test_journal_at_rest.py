"""The journal at rest: its files are private (0600) and hold no signed-URL query string."""

from __future__ import annotations

import os
import stat
import subprocess
import sys

from sail_lite import Journal
from sail_lite.jobs import summarize

from .conftest import make_client

MODEL = "moonshotai/Kimi-K2.6"
SIGNATURE = "SIGsecret0123456789abcdefSIG"
SIGNED_URL = (
    "https://storage.example.com/ckpt.tar?X-Goog-Signature=" + SIGNATURE + "&X-Goog-Expires=600"
)
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

WRITER = """
import os, sys
os.umask(0o022)
from sail_lite.journal import Journal, JournalEntry
with Journal(sys.argv[1]) as journal:
    journal.begin_job("exp", kind="custom", params={"t": 1})
    journal.claim("exp", [JournalEntry("k-%d" % i, "f", i, "[%d]" % i) for i in range(50)])
    for i in range(50):
        journal.record_result("k-%d" % i, {"i": i})
    print(sorted(os.listdir(os.path.dirname(sys.argv[1]))))
"""


def test_every_journal_file_is_0600_under_umask_022(tmp_path):
    path = tmp_path / "j.db"
    done = subprocess.run(
        [sys.executable, "-c", WRITER, str(path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    listed = eval(done.stdout)  # the folder while the journal was open: its rollback journal too
    assert {"j.db", "j.db-journal"} <= set(listed)
    for name in os.listdir(tmp_path):
        assert stat.S_IMODE(os.stat(tmp_path / name).st_mode) == 0o600, name


def test_reopening_an_old_world_readable_journal_makes_it_private(tmp_path):
    path = tmp_path / "j.db"
    with Journal(path):
        pass
    os.chmod(path, 0o644)
    with Journal(path) as journal:
        journal.begin_job("exp", kind="custom", params={})
        for name in os.listdir(tmp_path):
            assert stat.S_IMODE(os.stat(tmp_path / name).st_mode) == 0o600, name


def files_holding(folder, needle: bytes):
    found = []
    for name in os.listdir(folder):
        with open(os.path.join(folder, name), "rb") as handle:
            if needle in handle.read():
                found.append(name)
    return found


def test_no_signed_url_query_string_is_stored_in_any_column(emulator, tmp_path):
    path = tmp_path / "j.db"
    with make_client(emulator) as client, Journal(path) as journal:
        out = list(
            client.responses.map(
                ["hello", {"input": "world", "metadata": {"lora": SIGNED_URL}}, {"input": ""}],
                journal=journal,
                job="signed",
                model=MODEL,
                max_output_tokens=4,
                metadata={"lora": SIGNED_URL},
                return_exceptions=True,
            )
        )
        assert out[0].status == "completed"  # the server echoed the signed URL in its metadata
        # While open (the WAL holds every page written) and after close (checkpointed into the file).
        assert files_holding(tmp_path, SIGNATURE.encode()) == []
        assert files_holding(tmp_path, b"X-Goog-Expires") == []
    assert files_holding(tmp_path, SIGNATURE.encode()) == []
    assert summarize(path)["counts"]["completed"] == 2
    with Journal(path) as journal:
        kept = journal.rows("signed")
        assert all(SIGNATURE not in repr(row) for row in kept)
