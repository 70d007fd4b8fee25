"""How many small requests per second the emulator serves on this machine (target: >= 1,000).

The emulator runs in its own process (``python -m sail_lite.emulator``); the
load comes from ``--procs`` separate processes, each with ``--threads``
keep-alive ``requests`` sessions, for ``--seconds``. Three request kinds are
measured separately: ``GET /v1/models``, ``GET /v1/responses/{id}`` (a poll)
and ``POST /v1/responses`` (a synchronous raw-token sample of 4 tokens on
``asap``: auth, idempotency, the reference model, JSON). For scale, the same
load is run against a bare stdlib ``ThreadingHTTPServer`` that answers every
request with a fixed JSON body (the ceiling of any stdlib server here).

    python bench/emulator_rps.py [--procs 2] [--threads 8] [--seconds 4]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import requests  # noqa: E402
from _emulator import EmulatorProcess  # noqa: E402

MODEL = "moonshotai/Kimi-K2.6"
SAMPLE = {
    "model": MODEL,
    "input": "<raw token prompt; ignored when raw_prompt_tokens is set>",
    "raw_prompt_tokens": [1, 2, 3],
    "max_output_tokens": 4,
    "metadata": {"completion_window": "asap"},
}


def worker(
    base_url: str, key: str, kind: str, threads: int, seconds: float, response_id: str, out
) -> None:
    counts = [0] * threads
    errors = [0] * threads
    stop_at = time.monotonic() + seconds

    def loop(index: int) -> None:
        session = requests.Session()
        session.headers["Authorization"] = "Bearer " + key
        while time.monotonic() < stop_at:
            if kind == "POST /v1/responses":
                reply = session.post(
                    base_url + "/responses",
                    data=json.dumps(SAMPLE),
                    headers={"Content-Type": "application/json"},
                    timeout=30,
                )
            elif kind == "GET /v1/responses/{id}":
                reply = session.get(base_url + "/responses/" + response_id, timeout=30)
            else:
                reply = session.get(base_url + "/models", timeout=30)
            if reply.status_code == 200:
                counts[index] += 1
            else:
                errors[index] += 1
        session.close()

    pool = [threading.Thread(target=loop, args=(i,)) for i in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    out.put((sum(counts), sum(errors)))


def measure(
    base_url: str, key: str, kind: str, args: argparse.Namespace, response_id: str = ""
) -> float:
    out: multiprocessing.Queue = multiprocessing.Queue()
    procs = [
        multiprocessing.Process(
            target=worker, args=(base_url, key, kind, args.threads, args.seconds, response_id, out)
        )
        for _ in range(args.procs)
    ]
    started = time.monotonic()
    for proc in procs:
        proc.start()
    results = [out.get() for _ in procs]
    elapsed = time.monotonic() - started
    for proc in procs:
        proc.join()
    ok = sum(r[0] for r in results)
    failed = sum(r[1] for r in results)
    if failed:
        raise SystemExit(f"{kind}: {failed} requests failed")
    return ok / elapsed


class Fixed(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    wbufsize = 65536  # headers and body leave in one write, as the emulator's replies do
    disable_nagle_algorithm = True
    body = json.dumps({"object": "list", "data": [{"id": MODEL, "object": "model"}]}).encode()

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, *args) -> None:
        pass


def baseline_process(port_out) -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Fixed)
    server.daemon_threads = True
    port_out.put(server.server_address[1])
    server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--procs", type=int, default=2)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=4.0)
    args = parser.parse_args()

    rates = {}
    with EmulatorProcess() as emulator:
        session = requests.Session()
        session.headers["Authorization"] = "Bearer " + emulator.api_key
        # A stored response to fetch; asap is synchronous only, so the background create is balanced.
        background = dict(SAMPLE, background=True, metadata={"completion_window": "balanced"})
        response_id = session.post(
            emulator.base_url + "/responses", json=background, timeout=30
        ).json()["id"]
        session.close()
        for kind in ("GET /v1/models", "GET /v1/responses/{id}", "POST /v1/responses"):
            rates[kind] = measure(emulator.base_url, emulator.api_key, kind, args, response_id)

    port_out: multiprocessing.Queue = multiprocessing.Queue()
    baseline = multiprocessing.Process(target=baseline_process, args=(port_out,), daemon=True)
    baseline.start()
    base_url = f"http://127.0.0.1:{port_out.get()}/v1"
    floor = measure(base_url, "x", "GET /v1/models", args)
    baseline.terminate()

    print(
        f"Emulator throughput, {args.procs} client processes x {args.threads} keep-alive threads, {args.seconds:.0f} s each, {os.cpu_count()} cores:"
    )
    for kind, rate in rates.items():
        print(
            f"  {kind:<28} {rate:8.0f} req/s   {rate / 1000:5.2f}x the 1,000 req/s target   {rate / floor:4.2f}x a bare stdlib server"
        )
    print(
        "  {:<28} {:8.0f} req/s   (bare ThreadingHTTPServer, fixed JSON reply)".format(
            "baseline GET", floor
        )
    )


if __name__ == "__main__":
    main()
