"""One HTTP attempt: ``(method, path, headers, body)`` in, ``Reply(status, headers, body)`` out.

Never retries and never logs. The hot path (every create and every poll)
goes to urllib3's connection pool directly: ``requests.Session`` costs
about four times the CPU per call in merging settings we already resolved
once. What users rely on from requests is kept by building the pool with
requests' own helpers: environment proxies and ``NO_PROXY`` (resolved by
the client), CA bundles and ``verify=``, proxy authentication.

Two bounds hold on every attempt, whatever the server does:

- wall-clock: the whole reply (status line, headers, body) must arrive by
  the attempt's ``reply_by`` time, or a watchdog thread shuts the socket
  down and the attempt fails with :class:`APITimeoutError` (a per-read
  timeout alone lets a server that drips a byte a second hold a call
  forever);
- size: a body, counted after decompression, may not pass
  ``max_response_bytes`` (:class:`ResponseTooLargeError`).

Every library failure becomes :class:`APIConnectionError` (or a subclass)
whose message names the method and path, never a query string.
"""

from __future__ import annotations

import heapq
import itertools
import socket
import ssl
import threading
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple, Union

import requests
import urllib3
from requests.adapters import HTTPAdapter
from urllib3.exceptions import (
    ConnectTimeoutError,
    NewConnectionError,
    ProxyError,
    ReadTimeoutError,
    SSLError,
)
from urllib3.util.retry import Retry

from ._redact import redact_url
from .errors import APIConnectionError, APITimeoutError, ResponseTooLargeError, TLSError

__all__ = ["Reply", "Transport"]

_CHUNK = 64 * 1024


