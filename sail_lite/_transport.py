"""One HTTP attempt through requests: ``(method, path, headers, body)`` in, ``Reply`` out.

Never retries and never logs. Every call goes out through a ``requests.Session``
(``Session.request``: its adapters, auth, certificates, proxies, hooks and cookies
apply). The client's own Session mounts :class:`BoundedAdapter` for ``http://`` and
``https://``, with a pool sized to the client's workers; a Session the user gives
(``Client(session=...)``) is used as it is, nothing mounted or changed. sail_lite
always sets its own headers (``Authorization``, ``User-Agent``, ...), timeouts and
redirect policy (none for API calls; :func:`open_download` for storage).

Two bounds hold on every attempt:

- wall-clock: the whole reply (status line, headers, body) must arrive by the
  attempt's ``reply_by`` time, or the attempt fails with :class:`APITimeoutError`;
- size: a body, counted after decompression, may not pass ``max_response_bytes``
  (:class:`ResponseTooLargeError`).

Every library failure becomes :class:`APIConnectionError` (or a subclass) whose
message names the method and path, never a query string, and says what happened
in words ("connection refused", "cannot resolve host ...").

Design notes: where this goes below requests' public API, and why
----------------------------------------------------------------
requests (and urllib3 under it) bounds each socket read, not a whole reply. A
server or proxy that sends one byte every few seconds keeps every read under its
timeout and holds a call for as long as it likes (measured: a reply dripped at one
byte per 50 ms held a ``read=0.4`` call 10 s; tinker storage at 1 byte/s held a
``deadline=20`` publish past 60 s). A user feels that on a real link as a hang
that no timeout ends. So :class:`BoundedAdapter` (a requests transport adapter,
requests' documented extension point) gives its urllib3 pools a connection class
whose ``http.client`` response reads the socket through :class:`_BoundedReader`:
before each ``recv`` the socket timeout is set to what is left of the attempt's
bound (never more than the read timeout), so the wall-clock bound holds without a
watchdog thread (the previous design's thread cost about 11 context switches per
request under load; ``bench/context_switches.py``). The bound of the running
attempt reaches the connection through a ``contextvars.ContextVar`` set around
``Session.request`` on the calling thread. That is the only place below requests'
public API. With a user's Session, whose adapters are its own, the per-read timeout
is clipped to the time left and the body is read with a clock check between
chunks: a server that drips the status line and headers is then bounded per read
only. SOCKS proxies (urllib3's own pool classes) are bounded the same way.
"""

from __future__ import annotations

import contextvars
import http.client
import io
import logging
import socket
import ssl
import time
import urllib.parse
from dataclasses import dataclass
from typing import Any, Callable, Iterator, List, Mapping, Optional, Tuple, Union

import requests
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.poolmanager import ProxyManager

from ._redact import redact_url
from .errors import (
    APIConnectionError,
    APIStatusError,
    APITimeoutError,
    InvalidRequestError,
    ResponseTooLargeError,
    TLSError,
)

__all__ = [
    "BoundedAdapter",
    "Download",
    "Reply",
    "Transport",
    "new_session",
    "open_download",
    "MAX_DOWNLOAD_REDIRECTS",
]

_CHUNK = 64 * 1024
#: Storage services redirect at most once or twice (a regional endpoint); more is a loop or a detour.
MAX_DOWNLOAD_REDIRECTS = 3
_REDIRECTS = frozenset({301, 302, 303, 307, 308})


class Reply:
    """What one HTTP attempt brought back; ``headers`` is case-insensitive (``get("content-type")``).

    Read-only by convention; a plain class with slots: one is made per request.
    """

    __slots__ = ("status", "headers", "body", "response")

    def __init__(
        self,
        status: int,
        headers: Mapping[str, str],
        body: bytes,
        response: Optional[requests.Response] = None,
    ) -> None:
        self.status = status
        self.headers = headers
        self.body = body
        #: A streamed 2xx reply's open ``requests.Response`` (body unread; the caller closes it).
        self.response = response

    @property
    def request_id(self) -> Optional[str]:
        return self.headers.get("x-request-id")

    def __repr__(self) -> str:
        return f"Reply(status={self.status}, {len(self.body)} bytes)"


# --- the wall-clock bound ------------------------------------------------------


@dataclass
class _Bound:
    """One attempt's wall-clock bound: ``reply_by`` on ``clock``; ``expired`` once a read hit it."""

    reply_by: float
    clock: Callable[[], float]
    expired: bool = False

    def remaining(self) -> float:
        return self.reply_by - self.clock()


