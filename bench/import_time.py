"""What a script pays to start using sail_lite vs ``import requests``, in fresh interpreters, interleaved.

``import sail_lite`` does not import requests: the client (and requests with
it) loads on first use. So the figure that counts is ``import sail_lite``
plus the first ``Client(...)`` (no I/O: what a script pays before its first
call) against ``import requests``. Each round starts one interpreter for
each of ``import requests``, ``import sail_lite`` alone and ``import
sail_lite`` with the first ``Client(...)``, alternating, with the checkout's
``src`` on ``PYTHONPATH`` and byte-code caches warm (as after ``pip
install``). Medians over ``--rounds``. Then one ``python -X importtime -c
"import sail_lite.client"`` lists the modules sail_lite pulls in beyond
requests, by their own (self) import time: what to defer.

    python bench/import_time.py [--quick] [--rounds 21] [--json PATH]
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
from typing import Any, Dict, List, Optional, Sequence, Tuple

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _report  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CODE = "import time; t = time.perf_counter(); import {}; print(time.perf_counter() - t)"


def env() -> Dict[str, str]:
    values = dict(os.environ)
    values["PYTHONPATH"] = ROOT + os.pathsep + values.get("PYTHONPATH", "")
    values.pop("PYTHONPROFILEIMPORTTIME", None)
    # Byte-code caches as an installed package has them (pip compiles on install): without them
    # sail_lite would be compiled from source on every start while requests would not. The cache
    # goes under a prefix in the temp dir, not into the work tree.
    values.pop("PYTHONDONTWRITEBYTECODE", None)
    values["PYTHONPYCACHEPREFIX"] = os.path.join(tempfile.gettempdir(), "sail-lite-bench-pycache")
    return values


CLIENT = "sail_lite; sail_lite.Client('sk-bench', base_url='http://127.0.0.1:9/v1', environ={})"


def time_import(module: str) -> float:
    code = CODE.format(CLIENT if module == "client" else module)
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env=env(),
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return float(out.strip().splitlines()[-1])


def import_tree(module: str) -> List[Tuple[str, int, int]]:
    """``(module, self us, cumulative us)`` from ``-X importtime``."""
    err = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", "import " + module],
        cwd=ROOT,
        env=env(),
        check=True,
        capture_output=True,
        text=True,
    ).stderr
    rows = []
    for line in err.splitlines():
        if not line.startswith("import time:") or "imported package" in line:
            continue
        own, cumulative, name = line[len("import time:") :].split("|")
        rows.append((name.strip(), int(own), int(cumulative)))
    return rows


def measure(rounds: int) -> Dict[str, Any]:
    times: Dict[str, List[float]] = {"requests": [], "sail_lite": [], "client": []}
    for module in times:
        time_import(module)  # writes the byte-code caches; not counted
    for _ in range(rounds):
        for module in times:
            times[module].append(time_import(module))
    base = {name for name, _, _ in import_tree("requests")}
    extra = [
        (name, own, cumulative)
        for name, own, cumulative in import_tree("sail_lite.client")
        if name not in base
    ]
    extra.sort(key=lambda row: -row[1])
    medians = {module: statistics.median(values) * 1e3 for module, values in times.items()}
    # Paired by round: the machine's load drifts, and a round's two interpreters share it.
    paired = [(lite - bare) * 1e3 for lite, bare in zip(times["sail_lite"], times["requests"])]
    paired_client = [(lite - bare) * 1e3 for lite, bare in zip(times["client"], times["requests"])]
    return {
        "rounds": rounds,
        "median_ms": medians,
        "extra_ms": statistics.median(paired),
        "extra_with_client_ms": statistics.median(paired_client),
        "min_ms": {module: min(values) * 1e3 for module, values in times.items()},
        "samples_ms": {m: [v * 1e3 for v in values] for m, values in times.items()},
        "extra_modules": [
            {"module": n, "self_ms": o / 1e3, "cumulative_ms": c / 1e3} for n, o, c in extra
        ],
        "extra_modules_self_ms": sum(o for _, o, _ in extra) / 1e3,
    }


def print_table(result: Dict[str, Any]) -> None:
    m = result["median_ms"]
    print(
        "import time, fresh interpreters, {} interleaved rounds (median): import sail_lite + the first Client() "
        "{:.1f} ms, import requests {:.1f} ms: {:+.1f} ms (median of paired differences; fastest: {:.1f} vs "
        "{:.1f} ms)".format(
            result["rounds"],
            m["client"],
            m["requests"],
            result["extra_with_client_ms"],
            result["min_ms"]["client"],
            result["min_ms"]["requests"],
        )
    )
    print(
        "  import sail_lite alone: {:.1f} ms ({:+.1f} ms; requests loads with the first Client())".format(
            m["sail_lite"], result["extra_ms"]
        )
    )
    print(
        "  modules sail_lite adds beyond requests: {} (self time {:.1f} ms under -X importtime); the top 15:".format(
            len(result["extra_modules"]), result["extra_modules_self_ms"]
        )
    )
    for row in result["extra_modules"][:15]:
        print(
            "    {:<40} self {:6.2f} ms  cumulative {:6.2f} ms".format(
                row["module"], row["self_ms"], row["cumulative_ms"]
            )
        )


def main(argv: Optional[Sequence[str]] = None) -> Dict[str, Any]:
    parser = _report.parser(__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--rounds", type=int)
    args = parser.parse_args(argv)
    return _report.report(measure(args.rounds or (9 if args.quick else 21)), print_table, args.json)


if __name__ == "__main__":
    main()