class Reply:
    """What one HTTP attempt brought back; ``headers`` is case-insensitive (``get("content-type")``).

    Read-only by convention; a plain class, not a dataclass: one is made
    per request, on the hot path.
    """

    __slots__ = ("status", "headers", "body")

    def __init__(self, status: int, headers: Mapping[str, str], body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body

    @property
    def request_id(self) -> Optional[str]:
        return self.headers.get("x-request-id")

    def __repr__(self) -> str:
        return f"Reply(status={self.status}, {len(self.body)} bytes)"


class Transport:
    """A urllib3 pool of ``pool_size`` keep-alive connections to ``base_url``'s host.

    The pool blocks when every connection is busy instead of opening extra
    ones it would throw away, so at most ``pool_size`` requests are on the
    wire at once. Thread-safe.
    """

    def __init__(
        self,
        base_url: str,
        *,
        pool_size: int,
        user_agent: str,
        verify: Union[bool, str] = True,
        proxies: Optional[Mapping[str, str]] = None,
        max_response_bytes: int,
        clock: Callable[[], float],
    ) -> None:
        self._adapter = HTTPAdapter(
            pool_connections=1, pool_maxsize=pool_size, pool_block=True, max_retries=0
        )
        request = requests.PreparedRequest()
        request.prepare(method="GET", url=base_url)
        proxies = dict(proxies or {})
        try:
            if hasattr(self._adapter, "get_connection_with_tls_context"):  # requests >= 2.32.2
                pool = self._adapter.get_connection_with_tls_context(
                    request, verify, proxies=proxies
                )
            else:  # pragma: no cover - older requests
                pool = self._adapter.get_connection(base_url, proxies)
            self._adapter.cert_verify(pool, base_url, verify, None)
        except (OSError, ValueError, requests.exceptions.RequestException) as exc:
            from .errors import ConfigurationError

            raise ConfigurationError(
                f"cannot set up connections to {redact_url(base_url)}: {redact_url(str(exc))}"
            ) from None
        # Through a plain-HTTP proxy the request line carries the absolute URL (requests' own rule).
        absolute = self._adapter.request_url(request, proxies) != request.path_url
        self._prefix = base_url if absolute else request.path_url.rstrip("/")
        self._watchdog = _Watchdog(clock)
        pool.ConnectionCls = _guarded(pool.ConnectionCls, self._watchdog)
        self._pool = pool
        self._user_agent = user_agent
        self._max_response_bytes = max_response_bytes
        self._clock = clock
        # Made once, not per request: urllib3 would build the same objects on every call.
        self._no_retries = Retry(False, redirect=False)
        self._timeouts: Dict[Tuple[float, float], urllib3.Timeout] = {}

    def send(
        self,
        method: str,
        path: str,
        *,
        headers: Mapping[str, str],
        body: Any,
        timeout: Tuple[float, float],
        reply_by: float,
    ) -> Reply:
        """Send one request and read the whole reply.

        ``timeout`` is ``(connect, read)`` per socket operation; ``reply_by``
        (on the transport's clock) bounds the whole reply once the request
        is sent. Raises :class:`APITimeoutError`,
        :class:`APIConnectionError` (``request_sent`` false when nothing
        reached the server), :class:`TLSError` or
        :class:`ResponseTooLargeError`; never returns a partial body.
        """
        send_headers = {"User-Agent": self._user_agent, "Accept-Encoding": "gzip, deflate"}
        send_headers.update(headers)
        if body is not None and not isinstance(body, (bytes, bytearray)):
            send_headers["Content-Length"] = str(len(body))  # a streamed upload knows its length
        bounds = self._timeouts.get(timeout)
        if bounds is None:
            if (
                len(self._timeouts) >= 256
            ):  # deadlines make many distinct bounds: keep the cache small
                self._timeouts.clear()
            bounds = self._timeouts[timeout] = urllib3.Timeout(connect=timeout[0], read=timeout[1])
        alarm = self._watchdog.prepare(reply_by)
        response = None
        try:
            response = self._pool.urlopen(
                method,
                self._prefix + path,
                body=body,
                headers=send_headers,
                timeout=bounds,
                retries=self._no_retries,
                redirect=False,
                assert_same_host=False,
                preload_content=False,
                decode_content=True,
                enforce_content_length=True,
            )
            content = self._read(response, method, path)
            status, reply_headers = response.status, response.headers
        except ResponseTooLargeError:
            raise
        except BaseException as exc:
            if isinstance(exc, Exception):
                # "from None": urllib3's exceptions repeat the full URL and their own causes in their
                # text; what they say is in our message, redacted, so the chain adds only leak risk.
                raise _connection_error(exc, method, path, alarm.fired) from None
            raise
        finally:
            self._watchdog.finish(alarm)  # before the connection can go back to the pool
            if response is not None:
                if alarm.fired or not response.closed:
                    response.close()  # a half-read or shut-down connection is never reused
                response.release_conn()
        return Reply(status, reply_headers, content)

    def _read(self, response: Any, method: str, path: str) -> bytes:
        headers = response.headers
        length = headers.get("content-length")
        if (
            length is not None
            and length.isdigit()
            and int(length) <= self._max_response_bytes
            and headers.get("content-encoding", "identity").lower() == "identity"
        ):
            # The usual reply: its size is known and nothing decompresses it, so one read of exactly
            # that many bytes (a shorter body raises) is within the cap.
            return response.read()  # type: ignore[no-any-return]
        chunks: List[bytes] = []
        size = 0
        for chunk in response.stream(_CHUNK, decode_content=True):
            size += len(chunk)
            if size > self._max_response_bytes:
                raise ResponseTooLargeError(
                    f"{method} {path}: the reply is larger than max_response_bytes={self._max_response_bytes} (counted after decompression); "
                    "nothing was kept",
                    status=response.status,
                    request_id=response.headers.get("x-request-id"),
                )
            chunks.append(chunk)
        return b"".join(chunks)

    def close(self) -> None:
        self._watchdog.close()
        self._adapter.close()


def _connection_error(
    exc: Exception, method: str, path: str, wall_clock_expired: bool
) -> APIConnectionError:
    what = f"{method} {path}"
    if wall_clock_expired:
        return APITimeoutError(
            f"{what} timed out: no complete reply within the attempt's time bound"
        )
    if isinstance(exc, (SSLError, ssl.SSLError)):
        return TLSError(
            f"{what}: TLS failed ({_describe(exc)}); check verify=, REQUESTS_CA_BUNDLE or SSL_CERT_FILE"
        )
    if isinstance(exc, ConnectTimeoutError):
        return APITimeoutError(f"{what} timed out connecting: {_describe(exc)}", request_sent=False)
    if isinstance(exc, (ReadTimeoutError, socket.timeout)):
        return APITimeoutError(f"{what} timed out: {_describe(exc)}")
    if isinstance(exc, (NewConnectionError, ProxyError)):
        return APIConnectionError(f"{what} could not connect: {_describe(exc)}", request_sent=False)
    # A reset, a body cut short, an upload source failing mid-way.
    return APIConnectionError(f"{what} failed before a complete reply: {_describe(exc)}")


def _describe(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    return redact_url(text)


# --- the wall-clock bound ------------------------------------------------------


class _Alarm:
    """One attempt's bound: fired at most once, never after it is disarmed (both under the watchdog's lock)."""

    __slots__ = ("reply_by", "sock", "fired", "disarmed", "armed")

    def __init__(self, reply_by: float) -> None:
        self.reply_by = reply_by
        self.sock: Optional[socket.socket] = None
        self.fired = False
        self.disarmed = False
        self.armed = False


class _Watchdog:
    """One thread that shuts down the socket of any attempt that passes its ``reply_by``.

    ``prepare`` parks the bound for the calling thread; the connection arms
    it with its socket when it starts reading the reply (see
    :func:`_guarded`); ``finish`` disarms it. Entries are a heap; disarmed
    ones are dropped lazily. One plain lock guards the heap and every
    alarm's state (two acquisitions per request, no per-request lock). The
    thread starts on the first armed alarm.
    """

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._local = threading.local()
        self._heap: List[Tuple[float, int, _Alarm]] = []
        self._live = 0  # armed and not disarmed: when the heap holds many more, it is rebuilt
        self._sequence = itertools.count()
        self._lock = threading.Lock()
        self._condition = threading.Condition(self._lock)
        self._thread: Optional[threading.Thread] = None
        self._closed = False

    def prepare(self, reply_by: float) -> _Alarm:
        alarm = _Alarm(reply_by)
        self._local.alarm = alarm
        return alarm

    def finish(self, alarm: _Alarm) -> None:
        """Disarm ``alarm`` (it can no longer fire once this returns) and forget it for this thread."""
        with self._lock:
            alarm.disarmed = True
            if alarm.armed:
                self._live -= 1
        self._local.alarm = None

    def arm(self, sock: Any) -> None:
        alarm: Optional[_Alarm] = getattr(self._local, "alarm", None)
        if alarm is None or sock is None:
            return
        with self._lock:
            if self._closed or alarm.disarmed:
                return
            alarm.sock = sock
            alarm.armed = True
            self._live += 1
            heap = self._heap
            while heap and heap[0][2].disarmed:
                heapq.heappop(heap)
            if (
                len(heap) > 64 and len(heap) > 4 * self._live
            ):  # disarmed entries behind a long-lived head
                heap[:] = [entry for entry in heap if not entry[2].disarmed]
                heapq.heapify(heap)
            heapq.heappush(heap, (alarm.reply_by, next(self._sequence), alarm))
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="sail-lite-watchdog", daemon=True
                )
                self._thread.start()
            elif heap[0][2] is alarm:
                self._condition.notify()
        if self._clock() >= alarm.reply_by:
            self._fire(alarm)

    def _fire(self, alarm: _Alarm) -> None:
        with self._lock:  # so that finish() cannot return while the socket is being shut down
            if alarm.disarmed or alarm.sock is None:
                return
            alarm.fired = True
            try:
                if isinstance(alarm.sock, socket.socket):
                    # socket.socket.shutdown, not SSLSocket's: wakes the blocked reader without
                    # tearing the TLS object out from under it.
                    socket.socket.shutdown(alarm.sock, socket.SHUT_RDWR)
                else:  # a TLS-in-TLS transport (HTTPS through an HTTPS proxy)
                    alarm.sock.shutdown(socket.SHUT_RDWR)
            except Exception:  # already closed: nothing left to wake
                pass

    def _run(self) -> None:
        while True:
            with self._condition:
                while True:
                    if self._closed:
                        return
                    if not self._heap:
                        self._condition.wait()
                        continue
                    reply_by, _, alarm = self._heap[0]
                    if alarm.disarmed:
                        heapq.heappop(self._heap)
                        continue
                    wait = reply_by - self._clock()
                    if wait <= 0:
                        heapq.heappop(self._heap)
                        break
                    self._condition.wait(wait)
            self._fire(alarm)

    def close(self) -> None:
        with self._condition:
            self._closed = True
            self._heap.clear()
            self._condition.notify_all()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=5)


def _guarded(base: type, watchdog: _Watchdog) -> type:
    """``base`` (a urllib3 connection class) whose reply reading is watched by ``watchdog``."""

    def getresponse(self: Any, *args: Any, **kwargs: Any) -> Any:
        watchdog.arm(self.sock)
        return base.getresponse(self, *args, **kwargs)

    return type("Guarded" + base.__name__, (base,), {"getresponse": getresponse})
