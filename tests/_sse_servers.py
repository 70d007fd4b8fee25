"""Hostile loopback SSE servers for the streaming tests: each serves one scripted body on 127.0.0.1.

A script is a callable ``script(write)``; ``write(bytes)`` sends and flushes, and raises ``OSError``
once the client has gone. ``ScriptedServer.gone`` is set when a write found the client gone (or the
script ended), so a test can see that leaving a ``with`` block closed the connection.
"""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable

import requests

__all__ = ["ScriptedServer"]


class ScriptedServer:
    def __init__(self, script: Callable[[Callable[[bytes], None]], None], *, chunked=False) -> None:
        self.script = script
        self.chunked = chunked
        self.gone = threading.Event()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1" if chunked else "HTTP/1.0"

            def do_GET(self) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("x-request-id", "req_sse")
                if outer.chunked:
                    self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                self.wfile.flush()

                def write(data: bytes) -> None:
                    if outer.chunked:
                        data = b"%x\r\n%s\r\n" % (len(data), data)
                    self.wfile.write(data)
                    self.wfile.flush()

                try:
                    outer.script(write)
                    if outer.chunked:
                        self.wfile.write(b"0\r\n\r\n")
                except OSError:
                    pass
                finally:
                    outer.gone.set()
                    self.close_connection = True

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/stream"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> ScriptedServer:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()

    def get(self, *, read_timeout: float = 30.0) -> requests.Response:
        return requests.get(self.url, stream=True, timeout=(5, read_timeout))