#: The bound of the attempt running in this context (thread); read when a reply starts.
_ATTEMPT: contextvars.ContextVar[Optional[_Bound]] = contextvars.ContextVar(
    "sail_lite_attempt_bound", default=None
)


class _BoundedReader(io.RawIOBase):
    """A socket's reads, each given at most what is left of the attempt's bound."""

    def __init__(self, sock: Any, bound: _Bound, read_timeout: Optional[float]) -> None:
        super().__init__()
        self._sock, self._bound, self._read_timeout = sock, bound, read_timeout

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        left = self._bound.remaining()
        if left <= 0:
            self._bound.expired = True
            raise socket.timeout("the attempt's time bound passed")
        wait = left if self._read_timeout is None else min(left, self._read_timeout)
        self._sock.settimeout(None if wait == float("inf") else wait)  # an open stream: no bound
        try:
            return self._sock.recv_into(buffer)  # type: ignore[no-any-return]
        except socket.timeout:
            if self._bound.remaining() <= 0:
                self._bound.expired = True
            raise


class _BoundedResponse(http.client.HTTPResponse):
    """``http.client``'s response, reading through :class:`_BoundedReader` when an attempt is bounded."""

    def __init__(self, sock: Any, *args: Any, **kwargs: Any) -> None:
        super().__init__(sock, *args, **kwargs)
        bound = _ATTEMPT.get()
        if bound is not None:
            self.fp.close()  # the plain reader made above; the socket stays open
            self.fp = io.BufferedReader(_BoundedReader(sock, bound, sock.gettimeout()))


class _BoundedHTTPConnection(HTTPConnection):
    response_class = _BoundedResponse


class _BoundedHTTPSConnection(HTTPSConnection):
    response_class = _BoundedResponse


def _pool_wait() -> Optional[float]:
    """How long a bounded attempt may wait for a free connection: what is left of its bound.

    requests never passes urllib3 a ``pool_timeout``, so a blocking pool would otherwise wait
    forever, past every deadline, for a connection that is never given back (one whose call was
    cut off at interpreter exit). Outside a sail_lite attempt: ``None``, urllib3's default.
    """
    bound = _ATTEMPT.get()
    if bound is None or bound.reply_by == float("inf"):
        return None
    return max(bound.remaining(), 0.001)


class _PoolWaitWithinBound:
    """For a urllib3 pool class: wait for a free connection no longer than the attempt's bound."""

    def urlopen(self, method: str, url: str, *args: Any, **kwargs: Any) -> Any:
        kwargs.setdefault("pool_timeout", _pool_wait())
        return super().urlopen(method, url, *args, **kwargs)  # type: ignore[misc]


class _BoundedHTTPPool(_PoolWaitWithinBound, HTTPConnectionPool):
    ConnectionCls = _BoundedHTTPConnection


class _BoundedHTTPSPool(_PoolWaitWithinBound, HTTPSConnectionPool):
    ConnectionCls = _BoundedHTTPSConnection


_BOUNDED_POOLS = {"http": _BoundedHTTPPool, "https": _BoundedHTTPSPool}


class BoundedAdapter(HTTPAdapter):
    """requests' ``HTTPAdapter`` whose replies honour the running attempt's wall-clock bound.

    Behaves exactly as ``HTTPAdapter`` outside a sail_lite call. See the
    module's design notes for why it exists.
    """

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = dict(_BOUNDED_POOLS)

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> Any:
        manager = super().proxy_manager_for(proxy, **proxy_kwargs)
        if type(manager) is ProxyManager:  # not SOCKS: that manager has pool classes of its own
            manager.pool_classes_by_scheme = dict(_BOUNDED_POOLS)
        return manager


def new_session(
    *, pool_size: int, verify: Union[bool, str] = True, proxies: Optional[Mapping[str, str]] = None
) -> requests.Session:
    """A Session as the client builds its own: bounded adapters, ``pool_size`` connections per host.

    ``verify`` and ``proxies`` are already resolved (environment included), so the
    Session does not read the environment again on every call (``trust_env`` off).
    The pool waits when every connection is busy instead of opening extra ones, within the
    attempt's own bound (see :class:`_BoundedHTTPPool`).
    """
    session = requests.Session()
    session.trust_env = False
    session.verify = verify
    session.proxies = dict(proxies or {})
    for prefix in ("http://", "https://"):
        session.mount(
            prefix,
            BoundedAdapter(
                pool_connections=4, pool_maxsize=pool_size, pool_block=True, max_retries=0
            ),
        )
    return session


