"""Poll delay and polls per sample, by turn length: sail_lite vs a naive 1 s poller vs the sail SDK's completer.

"Delay" is the time from the moment a background response became terminal on
the server (``_bench_end_at``, the server's wall clock) to the moment the
client handed the result to its caller (same machine, same wall clock).
"Polls" is how many times the server was asked for that response (GET
/responses/{id}), counted by the server. The emulator runs in its own process
with bench hooks (``_server.py``): each request carries its own turn, fixed
or uniformly +-20%, so one emulator serves every cell.

Each cell (client, window, turn, fixed or random) runs ``--waves`` waves of
``--n`` samples submitted together; a wave starts when the previous one is
done, on the same client (sail_lite learns from what it saw: wave 1 is its
cold start, waves 2+ are "warm"; both are reported). Cells of one turn length
run together; turn lengths run one after the other, except that the long ones
(>= 20 s, light on CPU) run together.

The goal cells of issue 22 (balanced: 0.05 s, 1 s, 5 s +-20%, 30 s) also
run through ``_link.py``, a proxy adding 20 ms each way (the handshake
included), so a poll pays what it pays on a real network; ``--no-link``
leaves them out. Each cell reports cold (wave 1, a fresh client) and warm
(waves 2+) delay, and cold polls per sample against issue 22's bound
1 + log1.5(turn / 0.1 s).

Also measured: ``--burst`` samples (256) of 0.2 s turns submitted at once,
time until all are done (the issue's "256 concurrent awaits" without the
asyncio shim), best and median of 3 rounds on one client.

The official SDK's completer is ``sail.tinker.SailTokenCompleter``; it needs
tinker-cookbook for its return type only, so this runs its own two steps
verbatim instead: ``sail.inference.responses.create.aio(background=True,
...)`` then ``sail.tinker._poll_response_until_completed(...)`` (a fixed 20 s
interval after an immediate first retrieve, 1,200 s budget), on the balanced
window at 5 s +-20% and 30 s (the cells the summary compares), pointed at the emulator with ``SAIL_API_URL``.
Its delay depends on where the turn falls between two of its polls (a 20 s
turn is seen at once; a 21 s one 19 s late).

    python bench/poll_delay.py [--quick | --max-turn S] [--no-link] [--json PATH]
"""

from __future__ import annotations

import asyncio
import math
import os
import statistics
import sys
import threading
import time
from concurrent.futures import wait as wait_futures
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(1, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import _report  # noqa: E402
import requests  # noqa: E402
from _emulator import EmulatorProcess  # noqa: E402
from _link import Link  # noqa: E402

from sail_lite import Client  # noqa: E402

MODEL = "moonshotai/Kimi-K2.6"
PLACEHOLDER = "<raw token prompt; ignored when raw_prompt_tokens is set>"
TURNS = (0.05, 0.2, 1.0, 5.0, 20.0, 30.0, 60.0)
QUICK_MAX_TURN = 5.0
SPREADS = (0.0, 0.2)
WINDOWS = ("balanced", "flex")
SDK_WINDOW = "balanced"
SDK_CELLS = ((5.0, 0.2), (30.0, 0.0))  # the completer's default; it refuses asap
NAIVE_INTERVAL = 1.0
LOOPBACK = "loopback"
LINK = "20 ms link"
#: The goal cells (issue 22), also run over the 20 ms link: (turn, spread) on balanced.
LINK_CELLS = ((0.05, 0.0), (1.0, 0.0), (5.0, 0.2), (30.0, 0.0))
TERMINAL = ("completed", "incomplete", "failed", "cancelled", "canceled", "expired")


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100)."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    rank = max(1, int(-(-q * len(ordered) // 100)))
    return ordered[min(rank, len(ordered)) - 1]


def summary(delays: Sequence[float], polls: Sequence[float]) -> Dict[str, float]:
    return {
        "n": len(delays),
        "median": statistics.median(delays) if delays else float("nan"),
        "p90": percentile(delays, 90),
        "max": max(delays) if delays else float("nan"),
        "polls_mean": statistics.mean(polls) if polls else float("nan"),
    }


