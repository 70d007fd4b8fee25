"""Client CPU per sample, 32 in flight: sail_lite vs a bare requests loop, a bare urllib3 loop and the openai SDK.

A sample is one background raw-token ``POST /v1/responses`` on a window
whose turn is 0 s, so the create's reply is already ``completed`` and every
client sends exactly one request per sample and parses its JSON (sail_lite:
``client.tokens.submit``, the pipeline way, bounded to 32 futures in flight;
the others: 32 threads looping). What is measured is this process's CPU time
(``time.process_time``: user + system, every thread) per sample; the
emulator runs in its own process so its CPU is not counted. Clients are
measured in interleaved rounds; the median round counts. Ratios are to the
bare ``requests`` loop of the same run: the median over rounds of each
round's ratio (paired, so that a round slowed by the machine's other work
slows both sides of its ratio). User and system CPU and context switches
per sample are shown too (``getrusage``): on a shared machine the kernel's
share moves the most.

    python bench/client_cpu.py [--quick] [--samples 2000] [--rounds 3] [--json PATH]
"""

from __future__ import annotations

import json
import os
import resource
import statistics
import sys
import threading
import time
from typing import Any, Callable, Dict, Optional, Sequence

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _report  # noqa: E402
from _emulator import EmulatorProcess  # noqa: E402
from _threads import threaded  # noqa: E402

MODEL = "moonshotai/Kimi-K2.6"
PLACEHOLDER = "<raw token prompt; ignored when raw_prompt_tokens is set>"
IN_FLIGHT = 32


def body(window: str, i: int) -> Dict[str, Any]:
    return dict(
        model=MODEL,
        input=PLACEHOLDER,
        raw_prompt_tokens=[1, 2, 3 + i % 1000],
        max_output_tokens=4,
        background=True,
        include=["message.output_text.logprobs"],
        metadata={"completion_window": window},
    )


def make_clients(emu: EmulatorProcess, window: str) -> Dict[str, Callable[[int], None]]:
    """name -> run(samples)."""
    base = emu.base_url
    clients: Dict[str, Callable[[int], None]] = {}

    import requests

    session = requests.Session()
    session.headers["Authorization"] = "Bearer " + emu.api_key
    session.mount(
        "http://", requests.adapters.HTTPAdapter(pool_connections=1, pool_maxsize=IN_FLIGHT)
    )

    def requests_one(i: int) -> None:
        reply = session.post(base + "/responses", json=body(window, i), timeout=30)
        reply.raise_for_status()
        assert reply.json()["status"] == "completed"

    clients["requests (bare)"] = lambda n: threaded(requests_one, n, IN_FLIGHT)

    import urllib3

    pool = urllib3.PoolManager(maxsize=IN_FLIGHT)
    headers = {"Authorization": "Bearer " + emu.api_key, "Content-Type": "application/json"}

    def urllib3_one(i: int) -> None:
        reply = pool.request(
            "POST",
            base + "/responses",
            body=json.dumps(body(window, i)).encode(),
            headers=headers,
            timeout=30.0,
        )
        assert reply.status == 200 or reply.status == 202, reply.status
        assert json.loads(reply.data)["status"] == "completed"

    clients["urllib3 (bare)"] = lambda n: threaded(urllib3_one, n, IN_FLIGHT)

    from sail_lite import Client

    lite = Client(emu.api_key, base_url=base, environ={}, max_workers=IN_FLIGHT)

    def lite_run(n: int) -> None:
        gate = threading.BoundedSemaphore(IN_FLIGHT)
        futures = []
        for i in range(n):
            gate.acquire()
            future = lite.tokens.submit(
                [1, 2, 3 + i % 1000], model=MODEL, max_tokens=4, completion_window=window
            )
            future.add_done_callback(lambda _f: gate.release())
            futures.append(future)
        for future in futures:
            assert future.result().tokens

    clients["sail_lite"] = lite_run

    try:
        import openai
    except ImportError:
        print("(openai not installed: pip install openai; skipped)")
    else:
        sdk = openai.OpenAI(api_key=emu.api_key, base_url=base, max_retries=2)

        def openai_one(i: int) -> None:
            b = body(window, i)
            response = sdk.responses.create(
                model=MODEL,
                input=PLACEHOLDER,
                max_output_tokens=4,
                background=True,
                include=b["include"],
                metadata=b["metadata"],
                extra_body={"raw_prompt_tokens": b["raw_prompt_tokens"]},
            )
            assert response.status == "completed"

        clients["openai SDK"] = lambda n: threaded(openai_one, n, IN_FLIGHT)
    return clients