# --- one API attempt -----------------------------------------------------------


class Transport:
    """Attempts against ``base_url`` through one ``requests.Session``. Thread-safe.

    ``session`` is the user's (used as is, never closed here) or ``None``: then
    the transport builds its own with :func:`new_session` and closes it in
    :meth:`close`.
    """

    def __init__(
        self,
        base_url: str,
        *,
        pool_size: int,
        user_agent: str,
        verify: Union[bool, str] = True,
        proxies: Optional[Mapping[str, str]] = None,
        session: Optional[requests.Session] = None,
        max_response_bytes: int,
        clock: Callable[[], float],
    ) -> None:
        self._owns_session = session is None
        self.session = session or new_session(pool_size=pool_size, verify=verify, proxies=proxies)
        self._base_url = base_url
        self._headers = {"User-Agent": user_agent, "Accept-Encoding": "gzip, deflate"}
        self._max_response_bytes = max_response_bytes
        self._clock = clock

    def send(
        self,
        method: str,
        path: str,
        *,
        headers: Mapping[str, str],
        body: Any,
        timeout: Tuple[float, float],
        reply_by: float,
        stream: bool = False,
    ) -> Reply:
        """Send one request and read the whole reply.

        ``timeout`` is ``(connect, read)`` per socket operation; ``reply_by``
        (on the transport's clock) bounds the whole reply. Raises
        :class:`APITimeoutError`, :class:`APIConnectionError` (``request_sent``
        false when nothing reached the server), :class:`TLSError` or
        :class:`ResponseTooLargeError`; never returns a partial body.

        With ``stream=True`` a 2xx reply returns as soon as its status and
        headers have arrived (by ``reply_by``): its body is left unread in
        :attr:`Reply.response`, no longer bounded by ``reply_by`` (each socket
        read still by the read timeout), for the caller to read and close
        (:func:`~sail_lite.streaming.stream_from_requests`). Any other status
        is read whole, as without it.
        """
        send_headers = dict(self._headers)
        send_headers.update(headers)
        bound = _Bound(reply_by, self._clock)
        token = _ATTEMPT.set(bound)
        response = None
        try:
            response = self.session.request(
                method,
                self._base_url + path,
                headers=send_headers,
                data=body,
                timeout=timeout,
                allow_redirects=False,
                stream=True,
                # The Session's own verify, also when the environment names a CA bundle: requests
                # lets REQUESTS_CA_BUNDLE override session.verify, a user's setting would be lost.
                verify=self.session.verify,
            )
            if stream and 200 <= response.status_code < 300:
                bound.reply_by = float("inf")  # the stream bounds itself: event gaps, the deadline
                opened, response = response, None
                return Reply(opened.status_code, opened.headers, b"", opened)
            content = self._read(response, bound, f"{method} {path}")
        except ResponseTooLargeError:
            raise
        except Exception as exc:
            # "from None": library exceptions repeat the full URL and their own causes; what they
            # say is in our message, in words, so the chain would add only leak risk.
            raise connection_error(exc, f"{method} {path}", self._base_url, bound.expired) from None
        finally:
            _ATTEMPT.reset(token)
            if response is not None:
                response.close()  # releases a fully read connection; drops a half-read one
        return Reply(response.status_code, response.headers, content)

    def _read(self, response: requests.Response, bound: _Bound, what: str) -> bytes:
        chunks: List[bytes] = []
        size = 0
        for chunk in response.iter_content(_CHUNK):
            size += len(chunk)
            if size > self._max_response_bytes:
                raise ResponseTooLargeError(
                    f"{what}: the reply is larger than max_response_bytes="
                    f"{self._max_response_bytes} (counted after decompression); nothing was kept",
                    status=response.status_code,
                    request_id=response.headers.get("x-request-id"),
                )
            chunks.append(chunk)
            if bound.remaining() <= 0:  # a Session whose adapters are not bounded
                bound.expired = True
                raise socket.timeout("the attempt's time bound passed")
        return b"".join(chunks)

    def close(self) -> None:
        if self._owns_session:
            self.session.close()


# --- mapping library failures to ours --------------------------------------------


