"""A tiny scripted HTTP server for the cases the emulator must never produce.

A hostile or broken server (one that drips bytes, inflates gzip, nests JSON
without end, or invents statuses) is a test fixture, not an emulator
feature: each test hands ``ScriptedServer`` a function that writes the raw
reply for each request.
"""

from __future__ import annotations

import socket
import threading
from typing import Callable, List


class Request:
    def __init__(self, method: str, path: str, headers: dict, body: bytes) -> None:
        self.method, self.path, self.headers, self.body = method, path, headers, body


class ScriptedServer:
    """Serves ``reply(request, connection)`` on 127.0.0.1; one thread per connection, all joined on exit."""

    def __init__(self, reply: Callable[[Request, socket.socket], None]) -> None:
        self._reply = reply
        self.requests: List[Request] = []
        self._listener = socket.socket()
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(16)
        self._threads: List[threading.Thread] = []
        self._connections: List[socket.socket] = []
        self._stopped = threading.Event()
        self.base_url = f"http://127.0.0.1:{self._listener.getsockname()[1]}/v1"

    def __enter__(self) -> ScriptedServer:
        self._accepting = threading.Thread(target=self._accept, name="scripted-accept", daemon=True)
        self._accepting.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stopped.set()
        try:
            socket.create_connection(self._listener.getsockname(), timeout=1).close()
        except OSError:
            pass
        self._accepting.join(5)
        self._listener.close()
        for connection in list(self._connections):
            try:
                connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        for thread in self._threads:
            thread.join(5)

    def _accept(self) -> None:
        while not self._stopped.is_set():
            connection, _ = self._listener.accept()
            if self._stopped.is_set():
                connection.close()
                return
            self._connections.append(connection)
            thread = threading.Thread(
                target=self._serve, args=(connection,), name="scripted-_serve", daemon=True
            )
            self._threads.append(thread)
            thread.start()

    def _serve(self, connection: socket.socket) -> None:
        reader = connection.makefile("rb")
        try:
            while not self._stopped.is_set():
                line = reader.readline()
                if not line:
                    return
                method, path, _ = line.decode("latin-1").split(" ", 2)
                headers = {}
                while True:
                    header = reader.readline().decode("latin-1").strip()
                    if not header:
                        break
                    name, _, value = header.partition(":")
                    headers[name.strip().lower()] = value.strip()
                body = reader.read(int(headers.get("content-length", "0") or 0))
                request = Request(method, path, headers, body)
                self.requests.append(request)
                self._reply(request, connection)
        except (OSError, ValueError):
            return
        finally:
            reader.close()
            connection.close()


def respond(connection: socket.socket, status: int, body: bytes, headers: dict = None) -> None:
    head = [
        f"HTTP/1.1 {status} X",
        f"Content-Length: {len(body)}",
        "Content-Type: application/json",
    ]
    head += [f"{k}: {v}" for k, v in (headers or {}).items()]
    connection.sendall(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body)
