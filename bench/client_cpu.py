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
import random
import resource
import statistics
import sys
import threading
import time
from typing import Any, Callable, Dict, List, Optional, Sequence

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _report  # noqa: E402
from _emulator import EmulatorProcess  # noqa: E402
from _threads import threaded  # noqa: E402

MODEL = "moonshotai/Kimi-K2.6"
PLACEHOLDER = "<raw token prompt; ignored when raw_prompt_tokens is set>"
IN_FLIGHT = 32
POLLED_TURN = 0.2


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


def requests_session(emu: EmulatorProcess) -> Any:
    import requests

    session = requests.Session()
    session.headers["Authorization"] = "Bearer " + emu.api_key
    session.mount(
        "http://", requests.adapters.HTTPAdapter(pool_connections=1, pool_maxsize=IN_FLIGHT)
    )
    return session


def make_clients(emu: EmulatorProcess, window: str) -> Dict[str, Callable[[int], None]]:
    """name -> run(samples): one create per sample (the turn is 0 s: the reply is terminal)."""
    base = emu.base_url
    clients: Dict[str, Callable[[int], None]] = {}
    session = requests_session(emu)

    def requests_one(i: int) -> None:
        reply = session.post(base + "/responses", json=body(window, i), timeout=30)
        reply.raise_for_status()
        assert reply.json()["status"] == "completed"

    clients["requests (bare)"] = lambda n: threaded(requests_one, n, IN_FLIGHT)

    import urllib3

    pool = urllib3.PoolManager(maxsize=IN_FLIGHT)
    headers = {"Authorization": "Bearer " + emu.api_key, "Content-Type": "application/json"}

    def urllib3_one(i: int) -> None:
        data = json.dumps(body(window, i)).encode()
        reply = pool.request("POST", base + "/responses", body=data, headers=headers, timeout=30.0)
        assert reply.status == 200 or reply.status == 202, reply.status
        assert json.loads(reply.data)["status"] == "completed"

    clients["urllib3 (bare)"] = lambda n: threaded(urllib3_one, n, IN_FLIGHT)
    clients["sail_lite"] = sail_lite_runner(emu, window, {})
    sdk = openai_client(emu)
    if sdk is not None:

        def openai_one(i: int) -> None:
            assert openai_create(sdk, window, i, {}).status == "completed"

        clients["openai SDK"] = lambda n: threaded(openai_one, n, IN_FLIGHT)
    return clients


def sail_lite_runner(
    emu: EmulatorProcess, window: str, metadata: Dict[str, str]
) -> Callable[[int], None]:
    """``client.tokens.submit``, the pipeline way: at most 32 futures in flight."""
    from sail_lite import Client

    lite = Client(emu.api_key, base_url=emu.base_url, environ={}, max_workers=IN_FLIGHT)

    def run(n: int) -> None:
        gate = threading.BoundedSemaphore(IN_FLIGHT)
        futures = []
        for i in range(n):
            gate.acquire()
            future = lite.tokens.submit(
                [1, 2, 3 + i % 1000],
                model=MODEL,
                max_tokens=4,
                completion_window=window,
                metadata=metadata,
            )
            future.add_done_callback(lambda _f: gate.release())
            futures.append(future)
        for future in futures:
            assert future.result().tokens

    return run


def openai_client(emu: EmulatorProcess) -> Any:
    try:
        import openai
    except ImportError:
        print("(openai not installed: pip install openai; skipped)")
        return None
    return openai.OpenAI(api_key=emu.api_key, base_url=emu.base_url, max_retries=2)


def openai_create(sdk: Any, window: str, i: int, metadata: Dict[str, str]) -> Any:
    b = body(window, i)
    return sdk.responses.create(
        model=MODEL,
        input=PLACEHOLDER,
        max_output_tokens=4,
        background=True,
        include=b["include"],
        metadata=dict(b["metadata"], **metadata),
        extra_body={"raw_prompt_tokens": b["raw_prompt_tokens"]},
    )


