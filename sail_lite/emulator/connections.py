"""The emulator's connections: one selector thread reads request heads, a bounded pool serves them.

An idle or half-sent connection costs a socket and a small buffer, never a
thread: the loop thread reads every connection's bytes without blocking until
a whole request head (up to the blank line) has arrived, then hands the
connection to a worker. The worker serves that one request (reading its body,
if any, with a per-read timeout) and gives the connection back to the loop
for the next request (HTTP/1.1 keep-alive), with any bytes it read past the
request (pipelining) kept in the connection's buffer.

A request head must be complete within ``head_timeout`` seconds of the moment
the connection started waiting for it (its accept, or the end of the previous
reply): a client sending one header line now and then cannot stretch it.
"""

from __future__ import annotations

import collections
import logging
import queue
import selectors
import socket
import threading
import time
from typing import Any, Callable, Deque, Dict, List, Optional, Set, Tuple

__all__ = ["Connection", "ConnectionLoop", "SocketReader", "SocketWriter", "WorkerPool"]

_logger = logging.getLogger(__name__)

#: A request head longer than this (request line and headers) is refused with a 431.
MAX_HEAD_BYTES = 64 * 1024
_RECV = 64 * 1024
_SWEEP_EVERY = 0.05  # seconds between two looks for connections past their deadline


class Connection:
    """One client connection: its socket, the bytes read and not yet used, and its head deadline."""

    __slots__ = ("sock", "address", "buffer", "deadline")

    def __init__(self, sock: socket.socket, address: Any, deadline: float) -> None:
        self.sock = sock
        self.address = address
        self.buffer = bytearray()
        self.deadline = deadline

    def head_complete(self) -> bool:
        """True once the buffer holds a whole request head (leading blank lines are dropped)."""
        while self.buffer[:2] == b"\r\n" or self.buffer[:1] == b"\n":
            del self.buffer[: 2 if self.buffer[:1] == b"\r" else 1]
        return b"\r\n\r\n" in self.buffer or b"\n\n" in self.buffer


class SocketReader:
    """A file-like reader over a blocking socket that first serves the bytes already buffered.

    What it read from the socket and did not hand out stays in ``buffer`` (the
    next pipelined request's bytes), so the connection can go back to the loop.
    """

    def __init__(self, sock: socket.socket, buffer: bytearray) -> None:
        self._sock = sock
        self.buffer = buffer

    def _fill(self) -> bool:
        data = self._sock.recv(_RECV)
        if not data:
            return False
        self.buffer += data
        return True

    def _take(self, count: int) -> bytes:
        data = bytes(self.buffer[:count])
        del self.buffer[:count]
        return data

    def readline(self, limit: int = -1) -> bytes:
        while True:
            end = self.buffer.find(b"\n")
            if end >= 0 and (limit < 0 or end < limit):
                return self._take(end + 1)
            if 0 <= limit <= len(self.buffer):
                return self._take(limit)
            if not self._fill():
                return self._take(len(self.buffer))

    def read(self, size: int = -1) -> bytes:
        """Up to ``size`` bytes (fewer when that is what arrived); ``b""`` at the end of the stream."""
        if size < 0:
            while self._fill():
                pass
            return self._take(len(self.buffer))
        if not self.buffer and size > 0:
            return self._sock.recv(min(size, 1 << 20))
        return self._take(min(size, len(self.buffer)))

    def readinto(self, view: Any) -> int:
        data = self.read(len(view))
        view[: len(data)] = data
        return len(data)

    def close(self) -> None:
        """The socket belongs to the connection, not to this reader."""


