"""Ten thousand samples in flight on one sail_lite client: threads, memory, and time to all done / turn.

``--count`` samples (10,000) of ``--turn`` seconds (20) are submitted at once
with ``client.tokens.submit`` (default ``max_workers``) against the emulator
in its own process. Measured: seconds from the first submit until every
future is done, divided by the turn (1.0 would be "no client overhead at
all"); the peak number of live threads in this process (sampled every 50
ms); RSS growth over the run (from /proc, sampled likewise); how long the
submits took to be created on the server; polls per sample, counted by the
server; when the last create was accepted (with the turn, a floor under the
ratio that no poll schedule can beat). ``--quick`` runs 2,000 samples of 5 s turns instead.

The reference, in the same run: how fast ANY client gets the same number of
background creates accepted by the emulator on this machine. A bare
``urllib3`` pool with 16 and with 32 threads (no polling, no futures, no
retries) sends the create body sail_lite sends, with an ``Idempotency-Key``
(so the server does the same work), each against a fresh emulator; the
faster one is the ceiling, and ``(its time to accept them all + turn) /
turn`` is the best "all done / turn" any client could reach here.

    python bench/in_flight.py [--quick] [--count 10000] [--turn 20] [--json PATH]
"""

from __future__ import annotations

import json
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


def ceiling(count: int, turn: float, threads: int) -> Dict[str, Any]:
    """Bare urllib3, ``threads`` threads: seconds until ``count`` background creates were all accepted."""
    import urllib3

    with EmulatorProcess(hooks=True, turn=turn) as emu:
        pool = urllib3.PoolManager(maxsize=threads)
        url = emu.base_url + "/responses"
        headers = {"Authorization": "Bearer " + emu.api_key, "Content-Type": "application/json"}
        window = "balanced"
        probe = pool.request(
            "POST",
            url,
            body=json.dumps(
                dict(
                    model=MODEL, input="x", background=True, metadata={"completion_window": window}
                )
            ).encode(),
            headers=headers,
        )
        if probe.status >= 300:
            window = "standard"
        failures = []

        def create(i: int) -> None:
            body = {
                "model": MODEL,
                "input": "<raw token prompt; ignored when raw_prompt_tokens is set>",
                "raw_prompt_tokens": [1, 2, 3 + i % 1000, i // 1000],
                "max_output_tokens": 2,
                "temperature": 1.0,
                "top_p": 1.0,
                "background": True,
                "metadata": {"bench_turn": repr(turn), "completion_window": window},
            }
            reply = pool.request(
                "POST",
                url,
                body=json.dumps(body).encode(),
                timeout=30.0,
                headers=dict(headers, **{"Idempotency-Key": f"ceiling-{i}"}),
            )
            if reply.status != 200:
                failures.append(reply.status)

        started = time.perf_counter()
        threaded(create, count, threads)
        elapsed = time.perf_counter() - started
        pool.clear()
    return {
        "threads": threads,
        "seconds": elapsed,
        "creates_per_s": count / elapsed,
        "failures": len(failures),
        "floor_ratio": (elapsed + turn) / turn,
    }


def measure(count: int, turn: float) -> Dict[str, Any]:
    result = measure_sail_lite(count, turn)
    references = [ceiling(count, turn, threads) for threads in (16, 32)]
    best = min(references, key=lambda row: row["seconds"])
    result["ceiling"] = {
        "runs": references,
        "best": best,
        "sail_lite_create_rate_vs_ceiling": result["creates_per_s"] / best["creates_per_s"],
    }
    return result


def measure_sail_lite(count: int, turn: float) -> Dict[str, Any]:
    from sail_lite import Client

    with EmulatorProcess(hooks=True, turn=turn) as emu:
        import requests

        window = "balanced"
        probe = requests.post(
            emu.base_url + "/responses",
            timeout=30,
            headers={"Authorization": "Bearer " + emu.api_key},
            json=dict(
                model=MODEL, input="x", background=True, metadata={"completion_window": window}
            ),
        )
        if probe.status_code >= 300:
            window = "standard"
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
        baseline_threads, baseline_rss = threading.active_count(), rss_bytes()
        peak = {"threads": baseline_threads, "rss": baseline_rss}
        stop = threading.Event()

        def monitor() -> None:
            while not stop.wait(0.05):
                peak["threads"] = max(peak["threads"], threading.active_count())
                peak["rss"] = max(peak["rss"], rss_bytes())

        watcher = threading.Thread(target=monitor, daemon=True)
        watcher.start()
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
        stop.set()
        watcher.join()
        failures = sum(1 for f in futures if f.exception() is not None)
        client.close()
        stats = emu.stats()
    polls = stats.get("requests", {}).get("GET /v1/responses/{id}", 0)
    accepted.sort()
    done.sort()
    last_accepted = (accepted[-1] - started) if accepted else float("nan")
    creates = stats.get("requests", {}).get("POST /v1/responses", 0)
    return {
        "count": count,
        "turn": turn,
        "window": window,
        "seconds_to_all_done": elapsed,
        "ratio_to_turn": elapsed / turn,
        "submit_loop_seconds": submitted,
        "peak_threads": peak["threads"],
        "threads_added": peak["threads"] - baseline_threads,
        "rss_growth_mb": (peak["rss"] - baseline_rss) / 1e6,
        "polls_per_sample": polls / count,
        "creates": creates,
        "failures": failures,
        # Creates are accepted one by one; the last one's turn cannot end before it was accepted + turn.
        "last_create_accepted_s": last_accepted,
        "creates_per_s": len(accepted) / last_accepted if accepted else 0.0,
        "floor_ratio": (last_accepted + turn) / turn,
        "median_done_s": (done[len(done) // 2] - started) if done else float("nan"),
    }


def print_table(result: Dict[str, Any]) -> None:
    print(
        "{count} in flight, {turn} s turns ({window}): all done in {seconds_to_all_done:.1f} s = "
        "{ratio_to_turn:.2f}x the turn; peak {peak_threads} threads (+{threads_added}); RSS +{rss_growth_mb:.0f} MB; "
        "{polls_per_sample:.1f} polls/sample; {failures} failures".format(**result)
    )
    print(
        "  creates: submit loop {submit_loop_seconds:.1f} s, last create accepted at {last_create_accepted_s:.1f} s "
        "({creates_per_s:.0f} creates/s), so all done cannot come before {floor_ratio:.2f}x the turn; "
        "median sample done at {median_done_s:.1f} s".format(**result)
    )
    ceiling_ = result.get("ceiling")
    if ceiling_:
        best = ceiling_["best"]
        print(
            "  ceiling (bare urllib3, no polling; same run, fresh emulator): "
            + "; ".join(
                "{threads} threads: {count} creates accepted in {seconds:.1f} s ({creates_per_s:.0f}/s)".format(
                    count=result["count"], **row
                )
                for row in ceiling_["runs"]
            )
        )
        print(
            "  so no client here can finish before {:.2f}x the turn; sail_lite's create rate is {:.2f}x the "
            "ceiling's".format(best["floor_ratio"], ceiling_["sail_lite_create_rate_vs_ceiling"])
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
