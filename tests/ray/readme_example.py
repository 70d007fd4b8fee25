"""Run README.rst's Ray example as written: a 2-CPU local cluster, an emulator process, parquet in and out.

``PYTHONPATH=$PWD python tests/ray/readme_example.py [--kill] [--rows N] [--timeout S]``

The example's code block is read from README.rst (not copied) and executed
in a scratch directory holding ``prompts.parquet``; it must leave
``samples/`` behind. ``SAIL_API_KEY`` / ``SAIL_BASE_URL`` point at an
emulator child process, which counts inference runs per idempotency key.
Ray's deprecation warnings are errors (the ``warnings`` ones raise, the
logged ones are collected and reported). With ``--kill``, one SailSampler
actor process is SIGKILLed once some rows have run. A run that does not
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
from typing import Any, Dict, List, Optional

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


def write_prompts(path: str, rows: int) -> None:
    """``rows`` rows: ``row``, ``prompt_tokens`` (each prompt COPIES times) and ``sample_index``."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table(
        {
            "row": list(range(rows)),
            "prompt_tokens": [[1 + i // COPIES, 2, 3] for i in range(rows)],
            "sample_index": [i % COPIES for i in range(rows)],
        }
    )
    pq.write_table(table, path)


class DeprecationLog(logging.Handler):
    """Collects what Ray logs about deprecations (``concurrency`` is deprecated through a log line)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: List[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if "deprecat" in message.lower():
            self.messages.append(message)


def sampler_pids() -> List[int]:
    """The processes whose title names a SailSampler Ray actor (``ray::MapWorker(...SailSampler...)``)."""
    pids = []
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == os.getpid():
            continue
        try:
            with open(f"/proc/{name}/cmdline", "rb") as handle:
                title = handle.read().replace(b"\0", b" ")
        except OSError:  # gone meanwhile, or not ours to read
            continue
        if title.startswith(b"ray::") and b"SailSampler" in title:
            pids.append(int(name))
    return sorted(pids)


class ActorKiller(threading.Thread):
    """SIGKILLs one SailSampler actor once the emulator has run ``after_runs`` inferences."""

    def __init__(self, emulator: Any, after_runs: int) -> None:
        super().__init__(daemon=True)
        self.emulator = emulator
        self.after_runs = after_runs
        self.killed: Optional[int] = None
        self.runs_at_kill: Optional[int] = None
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(0.05):
            try:
                runs = self.emulator.stats()["inference_runs"]
            except OSError:  # the emulator is gone: the run is over
                return
            pids = sampler_pids()
            if runs >= self.after_runs and pids:
                os.kill(pids[0], signal.SIGKILL)
                self.killed, self.runs_at_kill = pids[0], runs
                return


def watchdog(seconds: float, emulator: Any, summary: Dict[str, Any]) -> threading.Timer:
    """After ``seconds``: print the summary marked hung (with Ray's free resources) and end the process."""
    import ray

    def fire() -> None:
        summary.update(
            hung=True,
            seconds=round(time.monotonic() - summary["started"], 1),
            inference_runs=emulator.stats()["inference_runs"],
            available_resources=ray.available_resources(),
            sampler_actor_processes=len(sampler_pids()),
        )
        print(json.dumps(summary, default=str), flush=True)
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
        ray.init(num_cpus=2, include_dashboard=False)
        ray.data.DataContext.get_current().enable_progress_bars = False
        summary: Dict[str, Any] = {"ray": ray.__version__, "started": time.monotonic()}
        killer = ActorKiller(emulator, after_runs=rows // 4)
        if kill:
            killer.start()
        timer = watchdog(timeout, emulator, summary)
        os.chdir(workdir)
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
        summary.update(killed_actor=killer.killed, inference_runs_at_kill=killer.runs_at_kill)
        summary.update(
            deprecations=deprecations.messages, inference_runs=emulator.stats()["inference_runs"]
        )
        ray.shutdown()
    return summary


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=600)
    parser.add_argument("--timeout", type=float, default=240.0)
    parser.add_argument("--kill", action="store_true", help="SIGKILL one sampler actor mid-run")
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
