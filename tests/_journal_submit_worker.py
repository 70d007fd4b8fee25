"""Journaled ``tokens.submit`` calls in their own process, for tests/test_journal_submit.py.

``python -m tests._journal_submit_worker BASE_URL API_KEY JOURNAL KILL`` submits ``WORKER_PROMPTS``
one by one with a Journal (job ``crash-submit``), waits for every result and exits 0. ``KILL`` is
``accepted:K`` (SIGKILL in the K-th accepted-callback, before that response id is journaled: the
server has it, the journal does not) or ``none``.
"""

from __future__ import annotations

import sys

from sail_lite import Client, PollPolicy, RetryPolicy

from ._journal_worker import KillingJournal

# Defined here, not in the test module, so that the forkserver that preloads this module does not import
# pytest and the test helpers.
MODEL = "moonshotai/Kimi-K2.6"
WORKER_PROMPTS = [[1 + i % 3, 2 + i] if i % 3 else [7, 7] for i in range(8)]  # [7, 7] three times


def main(argv) -> int:
    base_url, api_key, journal_path, kill = argv[:4]
    kind, _, at = kill.partition(":")
    client = Client(
        api_key,
        base_url=base_url,
        environ={},
        poll=PollPolicy(
            initial_interval=0.01,
            multiplier=1.5,
            default_max_interval=0.05,
            max_interval={"balanced": 0.05},
        ),
        retry=RetryPolicy(initial_delay=0.01, max_delay=0.05),
    )
    with client, KillingJournal(journal_path, kind, int(at or 0)) as journal:
        futures = [
            client.tokens.submit(p, model=MODEL, max_tokens=4, journal=journal, job="crash-submit")
            for p in WORKER_PROMPTS
        ]
        for future in futures:
            future.result(30)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
