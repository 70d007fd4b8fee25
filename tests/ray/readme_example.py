"""Run README.rst's Ray example as written: a 2-CPU local cluster, an emulator process, parquet in and out.

``PYTHONPATH=$PWD python tests/ray/readme_example.py [--kill] [--rows N] [--timeout S]``

The example's code block is read from README.rst (not copied) and executed
in a scratch directory holding ``prompts.parquet``; it must leave
``samples/`` behind. ``SAIL_API_KEY`` / ``SAIL_BASE_URL`` point at an
emulator child process, which counts inference runs per idempotency key.
Ray's deprecation warnings are errors (the ``warnings`` ones raise, the
logged ones are collected and reported). With ``--kill``, the SailSampler
actors that are sampling are SIGKILLed mid-batch (see :class:`ActorKiller`). A run that does not
finish within ``--timeout`` is reported as hung, with the cluster's free
resources, and ends the process. The last line printed is a JSON summary.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import tempfile
import textwrap
import threading
import time
import warnings
from typing import Any, Dict, List, Optional, Set

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
README = os.path.join(ROOT, "README.rst")
TURN_SECONDS = 0.3  # each sample takes this long on the emulator, so an actor can die mid-batch
COPIES = 3  # each prompt sampled three times (the example's sample_index column)


def readme_ray_example(path: str = README) -> str:
    """The first ``.. code-block:: python`` after the README's "**On Ray.**" paragraph, dedented."""
    with open(path, encoding="utf-8") as handle:
        text = handle.read()
    rest = text[text.index("**On Ray.**") :]
    block = rest.split(".. code-block:: python\n\n", 1)[1]
    lines = []
    for line in block.splitlines():
        if line and not line.startswith("    "):
            break
        lines.append(line)
    return textwrap.dedent("\n".join(lines)).strip() + "\n"


