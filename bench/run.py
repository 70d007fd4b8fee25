"""Run every performance benchmark of issues 13 and 22 and print one table of goals, met or missed.

    python -m bench [--quick] [--only NAME ...] [--no-readme]   (or: python bench/run.py ...)

Each benchmark runs in its own interpreter (clean CPU and memory accounts),
with the emulator in yet another process (and the 20 ms link proxy,
``_link.py``, in a third): ``poll_delay.py``, ``client_cpu.py``,
``in_flight.py``, ``import_time.py``, ``webhook_delay.py`` (issue 23). Their own tables print as they finish;
then the summary table, whose ratios all come from this same run, cold (a
fresh client) and warm. A missed goal stays in the table, marked MISSED. The
table replaces the generated section of ``bench/README.md`` (between its
markers; ``--no-readme`` leaves it alone); the whole result (every cell, the
machine, the load average) goes to ``bench/results/<time>.json`` and
``bench/results/latest.json`` (git-ignored).

``--quick`` leaves out the long rows: turns longer than 5 s (the 30 s goal
cells and the sail SDK's 30 s cell are "skipped") and 10,000 in flight (it
runs 2,000 samples of 5 s turns instead); fewer samples and rounds. A couple
of minutes on 2 cores. Run it with a Python that has ``openai`` and
``sail-sdk==0.17.1`` installed to get their columns; without them those
cells are left out, not faked.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
from typing import Any, Dict, List, Optional, Sequence

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS = os.path.join(HERE, "results")
BENCHES = ("poll_delay", "client_cpu", "in_flight", "import_time", "webhook_delay")
README = os.path.join(HERE, "README.md")
BEGIN, END = (
    "<!-- bench table: begin (python -m bench writes this) -->",
    "<!-- bench table: end -->",
)
LOOPBACK, LINK = "loopback", "20 ms link"


def run_bench(name: str, quick: bool, folder: str) -> Optional[Dict[str, Any]]:
    path = os.path.join(folder, name + ".json")
    args = [sys.executable, os.path.join(HERE, name + ".py"), "--json", path] + (
        ["--quick"] if quick else []
    )
    print("\n$ python bench/{}.py{}".format(name, " --quick" if quick else ""), flush=True)
    started = time.perf_counter()
    code = subprocess.call(args)
    print(f"({name} took {time.perf_counter() - started:.0f} s)", flush=True)
    if code != 0 or not os.path.exists(path):
        print(f"{name} failed with exit code {code}")
        return None
    with open(path) as handle:
        return json.load(handle)


def find_cell(
    delay: Dict[str, Any],
    client: str,
    turn: float,
    spread: float,
    window: str,
    link: str = LOOPBACK,
) -> Optional[Dict[str, Any]]:
    for cell in delay.get("cells", []):
        if (cell["client"], cell["turn"], cell["spread"], cell["window"]) == (
            client,
            turn,
            spread,
            window,
        ) and cell.get("link", LOOPBACK) == link:
            return cell
    return None


class Table:
    def __init__(self) -> None:
        self.rows: List[Dict[str, Any]] = []

    def add(
        self,
        measurement: str,
        value: str,
        compared: str = "",
        goal: str = "",
        met: Optional[bool] = None,
        skipped: Optional[str] = None,
        what: str = "",
    ) -> None:
        verdict = skipped and "skipped" or ("" if met is None else ("met" if met else "MISSED"))
        self.rows.append(
            {
                "measurement": measurement,
                "sail_lite": skipped or value,
                "compared": compared,
                "goal": goal,
                "verdict": verdict,
                "what": what,
            }
        )

    def print(self) -> None:
        widths = [max(len(row[key]) for row in self.rows + [HEADER]) for key in KEYS]
        for row in [HEADER] + self.rows:
            print("  " + " | ".join(row[key].ljust(width) for key, width in zip(KEYS, widths)))

    def markdown(self) -> List[str]:
        keys = KEYS + ("what",)
        lines = ["| " + " | ".join(HEADER[key] for key in keys) + " |"]
        lines.append("|" + "---|" * len(keys))
        for row in self.rows:
            cells = [row[key].replace("|", "/") for key in keys]
            if row["verdict"] == "MISSED":
                cells[keys.index("verdict")] = "**MISSED**"
            lines.append("| " + " | ".join(cells) + " |")
        return lines


NOT_RUN: Dict[str, Any] = {}  # a benchmark left out with --only: no row, rather than "failed"
KEYS = ("measurement", "sail_lite", "compared", "goal", "verdict")
HEADER = {
    "measurement": "measurement",
    "sail_lite": "sail_lite",
    "compared": "compared with (same run)",
    "goal": "goal",
    "verdict": "met?",
    "what": "what it measures",
}
#: Issue 22's delay goals: (turn, spread, p90 limit).
DELAY_GOALS = ((0.05, 0.0, 0.06), (1.0, 0.0, 0.1), (5.0, 0.2, 0.5), (30.0, 0.0, 3.0))
DELAY_WHAT = "future done minus server terminal, p90; {}: {}; {} x {} waves per cell"


def cold_bound(turn: float) -> float:
    """Issue 22: polls per sample on a fresh client <= 1 + log1.5(turn / 0.1 s) (at least one poll)."""
    return max(1.0, 1.0 + math.log(turn / 0.1, 1.5))


def delay_goal_rows(table: Table, delay: Dict[str, Any], quick: bool, link: str) -> None:
    n, waves = delay.get("n", 0), delay.get("waves", 0)
    for turn, spread, limit in DELAY_GOALS:
        label = f"delay after a {turn:g} s turn{', +-20%' if spread else ''}, {link}"
        cell = find_cell(delay, "sail_lite", turn, spread, "balanced", link)
        goal = f"p90 <= {limit:g} s"
        if cell is None:
            why = "skipped (--quick)" if quick and turn > 5 else "no data"
            table.add(label + ", warm", "", goal=goal, skipped=why)
            continue
        naive = find_cell(delay, "naive 1 s", turn, spread, "balanced", link)
        for phase, stats in (("warm", cell["warm"]), ("cold", cell["cold"])):
            compared = ""
            if naive is not None:
                compared = f"naive 1 s: {naive[phase]['p90']:.2f} s, {naive[phase]['polls_mean']:.1f} polls"
            which = "waves 2+, same client" if phase == "warm" else "wave 1, a fresh client"
            table.add(
                f"{label}, {phase}",
                f"{stats['p90']:.3f} s p90 ({stats['polls_mean']:.1f} polls)",
                compared,
                goal,
                stats["p90"] <= limit,
                what=DELAY_WHAT.format(phase, which, n, waves),
            )
        bound = cold_bound(turn)
        table.add(
            f"polls per sample, cold, {turn:g} s turn{', +-20%' if spread else ''}, {link}",
            f"{cell['cold']['polls_mean']:.1f}",
            f"warm: {cell['warm']['polls_mean']:.1f}",
            f"<= 1 + log1.5(turn / 0.1 s) = {bound:.1f}",
            cell["cold"]["polls_mean"] <= bound,
            what="GETs per sample on a fresh client (wave 1), counted by the server, mean",
        )


def sdk_rows(table: Table, delay: Dict[str, Any], quick: bool) -> None:
    for turn, spread in ((5.0, 0.2), (30.0, 0.0)):
        label = (
            f"delay after a {turn:g} s turn{', +-20%' if spread else ''} vs the sail SDK completer"
        )
        ours = find_cell(delay, "sail_lite", turn, spread, "balanced")
        sdk = find_cell(delay, "sail SDK", turn, spread, "balanced")
        if ours is None or sdk is None:
            why = "skipped (--quick)" if quick and turn > 5 else "no data (sail-sdk missing?)"
            table.add(label, "", goal="p90 below the SDK's", skipped=why)
            continue
        mine, theirs = ours["warm"], sdk["all"]
        table.add(
            label,
            f"{mine['p90']:.2f} s p90, {mine['polls_mean']:.1f} polls",
            f"sail SDK: {theirs['p90']:.2f} s p90, {theirs['polls_mean']:.1f} polls "
            f"({theirs['p90'] / max(mine['p90'], 1e-9):.1f}x our delay)",
            "p90 below the SDK's",
            mine["p90"] < theirs["p90"],
            what="warm p90 delay, loopback; the SDK's own create + 20 s poll loop, every wave",
        )


def delay_rows(table: Table, delay: Optional[Dict[str, Any]], quick: bool) -> None:
    if delay is None:
        table.add("poll delay", "", skipped="benchmark failed")
        return
    for link in (LOOPBACK, LINK):
        delay_goal_rows(table, delay, quick, link)
    sdk_rows(table, delay, quick)
    mine = [c for c in delay["cells"] if c["client"] == "sail_lite"]
    good = [c for c in mine if c["warm"]["p90"] <= max(0.1 * c["turn"], 0.05)]
    naive_polls = [c["warm"]["polls_mean"] for c in delay["cells"] if c["client"] == "naive 1 s"]
    table.add(
        "cells with p90 delay <= max(10% of turn, 0.05 s)",
        f"{len(good)} of {len(mine)} (mean "
        f"{sum(c['warm']['polls_mean'] for c in mine) / max(len(mine), 1):.1f} polls/sample)",
        f"naive 1 s: mean {sum(naive_polls) / max(len(naive_polls), 1):.1f} polls/sample",
        "all cells",
        len(good) == len(mine) and bool(mine),
        what="every sail_lite cell (turns, +-20%, balanced and flex, both links), warm",
    )
    burst = delay.get("burst")
    if burst:
        table.add(
            f"{burst['n']} samples of 0.2 s turns at once: all done",
            f"{burst['best']:.3f} s best of 3",
            f"median {burst['median']:.3f} s",
            "<= 0.6 s",
            burst["best"] <= 0.6,
            what="seconds from the first submit until every future is done, loopback",
        )


def outcome(
    table: Table, results: Dict[str, Optional[Dict[str, Any]]], name: str, label: str
) -> Optional[Dict[str, Any]]:
    """``name``'s result; ``None`` with no row when it was left out (``--only``), or with a "failed" row."""
    result = results.get(name, NOT_RUN)
    if result is None:
        table.add(label, "", skipped="benchmark failed")
    return None if result is NOT_RUN else result