class Server:
    """The bench emulator, plus a bare session to read back ``_bench_end_at`` / ``_bench_polls``.

    ``url`` is the base URL the measured clients use: the emulator's, or a
    delay proxy's in front of it (``link``); read-backs go to the emulator.
    """

    def __init__(self, emulator: EmulatorProcess, url: str = "", link: str = LOOPBACK) -> None:
        self.emulator = emulator
        self.url = url or emulator.base_url
        self.link = link
        self.session = requests.Session()
        self.session.headers["Authorization"] = "Bearer " + emulator.api_key
        self.window_names: Dict[str, str] = {}

    def body(self, turn: float, spread: float, window: str, salt: int) -> Dict[str, Any]:
        return dict(
            model=MODEL,
            input=PLACEHOLDER,
            raw_prompt_tokens=[1, 2, 3 + salt % 1000],
            max_output_tokens=2,
            background=True,
            metadata=self.metadata(turn, spread, window),
        )

    def metadata(self, turn: float, spread: float, window: str) -> Dict[str, str]:
        return {
            "completion_window": self.window_names.get(window, window),
            "bench_turn": repr(turn),
            "bench_spread": repr(spread),
        }

    def resolve_windows(self, windows: Sequence[str]) -> Dict[str, str]:
        """The server's name for each window: today's catalogue first, then the older names."""
        fallbacks = {"balanced": ("balanced", "standard"), "flex": ("flex",)}
        for window in windows:
            for name in fallbacks.get(window, (window,)):
                reply = self.session.post(
                    self.emulator.base_url + "/responses",
                    timeout=30,
                    json=dict(
                        model=MODEL,
                        input=PLACEHOLDER,
                        raw_prompt_tokens=[1],
                        max_output_tokens=1,
                        background=True,
                        metadata={"completion_window": name, "bench_turn": "0"},
                    ),
                )
                if reply.status_code < 300:
                    self.window_names[window] = name
                    break
        return dict(self.window_names)

    def readback(self, response_id: str) -> Tuple[float, int]:
        """``(end_at, polls before this read)`` from the server."""
        body = self.session.get(
            self.emulator.base_url + "/responses/" + response_id, timeout=30
        ).json()
        return float(body["_bench_end_at"]), int(body["_bench_polls"]) - 1


# --- the clients -------------------------------------------------------------------------------------------


def run_sail_lite(
    server: Server, turn: float, spread: float, window: str, n: int, waves: int
) -> List[List[Tuple[float, int]]]:
    out: List[List[Tuple[float, int]]] = []
    emu = server.emulator
    with Client(
        emu.api_key, base_url=server.url, environ={}, max_workers=min(16, max(1, n))
    ) as client:
        for wave in range(waves):
            seen: Dict[int, float] = {}
            futures = []
            for i in range(n):
                future = client.tokens.submit(
                    [1, 2, 3 + (wave * n + i) % 1000],
                    model=MODEL,
                    max_tokens=2,
                    logprobs=False,
                    completion_window=server.window_names.get(window, window),
                    metadata={"bench_turn": repr(turn), "bench_spread": repr(spread)},
                )
                future.add_done_callback(lambda _f, i=i: seen.__setitem__(i, time.time()))  # noqa: B023
                futures.append(future)
            wait_futures(futures)
            rows = []
            for i, future in enumerate(futures):
                end_at, polls = server.readback(future.result().response_id)
                rows.append((seen[i] - end_at, polls))
            out.append(rows)
    return out


def run_naive(
    server: Server, turn: float, spread: float, window: str, n: int, waves: int
) -> List[List[Tuple[float, int]]]:
    """POST background, then every second GET until terminal: one thread per sample."""
    emu = server.emulator
    session = requests.Session()
    session.headers["Authorization"] = "Bearer " + emu.api_key
    adapter = requests.adapters.HTTPAdapter(pool_connections=n, pool_maxsize=n)
    session.mount("http://", adapter)
    out: List[List[Tuple[float, int]]] = []
    for wave in range(waves):
        rows: List[Optional[Tuple[float, int]]] = [None] * n

        def one(i: int) -> None:
            created = session.post(
                server.url + "/responses",
                json=server.body(turn, spread, window, wave * n + i),  # noqa: B023
                timeout=30,
            ).json()
            while True:
                time.sleep(NAIVE_INTERVAL)
                body = session.get(server.url + "/responses/" + created["id"], timeout=30).json()
                if body["status"] in TERMINAL:
                    break
            done = time.time()
            end_at, polls = server.readback(created["id"])
            rows[i] = (done - end_at, polls)  # noqa: B023

        threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        out.append([row for row in rows if row is not None])
    return out


def sdk_available() -> bool:
    try:
        import sail.inference  # noqa: F401
        import sail.tinker  # noqa: F401
    except ImportError:
        return False
    return hasattr(sail.tinker, "_poll_response_until_completed")