def measure(samples: int, rounds: int) -> Dict[str, Any]:
    with EmulatorProcess(hooks=True, turn=0.0) as emu:
        window = "balanced"
        import requests

        probe = requests.post(
            emu.base_url + "/responses",
            json=body(window, 0),
            timeout=30,
            headers={"Authorization": "Bearer " + emu.api_key},
        )
        if probe.status_code >= 300:
            window = "standard"  # an emulator with the older catalogue
        clients = make_clients(emu, window)
        for run in clients.values():
            run(IN_FLIGHT * 2)  # warm: imports, connections, first-call caches
        cpu: Dict[str, list] = {name: [] for name in clients}
        wall: Dict[str, list] = {name: [] for name in clients}
        usage: Dict[str, list] = {name: [] for name in clients}
        for _ in range(rounds):
            for name, run in clients.items():
                before = resource.getrusage(resource.RUSAGE_SELF)
                cpu0, wall0 = time.process_time(), time.perf_counter()
                run(samples)
                cpu[name].append((time.process_time() - cpu0) / samples)
                wall[name].append((time.perf_counter() - wall0) / samples)
                after = resource.getrusage(resource.RUSAGE_SELF)
                usage[name].append(
                    (
                        (after.ru_utime - before.ru_utime) / samples,
                        (after.ru_stime - before.ru_stime) / samples,
                        (after.ru_nvcsw - before.ru_nvcsw + after.ru_nivcsw - before.ru_nivcsw)
                        / samples,
                    )
                )
    bare = cpu["requests (bare)"]
    table = {
        name: {
            "cpu_ms": statistics.median(values) * 1e3,
            "ratio": statistics.median([v / b for v, b in zip(values, bare)]),
            "ratio_of_medians": statistics.median(values) / statistics.median(bare),
            "rounds_ms": [v * 1e3 for v in values],
            "user_ms": statistics.median(u for u, _, _ in usage[name]) * 1e3,
            "system_ms": statistics.median(k for _, k, _ in usage[name]) * 1e3,
            "switches": statistics.median(c for _, _, c in usage[name]),
            "samples_per_s": 1.0 / statistics.median(wall[name]),
        }
        for name, values in cpu.items()
    }
    return {
        "samples": samples,
        "rounds": rounds,
        "in_flight": IN_FLIGHT,
        "window": window,
        "clients": table,
    }


def print_table(result: Dict[str, Any]) -> None:
    print(
        "Client CPU per sample, {} in flight, {} samples x {} rounds (median round; emulator in its own process):".format(
            result["in_flight"], result["samples"], result["rounds"]
        )
    )
    for name, row in result["clients"].items():
        print(
            "  {:<16} {:7.3f} ms CPU/sample  {:5.2f}x bare requests (rounds: {})  user {:.3f} + system {:.3f} ms, "
            "{:.1f} context switches  {:7.0f} samples/s".format(
                name,
                row["cpu_ms"],
                row["ratio"],
                " ".join(f"{v:.2f}" for v in row["rounds_ms"]),
                row.get("user_ms", 0.0),
                row.get("system_ms", 0.0),
                row.get("switches", 0.0),
                row["samples_per_s"],
            )
        )


def main(argv: Optional[Sequence[str]] = None) -> Dict[str, Any]:
    parser = _report.parser(__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--samples", type=int)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    samples = args.samples or (1000 if args.quick else 3000)
    return _report.report(measure(samples, args.rounds), print_table, args.json)


if __name__ == "__main__":
    main()
