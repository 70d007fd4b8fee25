"""Client-side cost per request: sail_lite vs bare requests vs the openai and sail SDKs.

Every client sends the same small request to the same emulator (its own
process): ``GET /v1/models`` and a synchronous ``POST /v1/responses`` (4
raw-token samples on ``asap``). ``--threads 1`` shows per-call overhead
(latency); ``--threads 16`` shows throughput from a threaded pipeline sharing
one client. Ratios are against bare ``requests.Session`` measured in the same
run. SDKs that are not installed are left out.

    python bench/client_throughput.py [--seconds 3] [--threads 1 16]
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from typing import Callable, Dict

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import requests  # noqa: E402
from _emulator import EmulatorProcess  # noqa: E402

from sail_lite import Client  # noqa: E402

MODEL = "moonshotai/Kimi-K2.6"
PLACEHOLDER = "<raw token prompt; ignored when raw_prompt_tokens is set>"
SAMPLE = dict(
    model=MODEL,
    input=PLACEHOLDER,
    raw_prompt_tokens=[1, 2, 3],
    max_output_tokens=4,
    metadata={"completion_window": "asap"},
)


def clients(
    base_url: str, url: str, key: str, threads: int
) -> Dict[str, Dict[str, Callable[[], object]]]:
    found: Dict[str, Dict[str, Callable[[], object]]] = {}

    session = requests.Session()
    session.headers["Authorization"] = "Bearer " + key
    adapter = requests.adapters.HTTPAdapter(pool_connections=threads, pool_maxsize=threads)
    session.mount("http://", adapter)
    found["requests (bare)"] = {
        "GET /models": lambda: session.get(base_url + "/models", timeout=30).raise_for_status(),
        "POST /responses": lambda: session.post(
            base_url + "/responses", json=SAMPLE, timeout=30
        ).raise_for_status(),
    }

    sail_lite = Client(key, base_url=base_url, max_workers=max(threads, 1), environ={})
    found["sail_lite"] = {
        "GET /models": sail_lite.models.list,
        "POST /responses": lambda: sail_lite.responses.create(
            model=MODEL,
            input=PLACEHOLDER,
            raw_prompt_tokens=[1, 2, 3],
            max_output_tokens=4,
            completion_window="asap",
        ),
    }

    try:
        import openai
    except ImportError:
        print("(openai not installed: skipped)")
    else:
        sdk = openai.OpenAI(api_key=key, base_url=base_url)
        found["openai SDK"] = {
            "GET /models": lambda: sdk.models.list(),
            "POST /responses": lambda: sdk.responses.create(
                model=MODEL,
                input=PLACEHOLDER,
                max_output_tokens=4,
                metadata={"completion_window": "asap"},
                extra_body={"raw_prompt_tokens": [1, 2, 3]},
            ),
        }

    try:
        import sail
    except ImportError:
        print("(sail-sdk not installed: skipped)")
    else:
        os.environ["SAIL_API_KEY"], os.environ["SAIL_API_URL"] = key, url
        sail.reset_transports()
        found["sail SDK"] = {"POST /responses": lambda: sail.inference.responses.create(**SAMPLE)}
    return found


def rate(call: Callable[[], object], threads: int, seconds: float) -> float:
    call()  # warm: imports, connections
    counts = [0] * threads
    stop_at = time.perf_counter() + seconds

    def loop(index: int) -> None:
        while time.perf_counter() < stop_at:
            call()
            counts[index] += 1

    started = time.perf_counter()
    pool = [threading.Thread(target=loop, args=(i,)) for i in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    return sum(counts) / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 16])
    args = parser.parse_args()
    with EmulatorProcess() as emulator:
        for threads in args.threads:
            table = clients(emulator.base_url, emulator.url, emulator.api_key, threads)
            print(
                f"\n{threads} thread(s), {args.seconds:.0f} s per cell (req/s; ratio to bare requests):"
            )
            for route in ("GET /models", "POST /responses"):
                bare = rate(table["requests (bare)"][route], threads, args.seconds)
                for name, calls in table.items():
                    if route not in calls:
                        continue
                    value = (
                        bare
                        if name == "requests (bare)"
                        else rate(calls[route], threads, args.seconds)
                    )
                    print(f"  {route:<16} {name:<18} {value:8.0f} req/s  {value / bare:5.2f}x")


if __name__ == "__main__":
    main()
