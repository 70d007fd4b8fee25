"""A loopback TCP proxy that adds a network's latency: what a user on a real link pays per request.

Every chunk of bytes is forwarded ``--delay`` seconds (default 0.02) after
it arrived, in each direction, in order; the first chunk a new connection
sends waits two more one-way delays, the TCP handshake a real link costs
before the first request byte can go out. So a keep-alive request pays one
round trip (40 ms at the default), a request on a fresh connection two.
Bandwidth is not limited. Binds 127.0.0.1 only.

Run in its own process (so it never shares a GIL or a CPU account with what
is measured): ``with Link(upstream_url, delay=0.02) as link: link.url``, or
``python bench/_link.py --upstream http://127.0.0.1:PORT/v1 [--delay 0.02]``
(prints ``listening on http://127.0.0.1:PORT/v1`` and serves until killed).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import urllib.parse
from typing import List, Optional, Tuple

CHUNK = 1 << 16


async def _pump(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delay: float, first_extra: float
) -> None:
    """Copy ``reader`` to ``writer``, each chunk ``delay`` seconds after it arrived, in order."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue = asyncio.Queue()

    async def send() -> None:
        while True:
            due, data = await queue.get()
            wait = due - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            if not data:
                break
            writer.write(data)
            await writer.drain()

    sender = asyncio.ensure_future(send())
    extra = first_extra
    try:
        while True:
            data = await reader.read(CHUNK)
            queue.put_nowait((loop.time() + delay + extra, data))
            extra = 0.0
            if not data:
                break
        await sender
    except (ConnectionError, OSError):
        sender.cancel()
    finally:
        writer.close()


async def _serve(upstream: Tuple[str, int], delay: float, path: str) -> None:
    async def handle(client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        try:
            server_r, server_w = await asyncio.open_connection(*upstream)
        except OSError:
            client_w.close()
            return
        await asyncio.gather(
            _pump(client_r, server_w, delay, 2.0 * delay),  # the handshake's round trip first
            _pump(server_r, client_w, delay, 0.0),
            return_exceptions=True,
        )

    server = await asyncio.start_server(handle, "127.0.0.1", 0, backlog=4096)
    port = server.sockets[0].getsockname()[1]
    print(f"listening on http://127.0.0.1:{port}{path}", flush=True)
    async with server:
        await server.serve_forever()


class Link:
    """``with Link("http://127.0.0.1:8000/v1", delay=0.02) as link: link.url`` (a child process)."""

    def __init__(self, upstream_url: str, delay: float = 0.02) -> None:
        self.upstream_url = upstream_url
        self.delay = delay
        self.url = ""
        self._process: Optional[subprocess.Popen] = None

    def __enter__(self) -> Link:
        command = [sys.executable, os.path.abspath(__file__), "--upstream", self.upstream_url]
        self._process = subprocess.Popen(
            command + ["--delay", repr(self.delay)], stdout=subprocess.PIPE, text=True
        )
        line = self._process.stdout.readline() if self._process.stdout else ""
        if not line.startswith("listening on "):
            self.__exit__()
            raise RuntimeError(f"the link proxy did not start: {line!r}")
        self.url = line.split("listening on ", 1)[1].strip()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._process is not None:
            self._process.terminate()
            self._process.wait(10)
            self._process = None


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--upstream", required=True, help="e.g. http://127.0.0.1:8000/v1")
    parser.add_argument("--delay", type=float, default=0.02, help="seconds, each way")
    args = parser.parse_args(argv)
    parsed = urllib.parse.urlsplit(args.upstream)
    if parsed.hostname not in ("127.0.0.1", "localhost", "::1"):
        parser.error("the upstream must be on loopback")
    upstream = (parsed.hostname, parsed.port or 80)
    try:
        asyncio.run(_serve(upstream, args.delay, parsed.path))
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