class Schedule:
    """sail_lite's own poll arithmetic (``PollPolicy.next_poll`` on a shared ``Knowledge``), for loops."""

    def __init__(self, window: str) -> None:
        from sail_lite import PollPolicy
        from sail_lite.polling import Knowledge

        self.policy, self.window = PollPolicy(), window
        self.knowledge = Knowledge(self.policy)
        self.key = (MODEL, window)
        self.lock = threading.Lock()
        self.rng = random.Random(0)

    def poll(self, is_done: Callable[[], bool]) -> None:
        """Sleep to each next point and call ``is_done()`` there, until it says so."""
        started, elapsed, last_running = time.monotonic(), 0.0, 0.0
        with self.lock:
            phase = self.rng.random()
        while True:
            with self.lock:
                region = self.knowledge.region(self.key, self.window)
                elapsed = self.policy.next_poll(elapsed, self.window, region, phase)
            time.sleep(max(0.0, started + elapsed - time.monotonic()))
            sent = time.monotonic() - started
            if is_done():
                with self.lock:
                    self.knowledge.observe(self.key, last_running, time.monotonic() - started)
                return
            last_running, elapsed = sent, sent


def make_polled_clients(emu: EmulatorProcess, window: str) -> Dict[str, Callable[[int], None]]:
    """name -> run(samples): a create, then polls until the 0.2 s turn is over (the same schedule)."""
    base, metadata = emu.base_url, {"bench_turn": repr(POLLED_TURN)}
    clients: Dict[str, Callable[[int], None]] = {}
    session, schedule = requests_session(emu), Schedule(window)

    def requests_one(i: int) -> None:
        data = dict(body(window, i), metadata=dict(body(window, i)["metadata"], **metadata))
        created = session.post(base + "/responses", json=data, timeout=30).json()
        url = base + "/responses/" + created["id"]
        schedule.poll(lambda: session.get(url, timeout=30).json()["status"] == "completed")

    clients["requests (bare)"] = lambda n: threaded(requests_one, n, IN_FLIGHT)
    clients["sail_lite"] = sail_lite_runner(emu, window, metadata)
    sdk, sdk_schedule = openai_client(emu), Schedule(window)
    if sdk is not None:

        def openai_one(i: int) -> None:
            created = openai_create(sdk, window, i, metadata)
            sdk_schedule.poll(lambda: sdk.responses.retrieve(created.id).status == "completed")

        clients["openai SDK"] = lambda n: threaded(openai_one, n, IN_FLIGHT)
    return clients


def api_requests(emu: EmulatorProcess) -> int:
    """HTTP requests the emulator has served on the API routes (its admin routes left out)."""
    counts = emu.stats().get("requests", {})
    return sum(n for route, n in counts.items() if "/_emulator" not in route)