def flight_rows(table: Table, flight: Dict[str, Any], quick: bool) -> None:
    floor = flight.get("floor", {})
    best = floor.get("best", {})
    ratio = floor.get("ratio_to_floor_plus_turn", float("nan"))
    scale = " (goal is for 10,000 x 20 s)" if quick else ""
    table.add(
        f"{flight['count']:,} in flight, {flight['turn']:g} s turns: all done / (floor + turn)",
        f"{ratio:.2f} ({flight['seconds_to_all_done']:.1f} s)",
        f"floor {best.get('seconds', float('nan')):.1f} s ({best.get('threads', '?')} threads); "
        f"{flight['polls_per_sample']:.1f} polls/sample",
        "<= 1.15" + scale,
        ratio <= 1.15,
        what="first submit to last future done, over (a bare requests.Session pool's time to get "
        "the same creates accepted + the turn), loopback",
    )
    table.add(
        f"  threads while {flight['count']:,} in flight",
        f"{flight['threads_added']} added ({flight['peak_threads']} in the process)",
        "",
        "<= 32",
        flight["threads_added"] <= 32,
        what="peak live threads over the run, sampled every 50 ms, minus those before it",
    )
    table.add(
        f"  memory while {flight['count']:,} in flight",
        f"RSS +{flight['rss_growth_mb']:.0f} MB",
        "",
        "<= 150 MB",
        flight["rss_growth_mb"] <= 150,
        what="peak RSS over the run minus RSS before it",
    )


