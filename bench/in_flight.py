"""Ten thousand samples in flight on one sail_lite client: threads, memory, and time to all done.

``--count`` samples (10,000) of ``--turn`` seconds (20) are submitted at once
with ``client.tokens.submit`` (default ``max_workers``) against the emulator
in its own process. Measured: seconds from the first submit until every
future is done; the peak number of live threads in this process (sampled
every 50 ms); RSS growth over the run (from /proc, sampled likewise); polls
per sample, counted by the server; when the last create was accepted.
``--quick`` runs 2,000 samples of 5 s turns instead.

The floor, in the same run: how long a bare ``requests.Session`` pool (16
and 32 threads, ``pool_block=True``; no polling, no futures, no retries)
takes to get the same creates (same body, an ``Idempotency-Key`` each)
accepted by a fresh emulator; the faster one counts. The goal (issue 22):
all done within 1.15 x (floor + turn).

    python bench/in_flight.py [--quick] [--count 10000] [--turn 20] [--json PATH]
"""

from __future__ import annotations

import os
import resource
import sys
import threading
import time
from concurrent.futures import wait as wait_futures
from typing import Any, Dict, Optional, Sequence

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(1, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import _report  # noqa: E402
from _emulator import EmulatorProcess  # noqa: E402
from _threads import threaded  # noqa: E402

MODEL = "moonshotai/Kimi-K2.6"


def rss_bytes() -> int:
    try:
        with open("/proc/self/statm") as handle:
            return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:  # not Linux: peak RSS is what there is
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def create_body(i: int, turn: float, window: str) -> Dict[str, Any]:
    """The create body sail_lite's ``tokens.submit`` sends for sample ``i``."""
    return {
        "model": MODEL,
        "input": "<raw token prompt; ignored when raw_prompt_tokens is set>",
        "raw_prompt_tokens": [1, 2, 3 + i % 1000, i // 1000],
        "max_output_tokens": 2,
        "temperature": 1.0,
        "top_p": 1.0,
        "background": True,
        "metadata": {"bench_turn": repr(turn), "completion_window": window},
    }


def probe_window(base_url: str, api_key: str) -> str:
    """``balanced``, or ``standard`` on an emulator with the older catalogue."""
    import requests

    probe = requests.post(
        base_url + "/responses",
        timeout=30,
        headers={"Authorization": "Bearer " + api_key},
        json=dict(
            model=MODEL, input="x", background=True, metadata={"completion_window": "balanced"}
        ),
    )
    return "balanced" if probe.status_code < 300 else "standard"


def floor(count: int, turn: float, threads: int) -> Dict[str, Any]:
    """A bare requests.Session pool, ``threads`` threads: seconds until ``count`` creates were accepted."""
    import requests

    with EmulatorProcess(hooks=True, turn=turn) as emu:
        session = requests.Session()
        session.mount(
            "http://", requests.adapters.HTTPAdapter(pool_maxsize=threads, pool_block=True)
        )
        url = emu.base_url + "/responses"
        auth = {"Authorization": "Bearer " + emu.api_key}
        window = probe_window(emu.base_url, emu.api_key)
        failures = []

        def create(i: int) -> None:
            headers = dict(auth, **{"Idempotency-Key": f"floor-{i}"})
            reply = session.post(
                url, json=create_body(i, turn, window), headers=headers, timeout=30
            )
            if reply.status_code >= 300:
                failures.append(reply.status_code)

        started = time.perf_counter()
        threaded(create, count, threads)
        elapsed = time.perf_counter() - started
        session.close()
    return {
        "threads": threads,
        "seconds": elapsed,
        "creates_per_s": count / elapsed,
        "failures": len(failures),
        "floor_ratio": (elapsed + turn) / turn,
    }


def measure(count: int, turn: float) -> Dict[str, Any]:
    result = measure_sail_lite(count, turn)
    references = [floor(count, turn, threads) for threads in (16, 32)]
    best = min(references, key=lambda row: row["seconds"])
    result["floor"] = {
        "runs": references,
        "best": best,
        "sail_lite_create_rate_vs_floor": result["creates_per_s"] / best["creates_per_s"],
        # the goal: all done within 1.15 x (floor + turn)
        "ratio_to_floor_plus_turn": result["seconds_to_all_done"] / (best["seconds"] + turn),
    }
    return result


class Monitor:
    """Samples this process's live threads and RSS every 50 ms, in a thread of its own."""

    def __init__(self) -> None:
        self.threads, self.rss = threading.active_count(), rss_bytes()
        self.baseline = (self.threads, self.rss)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            self.threads = max(self.threads, threading.active_count())
            self.rss = max(self.rss, rss_bytes())

    def __enter__(self) -> Monitor:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def submit_all(client: Any, count: int, turn: float, window: str) -> Dict[str, Any]:
    """Submit ``count`` samples at once; wait for all; the times they were accepted and done."""
    accepted: list = []
    done: list = []
    started = time.perf_counter()
    futures = []
    for i in range(count):
        future = client.tokens.submit(
            [1, 2, 3 + i % 1000, i // 1000],
            model=MODEL,
            max_tokens=2,
            logprobs=False,
            completion_window=window,
            metadata={"bench_turn": repr(turn)},
        )
        future.add_accepted_callback(lambda _f: accepted.append(time.perf_counter()))
        future.add_done_callback(lambda _f: done.append(time.perf_counter()))
        futures.append(future)
    submitted = time.perf_counter() - started
    wait_futures(futures)
    elapsed = time.perf_counter() - started
    failures = sum(1 for f in futures if f.exception() is not None)
    accepted.sort()
    done.sort()
    return {
        "started": started,
        "submitted": submitted,
        "elapsed": elapsed,
        "failures": failures,
        "accepted": [t - started for t in accepted],
        "done": [t - started for t in done],
    }


def measure_sail_lite(count: int, turn: float) -> Dict[str, Any]:
    from sail_lite import Client

    with EmulatorProcess(hooks=True, turn=turn) as emu:
        window = probe_window(emu.base_url, emu.api_key)
        client = Client(emu.api_key, base_url=emu.base_url, environ={})
        # Warm up threads, connections and imports on another window: a 0 s turn on the measured
        # (model, window) would teach the poller that its completions come at once, which no real
        # service does one sample before a 20 s batch.
        client.tokens.submit(
            [1, 2, 3],
            model=MODEL,
            max_tokens=2,
            completion_window="flex",
            metadata={"bench_turn": "0"},
        ).result()
        with Monitor() as monitor:
            run = submit_all(client, count, turn, window)
        client.close()
        stats = emu.stats()
    requests_seen = stats.get("requests", {})
    polls = requests_seen.get("GET /v1/responses/{id}", 0)
    accepted, done = run["accepted"], run["done"]
    last_accepted = accepted[-1] if accepted else float("nan")
    return {
        "count": count,
        "turn": turn,
        "window": window,
        "seconds_to_all_done": run["elapsed"],
        "ratio_to_turn": run["elapsed"] / turn,
        "submit_loop_seconds": run["submitted"],
        "peak_threads": monitor.threads,
        "threads_added": monitor.threads - monitor.baseline[0],
        "rss_growth_mb": (monitor.rss - monitor.baseline[1]) / 1e6,
        "polls_per_sample": polls / count,
        "creates": requests_seen.get("POST /v1/responses", 0),
        "failures": run["failures"],
        # Creates are accepted one by one; the last one's turn cannot end before it was accepted + turn.
        "last_create_accepted_s": last_accepted,
        "creates_per_s": len(accepted) / last_accepted if accepted else 0.0,
        "floor_ratio": (last_accepted + turn) / turn,
        "median_done_s": done[len(done) // 2] if done else float("nan"),
    }


def print_table(result: Dict[str, Any]) -> None:
    r = result
    print(
        f"{r['count']} in flight, {r['turn']} s turns ({r['window']}): all done in "
        f"{r['seconds_to_all_done']:.1f} s = {r['ratio_to_turn']:.2f}x the turn; peak "
        f"{r['peak_threads']} threads (+{r['threads_added']}); RSS +{r['rss_growth_mb']:.0f} MB; "
        f"{r['polls_per_sample']:.1f} polls/sample; {r['failures']} failures"
    )
    print(
        f"  creates: submit loop {r['submit_loop_seconds']:.1f} s, last create accepted at "
        f"{r['last_create_accepted_s']:.1f} s ({r['creates_per_s']:.0f} creates/s); median sample "
        f"done at {r['median_done_s']:.1f} s"
    )
    floor_ = r.get("floor")
    if floor_:
        runs = "; ".join(
            f"{row['threads']} threads: {r['count']} creates accepted in {row['seconds']:.1f} s "
            f"({row['creates_per_s']:.0f}/s)"
            for row in floor_["runs"]
        )
        print(
            f"  floor (a bare requests.Session pool, no polling; same run, fresh emulator): {runs}"
        )
        print(
            f"  all done / (floor + turn) = {floor_['ratio_to_floor_plus_turn']:.2f} (goal <= 1.15); "
            f"sail_lite's create rate is {floor_['sail_lite_create_rate_vs_floor']:.2f}x the floor's"
        )


def main(argv: Optional[Sequence[str]] = None) -> Dict[str, Any]:
    parser = _report.parser(__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--count", type=int)
    parser.add_argument("--turn", type=float)
    args = parser.parse_args(argv)
    count = args.count or (2000 if args.quick else 10000)
    turn = args.turn or (5.0 if args.quick else 20.0)
    return _report.report(measure(count, turn), print_table, args.json)


if __name__ == "__main__":
    main()
