"""Peak memory of uploading a large file: sail-lite's streamed body vs requests' files=.

Each upload runs in a fresh child process (so one measurement cannot warm
another); the emulator runs in this process, not in the measured ones. The
figure is the growth of the child's peak RSS (VmHWM) across the upload.
Files are sparse, so they cost no disk.

    python bench/upload_memory.py [--gib 4] [--requests-mib 256]

Prints a table and writes bench/results/upload_memory.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

CHILD = r"""
import sys, time
kind, path, base_url, key = sys.argv[1:5]
def hwm_kib():
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM"):
                return int(line.split()[1])
import requests
from sail_lite import Client
client = Client(key, base_url=base_url, environ={})
client.models.list()                     # imports, session and connection warmed up
requests.get(base_url + "/models", headers={"Authorization": "Bearer " + key}, timeout=30)
before = hwm_kib()
started = time.perf_counter()
if kind == "sail_lite":
    size = client.files.create(path).bytes
else:
    with open(path, "rb") as handle:
        reply = requests.post(base_url + "/files", headers={"Authorization": "Bearer " + key},
                              data={"purpose": "lora"}, files={"file": handle}, timeout=600)
    reply.raise_for_status()
    size = reply.json()["bytes"]
print(size, hwm_kib() - before, time.perf_counter() - started)
"""


def measure(kind: str, path: str, base_url: str, key: str) -> dict:
    result = subprocess.run(
        [sys.executable, "-c", CHILD, kind, path, base_url, key],
        capture_output=True,
        text=True,
        timeout=1800,
    )
    if result.returncode != 0:
        raise SystemExit(f"{kind} upload failed:\n{result.stderr}")
    size, grown_kib, seconds = result.stdout.split()
    return {
        "client": kind,
        "file_bytes": int(size),
        "peak_rss_growth_mib": int(grown_kib) / 1024,
        "seconds": float(seconds),
        "mib_per_s": int(size) / float(seconds) / 2**20,
    }


def sparse_file(folder: str, name: str, size: int) -> str:
    path = os.path.join(folder, name)
    with open(path, "wb") as handle:
        handle.truncate(size)
    return path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gib", type=float, default=4.0, help="size of the sail-lite upload")
    parser.add_argument(
        "--requests-mib", type=int, default=256, help="size of the requests files= upload"
    )
    args = parser.parse_args()
    from sail_lite.emulator import EmulatorServer

    rows = []
    with tempfile.TemporaryDirectory() as folder, EmulatorServer() as server:
        big = sparse_file(folder, "adapter_model.safetensors", int(args.gib * 2**30))
        small = sparse_file(folder, "small.safetensors", args.requests_mib * 2**20)
        rows.append(measure("sail_lite", big, server.base_url, server.api_key))
        rows.append(measure("sail_lite", small, server.base_url, server.api_key))
        rows.append(measure("requests_files", small, server.base_url, server.api_key))
    print("{:<16} {:>14} {:>22} {:>10}".format("client", "file", "peak RSS growth", "MiB/s"))
    for row in rows:
        print(
            "{:<16} {:>10.0f} MiB {:>18.1f} MiB {:>10.0f}".format(
                row["client"],
                row["file_bytes"] / 2**20,
                row["peak_rss_growth_mib"],
                row["mib_per_s"],
            )
        )
    same_size = [r for r in rows if r["file_bytes"] == args.requests_mib * 2**20]
    ratio = same_size[1]["peak_rss_growth_mib"] / max(same_size[0]["peak_rss_growth_mib"], 0.1)
    print(
        f"requests files= grows peak RSS {ratio:.0f}x more than sail-lite on the same {args.requests_mib} MiB file"
    )
    print(
        "sail-lite overhead on {:.1f} GiB: {:.1f} MiB (goal: < 8 MB)".format(
            args.gib, rows[0]["peak_rss_growth_mib"]
        )
    )
    os.makedirs(os.path.join(os.path.dirname(__file__), "results"), exist_ok=True)
    with open(os.path.join(os.path.dirname(__file__), "results", "upload_memory.json"), "w") as out:
        json.dump(
            {"when": time.time(), "rows": rows, "requests_over_sail_lite": ratio}, out, indent=2
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