def cpu_rows(table: Table, cpu: Dict[str, Any]) -> None:
    rows, polled = cpu["clients"], cpu.get("polled", {})
    lite = rows["sail_lite"]
    others = ", ".join(
        f"{name} {row['cpu_ms']:.2f} ms ({row['ratio']:.2f}x)"
        for name, row in rows.items()
        if name != "sail_lite"
    )
    table.add(
        f"client CPU per sample, {cpu['in_flight']} in flight, one create each",
        f"{lite['cpu_ms']:.2f} ms = {lite['ratio']:.2f}x bare requests",
        others,
        "<= 0.8x bare requests",
        lite["ratio"] <= 0.8,
        what="process CPU (user + system, all threads) per sample, median of interleaved rounds",
    )
    if not polled:
        return
    mine, loop, sdk = polled["sail_lite"], polled["requests (bare)"], polled.get("openai SDK")
    table.add(
        f"client CPU per polled sample ({cpu['polled_turn']:g} s turns)",
        f"{mine['cpu_ms']:.2f} ms = {mine['ratio']:.2f}x the requests loop",
        f"requests.Session loop {loop['cpu_ms']:.2f} ms"
        + (f"; openai SDK {sdk['cpu_ms']:.2f} ms ({sdk['ratio']:.2f}x)" if sdk else ""),
        "<= 1.2x the loop and below the openai SDK",
        mine["ratio"] <= 1.2 and (sdk is None or mine["cpu_ms"] < sdk["cpu_ms"]),
        what="process CPU per sample (a create, then polls until done); the loops poll on "
        "sail_lite's own schedule",
    )
    for label, row in (("polled samples", mine), ("one create each", lite)):
        table.add(
            f"context switches per HTTP request, {label}",
            f"{row['switches_per_request']:.1f} ({row['voluntary_per_request']:.1f} voluntary)",
            f"requests loop: {(polled if row is mine else rows)['requests (bare)']['switches_per_request']:.1f}",
            "<= 4",
            row["switches_per_request"] <= 4,
            what="getrusage voluntary + involuntary switches of this process over the requests "
            "the emulator counted",
        )