def run_sdk(
    server: Server, turn: float, spread: float, window: str, n: int, waves: int
) -> List[List[Tuple[float, int]]]:
    """The sail SDK completer's own create + poll, ``n`` concurrent awaits per wave."""
    import sail
    import sail.inference as inference
    from sail.tinker import _DEFAULT_POLL_TIMEOUT_SECONDS, _poll_response_until_completed

    emu = server.emulator
    os.environ["SAIL_API_KEY"], os.environ["SAIL_API_URL"] = emu.api_key, emu.url
    if hasattr(sail, "reset_transports"):
        sail.reset_transports()

    async def one(i: int) -> Tuple[str, float]:
        body = server.body(turn, spread, window, i)
        body.pop("background")
        created = await inference.responses.create.aio(background=True, **body)
        await _poll_response_until_completed(
            response_id=created["id"],
            voyage=None,
            timeout=None,
            poll_timeout=_DEFAULT_POLL_TIMEOUT_SECONDS,
        )
        return created["id"], time.time()

    async def wave_of(wave: int) -> List[Tuple[str, float]]:
        return await asyncio.gather(*(one(wave * n + i) for i in range(n)))

    out = []
    for wave in range(waves):
        done = asyncio.run(wave_of(wave))
        rows = []
        for response_id, seen in done:
            end_at, polls = server.readback(response_id)
            rows.append((seen - end_at, polls))
        out.append(rows)
    return out


def burst(server: Server, n: int, turn: float, rounds: int) -> Dict[str, Any]:
    """``n`` samples of ``turn`` submitted at once on one sail_lite client: seconds until all are done."""
    emu = server.emulator
    times = []
    with Client(emu.api_key, base_url=emu.base_url, environ={}) as client:
        for round_ in range(rounds):  # noqa: B007
            started = time.perf_counter()
            futures = [
                client.tokens.submit(
                    [1, 2, 3 + i],
                    model=MODEL,
                    max_tokens=2,
                    logprobs=False,
                    completion_window=server.window_names.get("balanced", "balanced"),
                    metadata={"bench_turn": repr(turn), "bench_spread": "0.0"},
                )
                for i in range(n)
            ]
            wait_futures(futures)
            times.append(time.perf_counter() - started)
            for future in futures:
                future.result()
    return {
        "n": n,
        "turn": turn,
        "rounds": times,
        "best": min(times),
        "median": statistics.median(times),
    }


# --- the run ----------------------------------------------------------------------------------------------

RUNNERS: Dict[str, Callable[..., List[List[Tuple[float, int]]]]] = {
    "sail_lite": run_sail_lite,
    "naive 1 s": run_naive,
    "sail SDK": run_sdk,
}


Cell = Tuple[str, float, float, str, str]  # client, turn, spread, window, link


def cells_for(turns: Sequence[float], sdk: bool, link: bool) -> List[Cell]:
    cells = [
        (client, turn, spread, window, LOOPBACK)
        for turn in turns
        for spread in SPREADS
        for window in WINDOWS
        for client in ("sail_lite", "naive 1 s")
    ]
    if sdk:  # only where the summary compares (its fixed 20 s interval makes every cell slow)
        cells += [
            ("sail SDK", turn, spread, SDK_WINDOW, LOOPBACK)
            for turn, spread in SDK_CELLS
            if turn in turns
        ]
    if link:
        cells += [
            ("sail_lite", turn, spread, "balanced", LINK)
            for turn, spread in LINK_CELLS
            if turn in turns
        ]
    return cells


def run_cells(
    servers: Dict[str, Server], cells: Sequence[Cell], n: int, waves: int
) -> List[Dict[str, Any]]:
    results: List[Dict[str, Any]] = []
    errors: List[str] = []

    def one(cell: Cell) -> None:
        client, turn, spread, window, link = cell
        try:
            by_wave = RUNNERS[client](servers[link], turn, spread, window, n, waves)
        except Exception as exc:  # a cell that fails is reported, not hidden
            errors.append(f"{client} {turn} s {window} {link}: {exc!r}")
            return
        every = [row for rows in by_wave for row in rows]
        warm = [row for rows in by_wave[1:] for row in rows] or every
        results.append(
            {
                "client": client,
                "turn": turn,
                "spread": spread,
                "window": window,
                "link": link,
                "all": summary([d for d, _ in every], [p for _, p in every]),
                "cold": summary([d for d, _ in by_wave[0]], [p for _, p in by_wave[0]]),
                "warm": summary([d for d, _ in warm], [p for _, p in warm]),
                "raw": by_wave,
            }
        )

    threads = [threading.Thread(target=one, args=(cell,)) for cell in cells]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for error in errors:
        print("  cell failed:", error)
    return results


