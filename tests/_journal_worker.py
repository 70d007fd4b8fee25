"""A journaled pipeline run as its own process, for the crash tests (tests/test_journal_crash.py).

``python -m tests._journal_worker BASE_URL API_KEY JOURNAL OUT N KILL [ON_INTERRUPT]`` samples N
prompts with ``map_tokens`` and a Journal, writes the results as JSON to OUT, and exits 0.
KILL makes it die on purpose at a precise point (``kind:K``, K counted from 1):

- ``submit:K``   SIGKILL right after the K-th create was handed to the client (creates in flight);
- ``accepted:K`` SIGKILL in the K-th accepted-callback, before its response id is journaled
                 (the server has the response, the journal does not know its id);
- ``result:K``   SIGKILL right after the K-th result was committed (mid-run);
- ``writing:K``  SIGKILL inside the K-th result's transaction, before COMMIT;
- ``sigint:K``   SIGINT (Ctrl-C) to itself after K results were consumed; exits 130;
- ``none``       run to the end.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading

from sail_lite import Client, PollPolicy, RetryPolicy
from sail_lite.journal import Journal, encode_result
from sail_lite.pipeline import map_tokens

MODEL = "moonshotai/Kimi-K2.6"


def prompts(n):
    # Every fifth prompt repeats: equal prompts must be distinct samples.
    return [[1 + (i % 5), 2 + i // 5, 3] if i % 5 else [7, 7, 7] for i in range(n)]


class _Counter:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.n = 0

    def hit(self) -> int:
        with self.lock:
            self.n += 1
            return self.n


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


class KillingJournal(Journal):
    def __init__(self, path: str, kind: str, at: int) -> None:
        super().__init__(path)
        self.kind, self.at, self.counter = kind, at, _Counter()

    def record_accepted(self, key: str, response_id: str) -> None:
        if self.kind == "accepted" and self.counter.hit() == self.at:
            _die()
        super().record_accepted(key, response_id)

    def record_result(self, key: str, result, response_id=None) -> None:
        if self.kind == "writing" and self.counter.hit() == self.at:
            with self._transaction() as db:
                db.execute(
                    "UPDATE requests SET status = 'completed', result = ? WHERE key = ?",
                    (encode_result(result), key),
                )
                _die()
        super().record_result(key, result, response_id)
        if self.kind == "result" and self.counter.hit() == self.at:
            _die()


def main(argv) -> int:
    base_url, api_key, journal_path, out_path, n, kill = argv[:6]
    on_interrupt = argv[6] if len(argv) > 6 else None
    kind, _, at = kill.partition(":")
    at_n = int(at or 0)
    client = Client(
        api_key,
        base_url=base_url,
        environ={},
        poll=PollPolicy(
            initial_interval=0.01,
            multiplier=1.5,
            default_max_interval=0.05,
            max_interval={"priority": 0.05},
        ),
        retry=RetryPolicy(initial_delay=0.01, max_delay=0.05),
    )
    journal = KillingJournal(journal_path, kind, at_n)
    submitted = _Counter()
    tokens = client.tokens
    original_submit = tokens.submit

    def submit(*args, **kwargs):
        future = original_submit(*args, **kwargs)
        if kind == "submit" and submitted.hit() == at_n:
            _die()
        return future

    tokens.submit = submit  # type: ignore[method-assign]
    results = []
    try:
        for result in map_tokens(
            client,
            prompts(int(n)),
            journal=journal,
            job="crash-test",
            model=MODEL,
            max_tokens=6,
            max_in_flight=8,
            on_interrupt=on_interrupt,
        ):
            results.append(
                [
                    list(result.tokens),
                    list(result.logprobs or ()),
                    result.stop_reason,
                    result.response_id,
                ]
            )
            if kind == "sigint" and len(results) == at_n:
                os.kill(os.getpid(), signal.SIGINT)
    except KeyboardInterrupt:
        journal.close()
        client.close()
        return 130
    with open(out_path + ".tmp", "w") as handle:
        json.dump(results, handle)
    os.replace(out_path + ".tmp", out_path)
    journal.close()
    client.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
