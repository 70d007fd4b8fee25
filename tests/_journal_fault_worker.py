"""Writes journal records in a loop until the journal refuses one (tests/test_journal_faults.py).

``python -m tests._journal_fault_worker JOURNAL`` prints ``ready`` once 200 records are in, waits
for a line on stdin (the test does its damage meanwhile), then keeps recording; when a write raises, prints ``<ErrorClass> <committed>`` and exits 3 (4 for an
error that is not a JournalError). A SIGBUS would end it with no line at all.
"""

from __future__ import annotations

import sys

from sail_lite.journal import Journal, JournalEntry, JournalError


def main(path: str) -> int:
    committed = 0
    journal = Journal(path)
    try:
        journal.begin_job("faults", kind="custom", params={})
        for i in range(10**7):
            journal.claim("faults", [JournalEntry(f"k{i}", "f", i, "[1]")])
            journal.record_result(f"k{i}", {"i": i, "pad": "x" * 300})
            committed = i + 1
            if committed == 200:
                print("ready", flush=True)
                sys.stdin.readline()  # idle between records, as a job waiting on the network is
    except JournalError:
        print("JournalError", committed, flush=True)
        return 3
    except BaseException as exc:
        print(type(exc).__name__, committed, flush=True)
        return 4
    finally:
        journal.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
