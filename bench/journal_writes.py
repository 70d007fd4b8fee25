"""How fast the Journal records, and why it shares one connection under a lock.

Prints, in one run: result records per second from 8 threads through (a) the
Journal (one connection, a lock) and (b) one sqlite3 connection per thread on
the same WAL file; and a whole journaled run_map (claim, accepted, result per
item) with synchronous=NORMAL vs FULL. Compare the ratios, not the absolute
numbers (the machine is shared).
"""

from __future__ import annotations

import os
import sqlite3
import sys
import tempfile
import threading
import time
from concurrent.futures import Future

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from sail_lite.journal import Journal, JournalEntry, encode_result  # noqa: E402
from sail_lite.pipeline import run_map  # noqa: E402

THREADS, PER_THREAD = 8, 500


def prepared(path: str) -> None:
    with Journal(path) as journal:
        journal.claim(
            "bench", [JournalEntry(f"k{i}", "f", i, "[]") for i in range(THREADS * PER_THREAD)]
        )


def shared_connection(path: str) -> float:
    with Journal(path) as journal:

        def work(n: int) -> None:
            for i in range(n, THREADS * PER_THREAD, THREADS):
                journal.record_result(f"k{i}", {"i": i})

        return timed(work)


def connection_per_thread(path: str) -> float:
    local = threading.local()

    def work(n: int) -> None:
        db = sqlite3.connect(path, timeout=30, isolation_level=None)
        db.execute("PRAGMA synchronous=NORMAL")
        local.db = db
        for i in range(n, THREADS * PER_THREAD, THREADS):
            db.execute("BEGIN IMMEDIATE")
            db.execute(
                "UPDATE requests SET status='completed', result=? WHERE key=?",
                (encode_result({"i": i}), f"k{i}"),
            )
            db.execute("COMMIT")
        db.close()

    return timed(work)


def timed(work) -> float:
    threads = [threading.Thread(target=work, args=(n,)) for n in range(THREADS)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return THREADS * PER_THREAD / (time.perf_counter() - start)


def whole_run(path: str, synchronous: str, n: int = 3000) -> float:
    def submit(item, key):
        future: Future = Future()
        future.set_result({"item": item})
        return future

    with Journal(path, synchronous=synchronous) as journal:
        start = time.perf_counter()
        for _ in run_map(range(n), submit=submit, journal=journal, job="bench"):
            pass
        return n / (time.perf_counter() - start)


def main() -> None:
    folder = tempfile.mkdtemp(prefix="journal-bench-", dir=os.environ.get("BENCH_DIR"))
    a, b = os.path.join(folder, "a.db"), os.path.join(folder, "b.db")
    prepared(a)
    prepared(b)
    shared = shared_connection(a)
    per_thread = connection_per_thread(b)
    print(
        f"{THREADS} threads, result records/s: one connection + lock {shared:.0f}, a connection per thread {per_thread:.0f} "
        f"(ratio {shared / per_thread:.2f})"
    )
    normal = whole_run(os.path.join(folder, "n.db"), "NORMAL")
    full = whole_run(os.path.join(folder, "f.db"), "FULL")
    print(
        f"journaled run_map items/s: synchronous=NORMAL {normal:.0f}, FULL {full:.0f} (ratio {normal / full:.1f})"
    )


if __name__ == "__main__":
    main()