def other_rows(table: Table, results: Dict[str, Optional[Dict[str, Any]]], quick: bool) -> None:
    flight = outcome(table, results, "in_flight", "in flight")
    if flight is not None:
        flight_rows(table, flight, quick)
    cpu = outcome(table, results, "client_cpu", "client CPU per sample")
    if cpu is not None:
        cpu_rows(table, cpu)
    imports = outcome(
        table, results, "import_time", "import sail_lite + first Client() vs import requests"
    )
    if imports is not None:
        # import sail_lite alone no longer imports requests: what a script pays is the import and its first Client.
        table.add(
            "import sail_lite + first Client() vs import requests",
            f"{imports['extra_with_client_ms']:+.1f} ms",
            f"requests alone {imports['median_ms']['requests']:.0f} ms (median of "
            f"{imports['rounds']}); import sail_lite alone {imports['extra_ms']:+.1f} ms",
            "<= +15 ms",
            imports["extra_with_client_ms"] <= 15.0,
            what="median of paired differences, fresh interpreters, interleaved rounds",
        )
    webhooks = outcome(table, results, "webhook_delay", "webhook delay")
    if webhooks is not None:
        webhook_rows(table, webhooks, quick)


def webhook_rows(table: Table, webhooks: Dict[str, Any], quick: bool) -> None:
    """Issue 23's webhook goals, one row per cell of ``webhook_delay.py``."""
    cells = {(c["turn"], c["drop"]): c for c in webhooks.get("cells", [])}
    for turn in (5.0, 30.0):
        for drop in (0.0, 0.1):
            cell = cells.get((turn, drop))
            label = f"webhook delay after a {turn:g} s turn" + (", 10% dropped" if drop else "")
            if cell is None:
                why = "skipped (--quick)" if quick and turn > 5 else "no data"
                table.add(label, "", goal="see webhook_delay.py", skipped=why)
                continue
            heard, limit = cell["delay"], 0.020 + cell["delivery"]["p90"]
            value = (
                f"{heard['p90'] * 1000:.1f} ms p90, {cell['requests_max']} requests max, "
                f"{cell['completed']}/{cell['n']} completed"
            )
            compared = f"delivery p90 {cell['delivery']['p90'] * 1000:.1f} ms"
            goal = "p90 <= 20 ms + delivery p90; <= 2 requests"
            met = heard["p90"] <= limit and cell["requests_max"] <= 2
            met = met and cell["completed"] == cell["n"]
            if drop:
                dropped = cell["dropped_delay"]
                compared += (
                    f"; {cell['dropped']} dropped: max delay {dropped['max']:.1f} s "
                    f"(bound {cell['dropped_bound']:.1f} s)"
                )
                goal = "nothing lost; dropped ones within the safety schedule"
                met = cell["completed"] == cell["n"] and (
                    not cell["dropped"] or dropped["max"] <= cell["dropped_bound"]
                )
            table.add(
                label,
                value,
                compared,
                goal,
                met,
                what="future done minus server terminal, p90 of delivered webhooks; requests "
                "counted by the server; receiver on loopback",
            )


