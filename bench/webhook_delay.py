"""Delay after completion and HTTP requests per sample with a WebhookReceiver on loopback (issue 23).

A sail_lite client given a ``WebhookReceiver`` submits ``--n`` background
samples of a 5 s and of a 30 s turn (``--quick``: 5 s only) against the
emulator, which delivers its completion webhooks to the receiver (real HTTP
on loopback). Two emulators run side by side, each in its own process: one
delivers every webhook, one drops 10% of them (``WebhookFault("drop",
rate=0.1)``: the delivery is never sent, nor retried).

Per sample, on one wall clock (same machine):

- ``delay``: the future done minus the moment the response became terminal
  on the server (``_bench_end_at``, bench/_server.py's hook);
- ``delivery``: the webhook's arrival at the receiver minus that moment
  (the emulator's delivery latency: its scheduler, its pool of 4 senders,
  the POST), and ``handling``: the future done minus the arrival (the
  receiver's reply, the confirming GET, settling the future);
- ``requests``: the create plus the GETs the server counted for it.

Goals: with every webhook delivered, p90 delay <= 20 ms + p90 delivery and
at most 2 requests per sample; with 10% dropped, every sample completes and
a dropped one is found by the safety schedule: its first poll
``PollPolicy.webhook_interval`` (60 s) after acceptance, so its delay is at
most about 60 s minus the turn.

    python bench/webhook_delay.py [--quick] [--n N] [--json PATH]
    python bench/webhook_delay.py --serve [--drop RATE]   (the emulator child)
"""

from __future__ import annotations

import os
import statistics
import sys
import threading
import time
from typing import Any, Dict, List, Optional, Sequence

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(1, os.path.dirname(HERE))

import _report  # noqa: E402

MODEL = "moonshotai/Kimi-K2.6"
TURNS = (5.0, 30.0)
QUICK_TURNS = (5.0,)
DROP = 0.1
#: The lossy emulator's fault seed: its first 20, 40 and 80 draws drop 2, 5 and 9 (about 10%).
DROP_SEED = 3
HANDLING_GOAL = 0.020  # seconds over the emulator's delivery latency, p90
SPACING = 0.05  # seconds between two submits of a cell: no artificial burst of deliveries