def rounds_of(
    emu: EmulatorProcess, clients: Dict[str, Callable[[int], None]], samples: int, rounds: int
) -> Dict[str, Dict[str, Any]]:
    """Interleaved rounds; per client: CPU, user/system, switches per sample and per HTTP request."""
    for run in clients.values():
        run(IN_FLIGHT * 2)  # warm: imports, connections, first-call caches
    rows: Dict[str, List[Dict[str, float]]] = {name: [] for name in clients}
    for _ in range(rounds):
        for name, run in clients.items():
            sent0, before = api_requests(emu), resource.getrusage(resource.RUSAGE_SELF)
            cpu0, wall0 = time.process_time(), time.perf_counter()
            run(samples)
            cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
            after, sent = resource.getrusage(resource.RUSAGE_SELF), api_requests(emu) - sent0
            voluntary = after.ru_nvcsw - before.ru_nvcsw
            switches = voluntary + after.ru_nivcsw - before.ru_nivcsw
            rows[name].append(
                {
                    "cpu": cpu / samples,
                    "wall": wall / samples,
                    "user": (after.ru_utime - before.ru_utime) / samples,
                    "system": (after.ru_stime - before.ru_stime) / samples,
                    "switches": switches / samples,
                    "requests": sent / samples,
                    "switches_per_request": switches / max(sent, 1),
                    "voluntary_per_request": voluntary / max(sent, 1),
                }
            )
    bare = [row["cpu"] for row in rows["requests (bare)"]]

    def median(name: str, key: str) -> float:
        return statistics.median(row[key] for row in rows[name])

    return {
        name: {
            "cpu_ms": median(name, "cpu") * 1e3,
            "ratio": statistics.median(row["cpu"] / b for row, b in zip(rows[name], bare)),
            "rounds_ms": [row["cpu"] * 1e3 for row in rows[name]],
            "user_ms": median(name, "user") * 1e3,
            "system_ms": median(name, "system") * 1e3,
            "switches": median(name, "switches"),
            "requests_per_sample": median(name, "requests"),
            "switches_per_request": median(name, "switches_per_request"),
            "voluntary_per_request": median(name, "voluntary_per_request"),
            "samples_per_s": 1.0 / median(name, "wall"),
        }
        for name in clients
    }


def measure(samples: int, rounds: int, polled_samples: int) -> Dict[str, Any]:
    with EmulatorProcess(hooks=True, turn=0.0) as emu:
        import requests

        window = "balanced"
        probe = requests.post(
            emu.base_url + "/responses",
            json=body(window, 0),
            timeout=30,
            headers={"Authorization": "Bearer " + emu.api_key},
        )
        if probe.status_code >= 300:
            window = "standard"  # an emulator with the older catalogue
        table = rounds_of(emu, make_clients(emu, window), samples, rounds)
        polled = rounds_of(emu, make_polled_clients(emu, window), polled_samples, rounds)
    return {
        "samples": samples,
        "polled_samples": polled_samples,
        "polled_turn": POLLED_TURN,
        "rounds": rounds,
        "in_flight": IN_FLIGHT,
        "window": window,
        "clients": table,
        "polled": polled,
    }


def print_rows(rows: Dict[str, Dict[str, Any]]) -> None:
    for name, row in rows.items():
        rounds = " ".join(f"{v:.2f}" for v in row["rounds_ms"])
        print(
            f"  {name:<16} {row['cpu_ms']:7.3f} ms CPU/sample  {row['ratio']:5.2f}x bare requests "
            f"(rounds: {rounds})  user {row['user_ms']:.3f} + system {row['system_ms']:.3f} ms; "
            f"{row['requests_per_sample']:.1f} requests, {row['switches']:.1f} context switches "
            f"({row['switches_per_request']:.1f} per request, {row['voluntary_per_request']:.1f} "
            f"voluntary)  {row['samples_per_s']:6.0f} samples/s"
        )


def print_table(result: Dict[str, Any]) -> None:
    print(
        f"Client CPU per sample, {result['in_flight']} in flight, {result['samples']} samples x "
        f"{result['rounds']} rounds (median round; emulator in its own process); 0 s turns, "
        "one create per sample:"
    )
    print_rows(result["clients"])
    print(
        f"Polled samples: {result['polled_turn']} s turns, {result['polled_samples']} samples x "
        f"{result['rounds']} rounds; the loops poll on sail_lite's own schedule "
        "(PollPolicy.next_poll on a shared Knowledge):"
    )
    print_rows(result["polled"])


def main(argv: Optional[Sequence[str]] = None) -> Dict[str, Any]:
    parser = _report.parser(__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--samples", type=int)
    parser.add_argument("--polled-samples", type=int)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    samples = args.samples or (1000 if args.quick else 3000)
    polled = args.polled_samples or (320 if args.quick else 960)
    result = measure(samples, args.rounds, polled)
    return _report.report(result, print_table, args.json)


if __name__ == "__main__":
    main()
