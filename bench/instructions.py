"""Instruction counts under valgrind (callgrind): the client-CPU and import goals, without the machine's noise.

CPU time on a shared 2-core machine moves by +-30% from run to run (other
engineers' test runs, frequency, the emulator's own share). The number of
instructions a client executes does not: it is the same to about 1% on
every run, so it shows what a change to the code did, where ``client_cpu.py``
and ``import_time.py`` show what a user's machine would see. Counted here:

- per sample, 32 in flight, emulator in its own process (not counted): one
  background raw-token create whose reply is already ``completed`` (the
  ``client_cpu.py`` workload), for sail_lite, a bare ``requests`` loop and a
  bare ``urllib3`` loop. Each client runs twice (100 and 400 samples) and
  the difference divided by 300 is the per-sample count: start-up cancels out;
- ``import sail_lite`` (and the first ``Client()``) vs ``import requests``,
  byte-code caches warm.

User-space instructions only: the kernel's share of system calls and
context switches is not in them (``client_cpu.py`` reports those).
Needs ``valgrind`` on PATH; about 6 minutes.

    python bench/instructions.py [--json PATH]
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from typing import Any, Dict, Optional, Sequence

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)

import _report  # noqa: E402
from _emulator import EmulatorProcess  # noqa: E402

IN_FLIGHT = 32
MODEL = "moonshotai/Kimi-K2.6"

WORKLOAD = r"""
import json, sys, threading
base, key, which, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
MODEL, IN_FLIGHT = %r, %d
PLACEHOLDER = "<raw token prompt; ignored when raw_prompt_tokens is set>"
def body(i):
    return dict(model=MODEL, input=PLACEHOLDER, raw_prompt_tokens=[1, 2, 3 + i %% 1000], max_output_tokens=4,
                background=True, include=["message.output_text.logprobs"], metadata={"completion_window": "balanced"})
sys.path.insert(0, %r)
from _threads import threaded  # the benchmarks' one thread pool (bench/_threads.py)
if which == "requests (bare)":
    import requests
    session = requests.Session(); session.headers["Authorization"] = "Bearer " + key
    session.mount("http://", requests.adapters.HTTPAdapter(pool_connections=1, pool_maxsize=IN_FLIGHT))
    def one(i):
        reply = session.post(base + "/responses", json=body(i), timeout=30); reply.raise_for_status()
        assert reply.json()["status"] == "completed"
    threaded(one, n, IN_FLIGHT)
elif which == "urllib3 (bare)":
    import urllib3
    pool = urllib3.PoolManager(maxsize=IN_FLIGHT)
    headers = {"Authorization": "Bearer " + key, "Content-Type": "application/json"}
    def one(i):
        reply = pool.request("POST", base + "/responses", body=json.dumps(body(i)).encode(), headers=headers,
                             timeout=30.0)
        assert json.loads(reply.data)["status"] == "completed"
    threaded(one, n, IN_FLIGHT)
else:
    from sail_lite import Client
    client = Client(key, base_url=base, environ={}, max_workers=IN_FLIGHT)
    gate, futures = threading.BoundedSemaphore(IN_FLIGHT), []
    for i in range(n):
        gate.acquire()
        future = client.tokens.submit([1, 2, 3 + i %% 1000], model=MODEL, max_tokens=4, completion_window="balanced")
        future.add_done_callback(lambda _f: gate.release())
        futures.append(future)
    for future in futures:
        assert future.result().tokens
    # No close(): joining threads at exit costs a varying number of instructions under valgrind
    # (more in a short run than in a long one), which the difference of two runs would not cancel.
""" % (MODEL, IN_FLIGHT, HERE)  # noqa: UP031


def python_binary() -> str:
    # valgrind must run the interpreter itself, not a shell shim (pyenv) that execs it.
    return os.path.realpath(sys.executable)


def env() -> Dict[str, str]:
    values = dict(os.environ)
    values["PYTHONPATH"] = ROOT + os.pathsep + values.get("PYTHONPATH", "")
    values.pop("PYTHONDONTWRITEBYTECODE", None)
    values["PYTHONPYCACHEPREFIX"] = os.path.join(tempfile.gettempdir(), "sail-lite-bench-pycache")
    return values


def instructions(args: Sequence[str]) -> int:
    result = subprocess.run(
        ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", python_binary(), *args],
        cwd=ROOT,
        env=env(),
        capture_output=True,
        text=True,
    )
    found = re.search(r"Collected : (\d+)", result.stderr)
    if result.returncode != 0 or not found:
        raise RuntimeError("valgrind run failed: " + result.stderr[-2000:])
    return int(found.group(1))


def measure() -> Dict[str, Any]:
    with tempfile.TemporaryDirectory() as folder:
        script = os.path.join(folder, "workload.py")
        with open(script, "w") as handle:
            handle.write(WORKLOAD)
        per_sample: Dict[str, float] = {}
        with EmulatorProcess(hooks=True, turn=0.0) as emu:
            for which in ("requests (bare)", "urllib3 (bare)", "sail_lite"):
                # The smaller of two runs each: a run only ever picks up extra work (scheduling), never less.
                small = min(
                    instructions([script, emu.base_url, emu.api_key, which, "100"])
                    for _ in range(2)
                )
                large = min(
                    instructions([script, emu.base_url, emu.api_key, which, "400"])
                    for _ in range(2)
                )
                per_sample[which] = (large - small) / 300.0
    client = "import sail_lite; sail_lite.Client('sk-bench', base_url='http://127.0.0.1:9/v1', environ={})"
    imports: Dict[str, int] = {}
    for name, code in (
        ("requests", "import requests"),
        ("sail_lite", "import sail_lite"),
        ("client", client),
    ):
        subprocess.run(
            [python_binary(), "-c", code], cwd=ROOT, env=env(), check=True
        )  # warm the byte-code cache
        imports[name] = instructions(["-c", code])
    bare = per_sample["requests (bare)"]
    return {
        "per_sample": {
            name: {"instructions": count, "ratio": count / bare}
            for name, count in per_sample.items()
        },
        "imports": imports,
        "import_extra_ratio": (imports["sail_lite"] - imports["requests"]) / imports["requests"],
        "client_extra_ratio": (imports["client"] - imports["requests"]) / imports["requests"],
    }


def print_table(result: Dict[str, Any]) -> None:
    print("Instructions per sample, 32 in flight (callgrind, emulator not counted):")
    for name, row in result["per_sample"].items():
        print(
            "  {:<16} {:8.0f} k instructions  {:5.2f}x bare requests".format(
                name, row["instructions"] / 1e3, row["ratio"]
            )
        )
    imports = result["imports"]
    # import sail_lite alone does not load requests (the client loads on first use): the first Client() is the figure.
    print(
        "Instructions to import (byte-code caches warm): requests {:.0f} M; import sail_lite {:+.0f} M ({:+.0%} of "
        "requests'); with the first Client() {:+.0f} M ({:+.0%})".format(
            imports["requests"] / 1e6,
            (imports["sail_lite"] - imports["requests"]) / 1e6,
            result["import_extra_ratio"],
            (imports["client"] - imports["requests"]) / 1e6,
            result["client_extra_ratio"],
        )
    )


def main(argv: Optional[Sequence[str]] = None) -> Dict[str, Any]:
    parser = _report.parser(__doc__)
    args = parser.parse_args(argv)
    if shutil.which("valgrind") is None:
        raise SystemExit("valgrind is not installed (apt-get install valgrind)")
    return _report.report(measure(), print_table, args.json)


if __name__ == "__main__":
    main()