def machine() -> Dict[str, Any]:
    info: Dict[str, Any] = {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "executable": sys.executable,
    }
    try:
        info["loadavg"] = os.getloadavg()
    except OSError:
        pass
    return info


def summary_line(before: Dict[str, Any], after: Dict[str, Any], quick: bool) -> str:
    load = ", ".join(f"{x:.1f}" for x in before.get("loadavg", ()))
    end = ", ".join(f"{x:.1f}" for x in after.get("loadavg", ()))
    return (
        f"{before['platform']}; {before['cpus']} cores, Python {before['python']}, load average "
        f"{load} at start, {end} at end{'; --quick' if quick else ''}"
    )


def write_readme(table: Table, line: str, started_at: str, quick: bool, path: str = README) -> None:
    """Replace the generated section of bench/README.md (between its markers) with this run's table."""
    command = "python -m bench" + (" --quick" if quick else "")
    section = [
        BEGIN,
        f"## Latest run: `{command}` ({started_at})",
        "",
        f"Machine: {line}. Ratios come from this one run; absolute times on a shared machine",
        "move by tens of percent between runs. Delay rows are on plain loopback and through",
        "`bench/_link.py` (20 ms each way, the handshake included). Missed goals are marked",
        "**MISSED**; rows left out by `--quick` say skipped.",
        "",
        *table.markdown(),
        END,
    ]
    try:
        with open(path) as handle:
            text = handle.read()
    except OSError:
        text = ""
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        text = head + "\n".join(section) + rest.split(END, 1)[1]
    else:
        title, _, body = text.partition("\n\n")
        text = f"{title}\n\n" + "\n".join(section) + f"\n\n{body}"
    with open(path, "w") as handle:
        handle.write(text)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--quick",
        action="store_true",
        help="leave out the long rows (30 s turns, 10,000 in flight)",
    )
    parser.add_argument("--only", nargs="+", choices=BENCHES, help="run only these benchmarks")
    parser.add_argument("--no-readme", action="store_true", help="do not rewrite bench/README.md")
    args = parser.parse_args(argv)
    started_at = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    before = machine()
    results: Dict[str, Optional[Dict[str, Any]]] = {}
    with tempfile.TemporaryDirectory() as folder:
        for name in args.only or BENCHES:
            results[name] = run_bench(name, args.quick, folder)
    table = Table()
    if "poll_delay" in results:
        delay_rows(table, results["poll_delay"], args.quick)
    other_rows(table, results, args.quick)
    line = summary_line(before, machine(), args.quick)
    print(f"\nSummary ({line}):")
    table.print()
    os.makedirs(RESULTS, exist_ok=True)
    record = {
        "started_at": started_at,
        "quick": args.quick,
        "machine": before,
        "summary": table.rows,
        "results": results,
    }
    name = started_at + ("-quick" if args.quick else "") + ".json"
    for target in (name, "latest.json"):
        with open(os.path.join(RESULTS, target), "w") as handle:
            json.dump(record, handle, indent=1)
    print(f"\nwrote bench/results/{name}")
    if not args.no_readme:
        write_readme(table, line, started_at, args.quick)
        print("rewrote the table in bench/README.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