class SocketWriter:
    """``wfile`` for a handler: every write is one ``sendall``."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock

    def write(self, data: bytes) -> int:
        self._sock.sendall(data)
        return len(data)

    def flush(self) -> None:
        """Nothing is buffered."""

    def close(self) -> None:
        """The socket belongs to the connection, not to this writer."""


class WorkerPool:
    """At most ``max_workers`` daemon threads, started as work arrives (as ThreadPoolExecutor does).

    Daemon threads, joined by :meth:`close` with a bound, so a wedged request
    can never keep the interpreter alive.
    """

    def __init__(self, max_workers: int, name: str) -> None:
        if max_workers < 1:
            raise ValueError("max_workers must be at least 1")
        self.max_workers = max_workers
        self._name = name
        self._tasks: queue.SimpleQueue[Optional[Tuple[Callable[..., None], Tuple[Any, ...]]]]
        self._tasks = queue.SimpleQueue()
        self._idle = threading.Semaphore(0)
        self._threads: List[threading.Thread] = []
        self._lock = threading.Lock()
        self._closed = False

    def submit(self, func: Callable[..., None], *args: Any) -> None:
        with self._lock:
            if self._closed:
                raise RuntimeError("the worker pool is closed")
            self._tasks.put((func, args))
            if self._idle.acquire(timeout=0) or len(self._threads) >= self.max_workers:
                return
            thread = threading.Thread(
                target=self._work, name=f"{self._name}-{len(self._threads)}", daemon=True
            )
            self._threads.append(thread)
        thread.start()

    def _work(self) -> None:
        while True:
            task = self._tasks.get()
            if task is None:
                return
            func, args = task
            try:
                func(*args)
            except Exception:  # a bug in one request must not end the worker
                _logger.exception("emulator worker error")
            self._idle.release()

    @property
    def threads(self) -> int:
        with self._lock:
            return len(self._threads)

    def close(self, deadline: float) -> bool:
        """Stop every worker once the queued work is done; join until ``deadline``; True if all ended."""
        with self._lock:
            self._closed = True
            threads = list(self._threads)
        for _ in threads:
            self._tasks.put(None)
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        return not any(thread.is_alive() for thread in threads)


class ConnectionLoop:
    """Accepts connections and reads request heads on one thread; ``serve(connection)`` runs on a worker.

    ``serve`` must end by calling :meth:`resume` (keep the connection) or
    :meth:`close` (end it). ``on_accept(sock)`` counts a new connection;
    ``refuse(sock)`` answers one over ``max_connections`` before it is closed.
    """

    def __init__(
        self,
        address: Tuple[str, int],
        *,
        serve: Callable[[Connection], None],
        pool: WorkerPool,
        max_connections: int,
        head_timeout: float,
        on_accept: Callable[[socket.socket], None],
        refuse: Callable[[socket.socket], None],
        backlog: int = 1024,
    ) -> None:
        family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self._listener = socket.create_server(address, family=family, backlog=backlog)
        self._listener.setblocking(False)
        self.server_address = self._listener.getsockname()
        self._serve, self._pool = serve, pool
        self.max_connections = max_connections
        self.head_timeout = head_timeout
        self._on_accept, self._refuse = on_accept, refuse
        self._selector = selectors.DefaultSelector()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._idle: Dict[socket.socket, Connection] = {}
        self._busy: Set[Connection] = set()
        self._resumed: Deque[Connection] = collections.deque()
        self._lock = threading.Lock()
        self._stopping = False
        self._thread: Optional[threading.Thread] = None

    # -- lifecycle -----------------------------------------------------------------------------------------

    def start(self) -> None:
        self._selector.register(self._listener, selectors.EVENT_READ, "accept")
        self._selector.register(self._wake_r, selectors.EVENT_READ, "wake")
        self._thread = threading.Thread(target=self._run, name="sail-emulator", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop accepting and close every connection waiting for a head; busy ones are the caller's."""
        with self._lock:
            self._stopping = True
        self._wake()
        if self._thread is not None:
            self._thread.join()
        self._selector.close()
        self._listener.close()
        self._wake_r.close()
        self._wake_w.close()

    @property
    def open_connections(self) -> int:
        with self._lock:
            return len(self._idle) + len(self._busy) + len(self._resumed)

    def busy_sockets(self) -> List[socket.socket]:
        with self._lock:
            return [connection.sock for connection in self._busy]

    # -- hand-offs from workers ----------------------------------------------------------------------------

    def resume(self, connection: Connection) -> None:
        """Give a served connection back for its next request (its head deadline starts now)."""
        with self._lock:
            self._busy.discard(connection)
            if self._stopping:
                _close(connection.sock)
                return
            connection.deadline = time.monotonic() + self.head_timeout
            self._resumed.append(connection)
        self._wake()

    def close(self, connection: Connection) -> None:
        with self._lock:
            self._busy.discard(connection)
        _close(connection.sock)

    def _wake(self) -> None:
        try:
            self._wake_w.send(b"x")
        except OSError:
            pass  # the pipe is full (a wake-up is pending anyway) or closed

    # -- the loop ------------------------------------------------------------------------------------------

    def _run(self) -> None:
        next_sweep = time.monotonic()
        try:
            while True:
                with self._lock:
                    if self._stopping:
                        return
                for key, _ in self._selector.select(timeout=_SWEEP_EVERY):
                    if key.data == "accept":
                        self._accept()
                    elif key.data == "wake":
                        self._take_resumed()
                    else:
                        self._read(key.data)
                now = time.monotonic()
                if now >= next_sweep:
                    self._sweep(now)
                    next_sweep = now + _SWEEP_EVERY
        finally:
            for sock in list(self._idle):
                _close(sock)
            self._idle.clear()
            with self._lock:
                for connection in self._resumed:
                    _close(connection.sock)
                self._resumed.clear()

    def _accept(self) -> None:
        for _ in range(256):  # a burst at a time, so reads are not starved by a flood of connects
            try:
                sock, address = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError:  # EMFILE and the like: the client is dropped, the loop goes on
                _logger.warning("accept failed", exc_info=True)
                return
            if self.open_connections >= self.max_connections:
                sock.setblocking(False)
                self._refuse(sock)
                _close(sock)
                continue
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._on_accept(sock)
            self._watch(Connection(sock, address, time.monotonic() + self.head_timeout))

    def _take_resumed(self) -> None:
        try:
            while self._wake_r.recv(4096):
                pass
        except (BlockingIOError, InterruptedError):
            pass
        while True:
            with self._lock:
                if not self._resumed:
                    return
                connection = self._resumed.popleft()
            connection.sock.setblocking(False)
            if connection.head_complete():
                self._dispatch(connection)
            else:
                self._watch(connection)

    def _watch(self, connection: Connection) -> None:
        self._idle[connection.sock] = connection
        self._selector.register(connection.sock, selectors.EVENT_READ, connection)

    def _forget(self, connection: Connection) -> None:
        self._idle.pop(connection.sock, None)
        try:
            self._selector.unregister(connection.sock)
        except (KeyError, ValueError):
            pass

    def _read(self, connection: Connection) -> None:
        try:
            data = connection.sock.recv(_RECV)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self._forget(connection)
            _close(connection.sock)
            return
        connection.buffer += data
        if connection.head_complete():
            self._forget(connection)
            self._dispatch(connection)
        elif len(connection.buffer) > MAX_HEAD_BYTES:
            self._forget(connection)
            _refuse_head(connection.sock)
            _close(connection.sock)

    def _dispatch(self, connection: Connection) -> None:
        with self._lock:
            self._busy.add(connection)
        connection.sock.setblocking(True)
        try:
            self._pool.submit(self._serve, connection)
        except RuntimeError:  # the pool closed: the server is stopping
            self.close(connection)

    def _sweep(self, now: float) -> None:
        late = [c for c in self._idle.values() if c.deadline <= now]
        for connection in late:  # silent or too slow: closed without a reply
            self._forget(connection)
            _close(connection.sock)


def _refuse_head(sock: socket.socket) -> None:
    body = (
        b'{"error":{"message":"the request head is larger than 65536 bytes",'
        b'"type":"invalid_request_error","param":null,"code":"invalid_http"}}'
    )
    head = (
        "HTTP/1.1 431 Request Header Fields Too Large\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    try:
        sock.send(head.encode("latin-1") + body)
    except OSError:
        pass


def _close(sock: socket.socket) -> None:
    try:
        sock.close()
    except OSError:
        pass
