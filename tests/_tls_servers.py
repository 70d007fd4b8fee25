"""Test-only network helpers: a TLS-terminating forwarder and an HTTP forward proxy, both on loopback.

Both stand in front of the (plain HTTP) emulator without touching it:

- :class:`TLSForwarder` accepts TLS with a given certificate and pipes the
  decrypted bytes both ways to the emulator's port, so a client sees the
  emulator over HTTPS;
- :class:`ForwardProxy` is a small HTTP/1.1 forward proxy: it takes
  absolute-URI requests (``GET http://host:port/path``), forwards them with
  ``http.client`` and answers with the upstream reply; ``CONNECT`` opens a
  byte tunnel (HTTPS through the proxy). It counts what it forwarded and keeps
  each request's headers.

Each runs its own threads and, on :meth:`close`, shuts every connection
down and joins every thread it started (``threads_alive`` says whether any
survived).
"""

from __future__ import annotations

import http.client
import http.server
import socket
import ssl
import threading
from typing import Dict, List, Optional, Tuple

__all__ = ["TLSForwarder", "ForwardProxy"]

_HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
}


def _pipe(source: socket.socket, sink: socket.socket) -> None:
    """Copy bytes from ``source`` to ``sink`` until either side ends; then half-close ``sink``."""
    try:
        while True:
            data = source.recv(65536)
            if not data:
                break
            sink.sendall(data)
    except (OSError, ValueError):
        pass
    finally:
        try:
            sink.shutdown(socket.SHUT_WR)
        except (OSError, ValueError):
            pass