def serve(drop: float, seed: int) -> int:
    """The emulator child: bench hooks (per-request turns, ``_bench_end_at``) and webhooks sent when
    the hooked turn ends (the hook sets the turn after the create, so the webhook is scheduled after
    it too), ``drop`` of them lost."""
    from _server import install_hooks

    from sail_lite.emulator import TURN_PRESETS, EmulatorServer, WebhookFault
    from sail_lite.emulator.__main__ import announce_and_serve

    server = EmulatorServer(port=0, seed=seed, turn_times={w: 0.0 for w in TURN_PRESETS["fast"]})
    state = server.state
    schedule_webhook, state.on_create = state.on_create, None
    hooks = install_hooks(state, seed)
    create = state.create_response

    def create_response(*args: Any, **kwargs: Any) -> Any:
        record = create(*args, **kwargs)
        if schedule_webhook is not None:
            schedule_webhook(record)
        return record

    state.create_response = create_response
    server.start()
    if drop:
        server.add_webhook_fault(WebhookFault("drop", rate=drop, seed=seed))
    return announce_and_serve(server, sys.stdout, extra=[f"bench hooks: {hooks}; drop {drop}"])


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    rank = max(1, int(-(-q * len(ordered) // 100)))
    return ordered[min(rank, len(ordered)) - 1]


def stats(values: Sequence[float]) -> Dict[str, float]:
    return {
        "n": len(values),
        "median": statistics.median(values) if values else float("nan"),
        "p90": percentile(values, 90),
        "max": max(values) if values else float("nan"),
    }


def run_cell(emulator: Any, turn: float, n: int, drop: float) -> Dict[str, Any]:
    """``n`` samples of ``turn`` on a fresh client with its own receiver; per-sample timings."""
    import requests

    from sail_lite import Client, PollPolicy
    from sail_lite.webhooks import WebhookReceiver

    arrivals: Dict[str, float] = {}

    class TimedReceiver(WebhookReceiver):
        def claim(self, response_id: str, response: Any) -> Any:
            arrivals.setdefault(response_id, time.time())
            return super().claim(response_id, response)

    done: Dict[int, float] = {}
    policy = PollPolicy()
    with TimedReceiver() as receiver, Client(
        emulator.api_key, base_url=emulator.base_url, environ={}, webhooks=receiver, poll=policy
    ) as client:
        futures = []
        for i in range(n):
            future = client.tokens.submit(
                [1, 2, 3 + i],
                model=MODEL,
                max_tokens=2,
                logprobs=False,
                completion_window="balanced",
                metadata={"bench_turn": repr(turn), "bench_spread": "0.0"},
            )
            future.add_done_callback(lambda _f, i=i: done.__setitem__(i, time.time()))  # noqa: B023
            futures.append(future)
            time.sleep(SPACING)
        results, errors = [], []
        for future in futures:
            try:
                results.append(future.result())
            except Exception as exc:  # a lost sample is reported, not hidden
                errors.append(repr(exc))
    session = requests.Session()
    session.headers["Authorization"] = "Bearer " + emulator.api_key
    rows = []
    for i, future in enumerate(futures):
        if future.exception() is not None:
            continue
        body = session.get(
            emulator.base_url + "/responses/" + future.response_id, timeout=30
        ).json()
        end_at, polls = float(body["_bench_end_at"]), int(body["_bench_polls"]) - 1
        arrived = arrivals.get(future.response_id)
        rows.append(
            {
                "delay": done[i] - end_at,
                "delivery": None if arrived is None else arrived - end_at,
                "handling": None if arrived is None else done[i] - arrived,
                "requests": 1 + polls,
            }
        )
    return summarize(turn, n, drop, rows, errors, policy.webhook_interval)


def summarize(
    turn: float, n: int, drop: float, rows: List[Dict[str, Any]], errors: List[str], safety: float
) -> Dict[str, Any]:
    heard = [r for r in rows if r["delivery"] is not None]
    dropped = [r for r in rows if r["delivery"] is None]
    return {
        "turn": turn,
        "drop": drop,
        "n": n,
        "completed": len(rows),
        "errors": errors,
        "webhook_interval": safety,
        "delay": stats([r["delay"] for r in heard]),
        "delivery": stats([r["delivery"] for r in heard]),
        "handling": stats([r["handling"] for r in heard]),
        "requests_max": max((r["requests"] for r in heard), default=0),
        "requests_mean": statistics.mean(r["requests"] for r in rows) if rows else float("nan"),
        "dropped": len(dropped),
        "dropped_delay": stats([r["delay"] for r in dropped]),
        "dropped_bound": safety - turn + 1.0,  # the first safety poll, plus a second of slack
        "rows": rows,
    }


def measure(turns: Sequence[float], n: int) -> Dict[str, Any]:
    from sail_lite.emulator import EmulatorProcess

    command = [sys.executable, os.path.abspath(__file__), "--serve"]
    cells: List[Dict[str, Any]] = []
    failures: List[str] = []
    with EmulatorProcess(command=command) as clean, EmulatorProcess(
        command=command + ["--drop", repr(DROP), "--seed", str(DROP_SEED)]
    ) as lossy:

        def one(emulator: Any, turn: float, drop: float) -> None:
            try:
                cells.append(run_cell(emulator, turn, n, drop))
            except Exception as exc:  # a cell that fails is reported, not hidden
                failures.append(f"{turn} s, drop {drop}: {exc!r}")

        threads = [
            threading.Thread(target=one, args=(emulator, turn, drop))
            for emulator, drop in ((clean, 0.0), (lossy, DROP))
            for turn in turns
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    cells.sort(key=lambda c: (c["drop"], c["turn"]))
    return {"n": n, "turns": list(turns), "cells": cells, "failures": failures}


def print_table(result: Dict[str, Any]) -> None:
    print(
        f"Webhook delay (s) after completion, {result['n']} samples per cell, receiver on loopback; "
        "delivery = the emulator's latency, handling = ours (arrival to future done)"
    )
    print(
        "  {:>5} {:>5} | {:>9} {:>7} {:>7} | {:>8} {:>8} | {:>8} {:>8} | {:>4} {:>5} | dropped".format(
            "turn",
            "drop",
            "completed",
            "delay50",
            "delay90",
            "deliv90",
            "handl90",
            "handlmax",
            "goal90",
            "reqs",
            "mean",
        )
    )
    for c in result["cells"]:
        goal = HANDLING_GOAL + c["delivery"]["p90"]
        dropped = (
            f"{c['dropped']} (max delay {c['dropped_delay']['max']:.2f} s, bound "
            f"{c['dropped_bound']:.1f} s)"
            if c["dropped"]
            else "0"
        )
        print(
            f"  {c['turn']:>5g} {c['drop']:>5g} | {c['completed']:>4}/{c['n']:<4} "
            f"{c['delay']['median']:7.3f} {c['delay']['p90']:7.3f} | {c['delivery']['p90']:8.4f} "
            f"{c['handling']['p90']:8.4f} | {c['handling']['max']:8.4f} {goal:8.4f} | "
            f"{c['requests_max']:>4} {c['requests_mean']:5.2f} | {dropped}"
        )
    for failure in result["failures"]:
        print("  cell failed:", failure)


def main(argv: Optional[Sequence[str]] = None) -> Dict[str, Any]:
    parser = _report.parser(__doc__)
    parser.add_argument("--quick", action="store_true", help="the 5 s turn only")
    parser.add_argument("--n", type=int, default=40, help="samples per cell")
    parser.add_argument("--serve", action="store_true", help="run the emulator child")
    parser.add_argument("--drop", type=float, default=0.0, help="with --serve: webhooks dropped")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.serve:
        sys.exit(serve(args.drop, args.seed))
    result = measure(QUICK_TURNS if args.quick else TURNS, args.n)
    return _report.report(result, print_table, args.json)


if __name__ == "__main__":
    main()
