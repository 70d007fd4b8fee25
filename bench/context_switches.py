"""Context switches per HTTP request: ``python -m bench.context_switches [--requests 2000]``.

The emulator runs in a child process, so only the client's switches are counted: every thread
of this process (``resource.getrusage(RUSAGE_SELF)``, voluntary + involuntary) over N
``client.models.list()`` calls on one warm client, from one thread and from 8 (a thread pool). Goal (issue 22): <= 4 per request.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Tuple

import requests

from sail_lite import Client
from sail_lite.emulator.process import EmulatorProcess


def _switches() -> Tuple[int, int]:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_nvcsw, usage.ru_nivcsw


def _run(call: Callable[[], Any], requests: int, threads: int) -> None:
    if threads == 1:
        for _ in range(requests):
            call()
        return
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(lambda _: call(), range(requests)))


def _bare(emulator: EmulatorProcess, threads: int) -> Callable[[], Any]:
    """The same GET on a plain requests.Session (pool sized to the threads): the reference."""
    session = requests.Session()
    session.mount("http://", requests.adapters.HTTPAdapter(pool_maxsize=threads))
    headers = {"Authorization": f"Bearer {emulator.api_key}"}
    url = emulator.base_url + "/models"
    return lambda: session.get(url, headers=headers, timeout=(5, 30)).json()


def measure(requests: int, threads: int, bare: bool) -> dict:
    with EmulatorProcess() as emulator:
        with Client(emulator.api_key, base_url=emulator.base_url, environ={}) as client:
            call = _bare(emulator, threads) if bare else client.models.list
            _run(call, 100, threads)  # warm: connections open, modules loaded
            before, cpu, started = _switches(), time.process_time(), time.perf_counter()
            _run(call, requests, threads)
            elapsed, after = time.perf_counter() - started, _switches()
            cpu = time.process_time() - cpu
    return {
        "client": "bare requests.Session" if bare else "sail_lite",
        "requests": requests,
        "threads": threads,
        "cpu_ms_per_request": round(cpu * 1000 / requests, 3),
        "context_switches_per_request": round((sum(after) - sum(before)) / requests, 2),
        "voluntary": round((after[0] - before[0]) / requests, 2),
        "involuntary": round((after[1] - before[1]) / requests, 2),
        "ms_per_request": round(elapsed * 1000 / requests, 3),
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 8])
    args = parser.parse_args(argv)
    rows = [measure(args.requests, t, bare) for t in args.threads for bare in (False, True)]
    for row in rows:
        json.dump(row, sys.stdout)
        sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