def _causes(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` and what it wraps (urllib3's ``reason``, causes, contexts, exception args)."""
    seen: List[BaseException] = []
    todo = [exc]
    while todo and len(seen) < 16:
        current = todo.pop(0)
        if any(current is old for old in seen):
            continue
        seen.append(current)
        yield current
        linked = [getattr(current, "reason", None), current.__cause__, current.__context__]
        linked += list(current.args)
        todo.extend(item for item in linked if isinstance(item, BaseException))


def _host(url: str) -> str:
    try:
        return urllib.parse.urlsplit(url).hostname or "the host"
    except ValueError:
        return "the host"


def _reason(exc: BaseException) -> str:
    """What went wrong, in words: the innermost OS error's text, else the library's, redacted."""
    for cause in reversed(list(_causes(exc))):
        if isinstance(cause, OSError) and cause.strerror:
            return cause.strerror[:200]
    for cause in reversed(list(_causes(exc))):
        if str(cause) and not str(cause).startswith(("<", "(")):
            return redact_url(str(cause))[:200]
    return "the connection failed"


def connection_error(
    exc: BaseException, what: str, url: str, wall_clock_expired: bool = False
) -> APIConnectionError:
    """The typed error for a failed attempt at ``what`` (``"GET /models"``) to ``url``'s host."""
    causes = list(_causes(exc))
    if wall_clock_expired:
        return APITimeoutError(
            f"{what} timed out: no complete reply within the attempt's time bound"
        )
    if any(isinstance(c, (requests.exceptions.SSLError, ssl.SSLError)) for c in causes):
        return TLSError(
            f"{what}: TLS failed ({_reason(exc)}); check verify=, REQUESTS_CA_BUNDLE or SSL_CERT_FILE"
        )
    if any(isinstance(c, socket.gaierror) for c in causes) or any(
        type(c).__name__ == "NameResolutionError" for c in causes
    ):
        return APIConnectionError(
            f"{what}: cannot resolve host {_host(url)!r} (DNS): check the URL and the network",
            request_sent=False,
            code="host_not_found",
        )
    if isinstance(exc, requests.exceptions.ConnectTimeout):
        return APITimeoutError(f"{what} timed out connecting to {_host(url)}", request_sent=False)
    if any(isinstance(c, ConnectionRefusedError) for c in causes):
        where = "the proxy" if isinstance(exc, requests.exceptions.ProxyError) else _host(url)
        return APIConnectionError(
            f"{what}: connection refused by {where}", request_sent=False, code="connection_refused"
        )
    if isinstance(exc, (requests.exceptions.ProxyError, requests.exceptions.ConnectionError)) and (
        not isinstance(exc, requests.exceptions.ReadTimeout)
        and any(type(c).__name__ == "NewConnectionError" for c in causes)
    ):
        return APIConnectionError(f"{what} could not connect: {_reason(exc)}", request_sent=False)
    if any(isinstance(c, (socket.timeout, requests.exceptions.ReadTimeout)) for c in causes):
        return APITimeoutError(f"{what} timed out waiting for the reply")
    # A reset, a body cut short, an upload source failing mid-way.
    return APIConnectionError(f"{what} failed before a complete reply: {_reason(exc)}")


# --- storage downloads ---------------------------------------------------------


class Download:
    """An open storage GET: ``status``, ``headers``, ``read(n)``, ``close()``; a context manager.

    ``read`` raises :class:`APIConnectionError` (an ``OSError``) when the body
    fails, times out or passes the download's wall-clock bound.
    """

    def __init__(self, response: requests.Response, label: str, url: str, bound: _Bound) -> None:
        self._response, self._label, self._url, self._bound = response, label, url, bound
        self.status: int = response.status_code
        self.headers = response.headers

    def read(self, count: int = -1) -> bytes:
        try:
            if self._bound.remaining() <= 0:
                self._bound.expired = True
                raise socket.timeout("the download's time bound passed")
            return self._response.raw.read(None if count is None or count < 0 else count)  # type: ignore[no-any-return]
        except Exception as exc:
            raise connection_error(
                exc, f"reading {self._label}", self._url, self._bound.expired
            ) from None

    def close(self) -> None:
        self._response.close()

    def __enter__(self) -> Download:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Download({self._label!r}, status={self.status})"


class _RedactQueries(logging.Filter):
    """Redacts URL queries in urllib3's records: at DEBUG it logs each request line, signature and all."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(redact_url(a) if isinstance(a, str) else a for a in record.args)
        if isinstance(record.msg, str):
            record.msg = redact_url(record.msg)
        return True


def _redact_library_logs() -> None:
    # On the library's own logger, once: a signed URL's query must never reach a log, whatever
    # level the application sets (logging's registry, not a global of ours).
    logger = logging.getLogger("urllib3.connectionpool")
    if not any(isinstance(f, _RedactQueries) for f in logger.filters):
        logger.addFilter(_RedactQueries())


def _check_download_url(url: Any, label: str) -> urllib.parse.SplitResult:
    try:
        parts = urllib.parse.urlsplit(url) if isinstance(url, str) else None
    except ValueError:
        parts = None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
        scheme = parts.scheme if parts is not None and parts.scheme else "no scheme"
        raise InvalidRequestError(
            f"{label}: only http(s) URLs are downloaded, got {scheme}:// ({redact_url(str(url))})"
        )
    return parts


def _redirect_target(current: str, location: Optional[str], label: str, status: int) -> str:
    """Where a redirect may go: http(s) only, never https -> http, the same host and port."""
    here = urllib.parse.urlsplit(current)
    target = urllib.parse.urljoin(current, location or "")
    try:
        there = urllib.parse.urlsplit(target)
        same = there.scheme in ("http", "https") and there.hostname == here.hostname
        ports = {"http": 80, "https": 443}
        same_port = (there.port or ports.get(there.scheme)) == (here.port or ports[here.scheme])
        upgrade = here.scheme == "http" and there.scheme == "https" and not here.port
    except ValueError:
        same = same_port = upgrade = False
    if (
        not location
        or not same
        or (not same_port and not upgrade)
        or (here.scheme == "https" and there.scheme == "http")
    ):
        raise APIStatusError(
            f"downloading {label}: refused a redirect from {redact_url(current)} to "
            f"{redact_url(target)}; storage redirects are followed only to the same host, "
            "over http(s), never from https to http",
            status=status,
            code="redirect_refused",
        )
    return target


def open_download(
    session: requests.Session,
    url: str,
    *,
    label: str,
    timeout: float,
    deadline: Optional[float] = None,
    headers: Optional[Mapping[str, str]] = None,
    clock: Callable[[], float] = time.monotonic,
) -> Download:
    """GET a storage URL (a signed URL: never send it the Sail API key) through ``session``.

    Blocks until the status and headers arrive; the body is read from the
    returned :class:`Download`. ``timeout`` bounds connecting and each read;
    ``deadline`` (seconds from now) bounds everything, the body's reads
    included. Redirects are followed at most :data:`MAX_DOWNLOAD_REDIRECTS`
    times, over http(s) only, never from https to http, and only to the same
    host and port (what storage services do); others raise
    :class:`APIStatusError` (``code="redirect_refused"``). A URL that is not
    http(s) raises :class:`InvalidRequestError`. No message shows a query
    string. Any final status is returned: the caller decides about non-2xx.
    """
    _check_download_url(url, label)
    _redact_library_logs()
    reply_by = float("inf") if deadline is None else clock() + deadline
    bound = _Bound(reply_by, clock)
    current = url
    for _hop in range(MAX_DOWNLOAD_REDIRECTS + 1):
        response = _get(session, current, label, timeout, bound, headers)
        if response.status_code not in _REDIRECTS:
            return Download(response, label, current, bound)
        location = response.headers.get("location")
        response.close()
        current = _redirect_target(current, location, label, response.status_code)
    raise APIStatusError(
        f"downloading {label}: more than {MAX_DOWNLOAD_REDIRECTS} redirects from {redact_url(url)}",
        status=response.status_code,
        code="too_many_redirects",
    )


def _get(
    session: requests.Session,
    url: str,
    label: str,
    timeout: float,
    bound: _Bound,
    headers: Optional[Mapping[str, str]],
) -> requests.Response:
    left = bound.remaining()
    if left <= 0:
        raise APITimeoutError(f"downloading {label}: the deadline passed", request_sent=False)
    token = _ATTEMPT.set(bound)
    try:
        return session.get(
            url,
            headers={"Accept-Encoding": "identity", **(headers or {})},
            timeout=(min(timeout, left), min(timeout, left)),
            allow_redirects=False,
            stream=True,
            verify=session.verify,  # as Transport.send: the Session's, not the environment's
        )
    except Exception as exc:
        raise connection_error(exc, f"downloading {label}", url, bound.expired) from None
    finally:
        _ATTEMPT.reset(token)