class _Threads:
    """The threads and sockets a helper started, so close() can end and join all of them."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._threads: List[threading.Thread] = []
        self._sockets: List[socket.socket] = []

    def start(self, target, *args) -> threading.Thread:  # type: ignore[no-untyped-def]
        thread = threading.Thread(target=target, args=args, daemon=True, name="test-net-helper")
        with self._lock:
            self._threads.append(thread)
        thread.start()
        return thread

    def track(self, sock: socket.socket) -> None:
        with self._lock:
            self._sockets.append(sock)

    def close(self) -> None:
        with self._lock:
            sockets, self._sockets = self._sockets, []
        for sock in sockets:
            for action in (lambda: socket.socket.shutdown(sock, socket.SHUT_RDWR), sock.close):  # noqa: B023
                try:
                    action()
                except (OSError, ValueError):
                    pass
        with self._lock:
            threads = list(self._threads)
        for thread in threads:
            if thread is not threading.current_thread():
                thread.join(timeout=5)

    @property
    def alive(self) -> int:
        with self._lock:
            return sum(t.is_alive() for t in self._threads)


class TLSForwarder:
    """``https://127.0.0.1:<port>`` in front of ``127.0.0.1:<upstream_port>`` (plain TCP).

    ``context`` is the server-side SSL context (with the certificate to
    present). Counts ``handshakes_ok`` and ``handshakes_failed`` (a client
    that refuses the certificate fails its handshake).
    """

    def __init__(self, upstream_port: int, context: ssl.SSLContext) -> None:
        self._upstream = ("127.0.0.1", upstream_port)
        self._context = context
        self._threads = _Threads()
        self._closed = threading.Event()
        self._handshakes = threading.Condition()
        self.handshakes_ok = 0
        self.handshakes_failed = 0
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.05)  # so the accept loop sees close() promptly
        self.port = self._listener.getsockname()[1]
        self._threads.start(self._accept_loop)

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def _accept_loop(self) -> None:
        while not self._closed.is_set():
            try:
                raw, _ = self._listener.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            raw.settimeout(None)
            self._threads.track(raw)
            self._threads.start(self._serve, raw)

    def _serve(self, raw: socket.socket) -> None:
        try:
            tls = self._context.wrap_socket(raw, server_side=True)
        except (OSError, ValueError):
            raw.close()
            self._count_handshake(ok=False)
            return
        self._count_handshake(ok=True)
        self._threads.track(tls)
        try:
            upstream = socket.create_connection(self._upstream)
        except OSError:
            tls.close()
            return
        self._threads.track(upstream)
        back = self._threads.start(_pipe, upstream, tls)
        _pipe(tls, upstream)
        back.join()
        for sock in (tls, upstream):
            try:
                sock.close()
            except OSError:
                pass

    def _count_handshake(self, *, ok: bool) -> None:
        with self._handshakes:
            if ok:
                self.handshakes_ok += 1
            else:
                self.handshakes_failed += 1
            self._handshakes.notify_all()

    def wait_for_handshakes(self, count: int, timeout: float = 10.0) -> bool:
        """Block until ``count`` handshakes (either outcome) are over; the server side may finish after the client."""
        with self._handshakes:
            return self._handshakes.wait_for(
                lambda: self.handshakes_ok + self.handshakes_failed >= count, timeout
            )

    def close(self) -> None:
        self._closed.set()
        self._threads.close()
        self._listener.close()

    @property
    def threads_alive(self) -> int:
        return self._threads.alive

    def __enter__(self) -> TLSForwarder:
        return self

    def __exit__(self, *exc_info) -> None:  # type: ignore[no-untyped-def]
        self.close()


class ForwardProxy:
    """An HTTP/1.1 forward proxy on ``http://127.0.0.1:<port>``.

    ``forwarded`` counts absolute-URI requests it relayed, ``tunnels``
    ``CONNECT`` tunnels it opened, ``refused`` requests that were not in
    proxy form (origin-form paths); ``seen`` keeps ``(method, url,
    headers)`` of each relayed request.
    """

    def __init__(self) -> None:
        self.forwarded = 0
        self.tunnels = 0
        self.refused = 0
        self.seen: List[Tuple[str, str, Dict[str, str]]] = []
        self._lock = threading.Lock()
        self._threads = _Threads()
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:  # type: ignore[no-untyped-def]
                pass

            def setup(self) -> None:
                super().setup()
                proxy._threads.track(self.connection)

            def do_CONNECT(self) -> None:
                host, _, port = self.path.rpartition(":")
                try:
                    upstream = socket.create_connection((host, int(port)))
                except (OSError, ValueError):
                    self.send_error(502)
                    return
                with proxy._lock:
                    proxy.tunnels += 1
                proxy._threads.track(upstream)
                self.send_response(200, "Connection established")
                self.end_headers()
                self.wfile.flush()
                back = proxy._threads.start(_pipe, upstream, self.connection)
                _pipe(self.connection, upstream)
                back.join()
                upstream.close()
                self.close_connection = True

            def _relay(self) -> None:
                if not self.path.startswith("http://"):
                    with proxy._lock:
                        proxy.refused += 1
                    self.send_error(400, "not a proxy request (origin-form path)")
                    return
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP}
                with proxy._lock:
                    proxy.forwarded += 1
                    proxy.seen.append((self.command, self.path, dict(headers)))
                rest = self.path[len("http://") :]
                hostport, _, path = rest.partition("/")
                host, _, port = hostport.partition(":")
                upstream = http.client.HTTPConnection(host, int(port or 80), timeout=30)
                try:
                    upstream.request(self.command, "/" + path, body=body, headers=headers)
                    reply = upstream.getresponse()
                    data = reply.read()
                    self.send_response(reply.status, reply.reason)
                    for name, value in reply.getheaders():
                        if name.lower() not in _HOP_BY_HOP and name.lower() != "content-length":
                            self.send_header(name, value)
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                finally:
                    upstream.close()

            do_GET = do_POST = do_PATCH = do_DELETE = do_PUT = _relay

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = False
        self._server.block_on_close = True  # server_close() joins the per-request threads
        self.port = self._server.server_address[1]
        self._serve_thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            daemon=True,
            name="test-forward-proxy",
        )
        self._serve_thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def headers_of(self, method: str, path_suffix: str) -> Optional[Dict[str, str]]:
        """The headers of the last relayed ``method`` request whose URL ends with ``path_suffix``."""
        with self._lock:
            for seen_method, url, headers in reversed(self.seen):
                if seen_method == method and url.endswith(path_suffix):
                    return headers
        return None

    def close(self) -> None:
        self._server.shutdown()
        self._threads.close()  # wakes handler threads blocked on kept-alive connections
        self._server.server_close()
        self._serve_thread.join(timeout=5)

    @property
    def threads_alive(self) -> int:
        handlers = [
            t
            for t in threading.enumerate()
            if getattr(getattr(t, "_target", None), "__self__", None) is self._server
        ]
        return self._threads.alive + len(handlers) + self._serve_thread.is_alive()

    def __enter__(self) -> ForwardProxy:
        return self

    def __exit__(self, *exc_info) -> None:  # type: ignore[no-untyped-def]
        self.close()