def measure(
    max_turn: float, n: int, waves: int, burst_n: int, burst_only: bool = False, link: bool = True
) -> Dict[str, Any]:
    turns = [] if burst_only else [t for t in TURNS if t <= max_turn]
    sdk = sdk_available() and not burst_only
    if not sdk and not burst_only:
        print("(sail SDK not installed: pip install sail-sdk==0.17.1; its cells are skipped)")
    with EmulatorProcess(hooks=True, turn=0.0) as emulator, Link(emulator.base_url) as proxy:
        servers = {LOOPBACK: Server(emulator), LINK: Server(emulator, proxy.url, LINK)}
        names = servers[LOOPBACK].resolve_windows(WINDOWS)
        servers[LINK].window_names = dict(names)
        groups = [[t] for t in turns if t < 20] + [[t for t in turns if t >= 20]] if turns else []
        cells: List[Dict[str, Any]] = []
        for group in groups:
            if group:
                cells += run_cells(servers, cells_for(group, sdk, link), n, waves)
        burst_result = burst(servers[LOOPBACK], burst_n, 0.2, 3)
    cells.sort(key=lambda c: (c["link"], c["turn"], c["spread"], c["window"], c["client"]))
    return {
        "hooks": emulator.hooks,
        "window_names": names,
        "n": n,
        "waves": waves,
        "max_turn": max_turn,
        "link_delay": 0.02,
        "cells": cells,
        "burst": burst_result,
    }


def cold_bound(turn: float) -> float:
    """Issue 22's bound on polls per sample for a fresh client: 1 + log1.5(turn / 0.1 s), at least 1."""
    return max(1.0, 1.0 + math.log(turn / 0.1, 1.5))


def print_table(result: Dict[str, Any]) -> None:
    print(
        f"Poll delay after completion (s) and polls per sample; {result['waves']} waves x "
        f"{result['n']} samples per cell; cold = wave 1 on a fresh client, warm = waves 2+; "
        f"server windows {result['window_names']}"
    )
    head = ("client", "link", "turn", "+-", "window", "median", "p90", "max", "polls")
    print(
        "  {:<10} {:<10} {:>6} {:>5} {:<9} | warm {:>7} {:>7} {:>7} {:>6} | cold {:>7} {:>6} {:>6}".format(
            *head, "p90", "polls", "bound"
        )
    )
    for cell in result["cells"]:
        warm, cold = cell["warm"], cell["cold"]
        print(
            f"  {cell['client']:<10} {cell.get('link', LOOPBACK):<10} {cell['turn']:>6} "
            f"{cell['spread'] * 100:>4.0f}% {cell['window']:<9} | warm {warm['median']:7.3f} "
            f"{warm['p90']:7.3f} {warm['max']:7.3f} {warm['polls_mean']:6.1f} | cold "
            f"{cold['p90']:7.3f} {cold['polls_mean']:6.1f} {cold_bound(cell['turn']):6.1f}"
        )
    b = result["burst"]
    print(
        f"  burst: {b['n']} samples of {b['turn']} s turns submitted at once: all done in "
        f"{b['best']:.3f} s best, {b['median']:.3f} s median"
    )


def main(argv: Optional[Sequence[str]] = None) -> Dict[str, Any]:
    parser = _report.parser(__doc__)
    parser.add_argument("--quick", action="store_true", help="skip turns longer than 5 s")
    parser.add_argument("--max-turn", type=float, help="skip turns longer than this (seconds)")
    parser.add_argument("--n", type=int, default=8, help="samples per wave")
    parser.add_argument("--waves", type=int, default=3)
    parser.add_argument("--burst", type=int, default=256)
    parser.add_argument("--burst-only", action="store_true", help="only the burst of 0.2 s turns")
    parser.add_argument("--no-link", action="store_true", help="loopback only (no 20 ms link)")
    args = parser.parse_args(argv)
    max_turn = args.max_turn or (QUICK_MAX_TURN if args.quick else max(TURNS))
    result = measure(
        max_turn, args.n, args.waves, args.burst, args.burst_only, link=not args.no_link
    )
    return _report.report(result, print_table, args.json)


if __name__ == "__main__":
    main()
