"""``threaded``: the benchmarks' way to keep a fixed number of requests in flight from plain threads."""

from __future__ import annotations

import threading
from typing import Callable


def threaded(one: Callable[[int], None], samples: int, threads: int) -> None:
    """Call ``one(i)`` for ``i`` in ``range(samples)`` on ``threads`` threads, each taking the next ``i``."""
    counter = iter(range(samples))
    lock = threading.Lock()

    def loop() -> None:
        while True:
            with lock:
                i = next(counter, None)
            if i is None:
                return
            one(i)

    workers = [threading.Thread(target=loop) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