def write_prompts(path: str, rows: int, files: int = 6) -> None:
    """``rows`` rows (``row``, ``prompt_tokens``: each prompt COPIES times, ``sample_index``).

    ``path`` is a directory of ``files`` parquet files (as Spark and Ray write a
    dataset), so that Ray reads several blocks and every actor has work.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    os.mkdir(path)
    per_file = -(-rows // files)
    for first in range(0, rows, per_file):
        numbers = range(first, min(rows, first + per_file))
        table = pa.table(
            {
                "row": list(numbers),
                "prompt_tokens": [[1 + i // COPIES, 2, 3] for i in numbers],
                "sample_index": [i % COPIES for i in numbers],
            }
        )
        pq.write_table(table, os.path.join(path, f"part-{first:06d}.parquet"))


class DeprecationLog(logging.Handler):
    """Collects what Ray logs about deprecations (``concurrency`` is deprecated through a log line)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: List[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if "deprecat" in message.lower():
            self.messages.append(message)


def descendants(root: int) -> Set[int]:
    """Every process under ``root`` (``/proc/PID/stat`` parent links): this run's Ray workers."""
    parents: Dict[int, int] = {}
    for name in os.listdir("/proc"):
        try:
            with open(f"/proc/{name}/stat", encoding="utf-8", errors="replace") as handle:
                # "pid (comm) state ppid ...": comm may hold spaces and parentheses
                parents[int(name)] = int(handle.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):  # not a process, or gone meanwhile
            continue
    found: Set[int] = set()
    frontier = {root}
    while frontier:
        frontier = {pid for pid, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def sampler_pids() -> List[int]:
    """This run's processes whose title names a SailSampler actor (``ray::MapWorker(...SailSampler...)``)."""
    pids = []
    for pid in descendants(os.getpid()):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as handle:
                title = handle.read().replace(b"\0", b" ")
        except OSError:  # gone meanwhile
            continue
        if title.startswith(b"ray::") and b"SailSampler" in title:
            pids.append(pid)
    return sorted(pids)


def sockets_to(port: int) -> Set[str]:
    """Inodes of the loopback TCP sockets connected to ``port`` (``/proc/net/tcp``, ``tcp6``)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table, encoding="ascii") as handle:
                rows = handle.read().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            fields = row.split()
            if int(fields[2].rsplit(":", 1)[1], 16) == port:
                inodes.add(fields[9])
    return inodes


def busy_sampler_pids(port: int) -> List[int]:
    """The SailSampler actor processes holding a connection to the emulator: the ones sampling now."""
    inodes = sockets_to(port)
    busy = []
    for pid in sampler_pids():
        try:
            links = [os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")]
        except OSError:
            continue
        if any(
            link[len("socket:[") : -1] in inodes for link in links if link.startswith("socket:")
        ):
            busy.append(pid)
    return busy


class ActorKiller(threading.Thread):
    """SIGKILLs the sampling SailSampler actors, once, mid-batch.

    It waits until the emulator has run ``after_runs`` inferences and has
    responses still running (so some batch is in the middle of sampling),
    then kills every actor process connected to the emulator: whichever
    batch those responses belong to dies with its actor and is retried.
    """

    def __init__(self, emulator: Any, after_runs: int) -> None:
        super().__init__(daemon=True)
        self.emulator = emulator
        self.port = int(emulator.url.rsplit(":", 1)[1].strip("/"))
        self.after_runs = after_runs
        self.killed: List[int] = []
        self.runs_at_kill: Optional[int] = None
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(0.05):
            try:
                stats = self.emulator.stats()
            except OSError:  # the emulator is gone: the run is over
                return
            running = sum(stats["responses"].get(s, 0) for s in ("queued", "in_progress"))
            if stats["inference_runs"] < self.after_runs or not running:
                continue
            pids = busy_sampler_pids(self.port)
            if pids:
                for pid in pids:
                    os.kill(pid, signal.SIGKILL)
                self.killed, self.runs_at_kill = pids, stats["inference_runs"]
                return


def watchdog(seconds: float, emulator: Any, summary: Dict[str, Any]) -> threading.Timer:
    """After ``seconds``: print the summary marked hung (with Ray's free resources) and end the process."""
    import ray

    def fire() -> None:
        summary.update(
            hung=True,
            seconds=round(time.monotonic() - summary.pop("started"), 1),
            inference_runs=emulator.stats()["inference_runs"],
            available_resources=ray.available_resources(),
            sampler_actor_processes=len(sampler_pids()),
        )
        print(json.dumps(summary, default=str), flush=True)
        emulator.stop()  # os._exit skips the with-block that would
        os._exit(3)  # the example is blocked inside Ray: nothing short of this ends it

    timer = threading.Timer(seconds, fire)
    timer.daemon = True
    timer.start()
    return timer


def check_output(workdir: str, rows: int, emulator: Any) -> Dict[str, Any]:
    """What came out (``samples/``) against what went in, and what the emulator ran."""
    import pyarrow.parquet as pq

    table = pq.read_table(os.path.join(workdir, "samples"))
    out_rows = table.column("row").to_pylist()
    stats = emulator.stats()
    by_key = stats["inference_runs_by_idempotency_key"]
    return {
        "rows_in": rows,
        "rows_out": len(out_rows),
        "rows_missing": len(set(range(rows)) - set(out_rows)),
        "rows_duplicated": len(out_rows) - len(set(out_rows)),
        "distinct_response_ids": len(set(table.column("response_id").to_pylist())),
        "inference_runs": stats["inference_runs"],
        # more creates than runs: a retried batch re-sent keys and the server replayed them
        "creates": stats["requests"].get("POST /v1/responses", 0),
        "idempotency_keys": len(by_key),
        "keys_run_more_than_once": sum(1 for n in by_key.values() if n > 1),
    }


def run_example(code: str, workdir: str, *, timeout: float, kill: bool, rows: int) -> Dict:
    """Execute ``code`` in ``workdir`` on a 2-CPU local cluster against an emulator child process."""
    import ray

    from sail_lite.emulator import EmulatorProcess

    windows = {w: TURN_SECONDS for w in ("asap", "priority", "balanced", "standard", "flex")}
    deprecations = DeprecationLog()
    logging.getLogger("ray").addHandler(deprecations)
    with EmulatorProcess(turn_times=windows) as emulator:
        os.environ.update(SAIL_API_KEY=emulator.api_key, SAIL_BASE_URL=emulator.base_url)
        path = [ROOT, os.environ.get("PYTHONPATH", "")]
        os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, path))
        os.chdir(workdir)  # before ray.init: Ray's workers start in the driver's directory
        ray.init(num_cpus=2, include_dashboard=False)
        ray.data.DataContext.get_current().enable_progress_bars = False
        summary: Dict[str, Any] = {"ray": ray.__version__, "started": time.monotonic()}
        killer = ActorKiller(emulator, after_runs=rows // 4)
        if kill:
            killer.start()
        timer = watchdog(timeout, emulator, summary)
        try:
            exec(compile(code, "README.rst (On Ray)", "exec"), {"__name__": "__readme__"})
        except Exception as exc:  # reported in the summary, with what the emulator ran
            summary["error"] = f"{type(exc).__name__}: {exc}"
        finally:
            timer.cancel()
            killer.done.set()
        summary.update(seconds=round(time.monotonic() - summary.pop("started"), 1), hung=False)
        if "error" not in summary:
            summary.update(check_output(workdir, rows, emulator))
        summary.update(killed_actors=killer.killed, inference_runs_at_kill=killer.runs_at_kill)
        summary.update(
            deprecations=deprecations.messages, inference_runs=emulator.stats()["inference_runs"]
        )
        ray.shutdown()
    return summary


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=2000)
    parser.add_argument("--timeout", type=float, default=240.0)
    parser.add_argument("--kill", action="store_true", help="SIGKILL the sampling actors mid-run")
    parser.add_argument("--readme", default=README, help="another README.rst (e.g. an old one)")
    parser.add_argument(
        "--deprecations-warn", action="store_true", help="Ray's deprecation warnings only warn"
    )
    args = parser.parse_args(argv)
    if not args.deprecations_warn:
        from ray.util.annotations import RayDeprecationWarning

        warnings.simplefilter("error", RayDeprecationWarning)
    code = readme_ray_example(args.readme)
    print(code, flush=True)
    with tempfile.TemporaryDirectory() as workdir:
        write_prompts(os.path.join(workdir, "prompts.parquet"), args.rows)
        summary = run_example(code, workdir, timeout=args.timeout, kill=args.kill, rows=args.rows)
    print(json.dumps(summary, default=str), flush=True)
    return 0


if __name__ == "__main__":
    sys.path.insert(0, ROOT)
    sys.exit(main())
