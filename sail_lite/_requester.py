"""The seam between :class:`~sail_lite.Client` and its resources.

A resource builds a body and hands it to the :class:`Requester`, which owns
everything else: the one request loop, per-call options (timeout, deadline,
extra headers, idempotency key), the clock, the poller, and the one wait
helper. Nothing outside this interface touches the client's internals.

The request loop, in one screen (:meth:`Requester.request`, run by ``_AttemptLoop``)::

    for attempt in 1 .. retry.max_attempts:
        bound the attempt by the call's deadline (or raise DeadlineExceededError)
        send it (one HTTP attempt: _transport.Transport.send)
        2xx -> return the decoded JSON (a stream: the open Stream, no retry past it)
        otherwise -> the typed error; retry.delay_before_retry() says whether
                     and how long to wait (None: raise it, with attempts and the
                     idempotency key on it)

A write is retried only when it is replay-safe: it carries an
idempotency key (minted here, once, and reused by every attempt, so a retry
after a lost reply never runs inference twice), or it is idempotent by
nature (a cancel), or the failure proves the request never reached the
server.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import random
import threading
import time
from dataclasses import dataclass, field
from typing import (
    TYPE_CHECKING,
    Any,
    Callable,
    Dict,
    List,
    Mapping,
    Optional,
    Set,
    Tuple,
    TypeVar,
    Union,
)

import requests

from ._checks import decode_json, encode_json, header_value, seconds, string_mapping
from ._statuses import KNOWN_STATUSES
from ._transport import Reply, Transport
from ._version import __version__
from .errors import (
    BadRequestError,
    ClientClosedError,
    ConfigurationError,
    DeadlineExceededError,
    InvalidRequestError,
    SailError,
    UploadNotRewindableError,
    status_error,
)
from .polling import PollPolicy
from .retry import RetryPolicy, parse_retry_after

if TYPE_CHECKING:  # pragma: no cover
    from .polling import Poller

__all__ = ["Call", "KNOWN_STATUSES", "Requester", "Timeout", "new_idempotency_key"]

_logger = logging.getLogger(__name__)
T = TypeVar("T")


def new_idempotency_key() -> str:
    """A fresh random key (used when the caller gives none): 128 random bits, as a uuid4 has."""
    return "sail-lite-" + os.urandom(16).hex()


@dataclass(frozen=True)
class Timeout:
    """Per-attempt HTTP time bounds, in seconds. Every call has a finite one.

    ``connect`` bounds opening a connection. The other three bound the whole
    reply of one attempt (status, headers and body, by wall clock, not per
    socket read): ``read`` for ordinary calls (retrieves, cancels,
    background creates, lists), ``inference`` for synchronous inference,
    where the server holds the connection while the model runs, ``upload``
    for the reply to a file upload (counted once the body is sent). A
    streamed create (``stream=True``) has no whole-reply bound: ``read``
    bounds the wait for its headers and every silence between its events
    (keep-alives count as events), the call's ``deadline`` the whole stream.
    """

    connect: float = 5.0
    read: float = 30.0
    inference: float = 600.0
    upload: float = 600.0

    def __post_init__(self) -> None:
        for name in ("connect", "read", "inference", "upload"):
            seconds("Timeout." + name, getattr(self, name), ConfigurationError)


@dataclass(frozen=True, repr=False)
class Call:
    """One logical call's checked options (``replace`` makes a changed copy).

    ``timeout`` replaces the per-attempt bound of the call's kind;
    ``deadline_at`` (on the client's clock) bounds the whole call, retries
    and back-off included; ``extra_headers`` are sent on every attempt;
    ``idempotency_key`` is the key a write carries (minted when ``None``).
    """

    timeout: Optional[float] = None
    deadline_at: Optional[float] = None
    extra_headers: Mapping[str, str] = field(default_factory=dict)
    idempotency_key: Optional[str] = None

    def __post_init__(self) -> None:
        if self.extra_headers is None:
            object.__setattr__(self, "extra_headers", {})

    def replace(self, **changes: Any) -> Call:
        """A copy with ``changes`` (keyword names of the fields)."""
        return dataclasses.replace(self, **changes)

    def remaining(self, now: float) -> Optional[float]:
        return None if self.deadline_at is None else self.deadline_at - now

    def __repr__(self) -> str:
        # Header names only: a value may be a credential. The idempotency key is not a secret
        # (it is sent in a header and carried by errors).
        names = ", ".join(map(repr, self.extra_headers))
        return (
            f"Call(timeout={self.timeout!r}, deadline_at={self.deadline_at!r}, "
            f"extra_headers={{{names}}}, idempotency_key={self.idempotency_key!r})"
        )


class Requester:
    """The client's engine room: the request loop, per-call options, the poller, waits.

    Threads (the poller's) and connections (the transport's) are made on
    first use and rebuilt in a forked child, so parent and child never share
    sockets. Thread-safe.
    """

    def __init__(
        self,
        *,
        api_key: str,
        base_url: str,
        timeout: Timeout,
        retry: RetryPolicy,
        poll: PollPolicy,
        max_workers: int,
        max_response_bytes: int,
        verify: Union[bool, str],
        proxies: Mapping[str, str],
        session: Optional[requests.Session] = None,
        sleep: Callable[[float], None],
        clock: Callable[[], float],
        rng: random.Random,
    ) -> None:
        self.base_url = base_url
        self.timeout = timeout
        self.retry = retry
        self.poll = poll
        self.max_workers = max_workers
        self.clock = clock
        self.sleep = sleep
        self.rng = rng
        self._auth = {"Authorization": "Bearer " + api_key, "Accept": "application/json"}
        # The forms the key can take in a reply body (as sent, UTF-8, JSON-escaped): a server that
        # echoes it (a 401 "bad key ...") must not put it in an error message or a stored result.
        forms = {api_key.encode("latin-1"), api_key.encode("utf-8")}
        forms.add(json.dumps(api_key)[1:-1].encode("ascii"))
        self._loop = _AttemptLoop(self, tuple(forms))
        self._transport_options = dict(
            verify=verify,
            proxies=dict(proxies),
            session=session,
            max_response_bytes=max_response_bytes,
        )
        self._asap_only: Set[str] = set()
        self._unknown_statuses: Set[str] = set()
        self._poll_fetch: Optional[Callable[..., Any]] = None
        self._poll_cancel: Optional[Callable[[str], Any]] = None
        self._init_runtime()

    # --- lifecycle -------------------------------------------------------------------

    def _init_runtime(self) -> None:
        self._lock = threading.Lock()
        self._pid = os.getpid()
        self._transport_obj: Optional[Transport] = None
        self._poller_obj: Optional[Poller] = None
        self._closing = False
        self._closed = False
        self._keys: List[str] = []  # a child must never reuse its parent's unused keys

    def _check_fork(self) -> None:
        # In a forked child the parent's sockets and threads are not ours:
        # forget them (never close them, that would break the parent).
        if os.getpid() != self._pid:
            self._init_runtime()

    def bind_poller(
        self,
        fetch: Callable[[str, Optional[float], Optional[float]], Any],
        cancel: Callable[[str], Any],
    ) -> None:
        """Give the poller its two calls (retrieve and cancel a response); the Responses resource does."""
        self._poll_fetch, self._poll_cancel = fetch, cancel

    @property
    def transport(self) -> Transport:
        transport = self._transport_obj
        if transport is not None and self._pid == os.getpid():
            return transport  # the hot path (every request): no lock once built; close() clears it
        self._check_fork()
        with self._lock:
            if self._closed:
                raise ClientClosedError("this Client is closed; create a new one")
            if self._transport_obj is None:
                self._transport_obj = Transport(
                    self.base_url,
                    pool_size=self.max_workers,
                    user_agent=f"sail-lite/{__version__}",
                    clock=self.clock,
                    **self._transport_options,  # type: ignore[arg-type]
                )
            return self._transport_obj

    @property
    def poller(self) -> Poller:
        poller = self._poller_obj
        if poller is not None and not self._closing and self._pid == os.getpid():
            return poller  # the hot path (every submit and watch): no lock, no import once built
        from .polling import Poller  # threads are for clients that wait: not on the import path

        self._check_fork()
        with self._lock:
            if self._closing:
                raise ClientClosedError("this Client is closed; create a new one")
            if self._poller_obj is None:
                assert self._poll_fetch is not None and self._poll_cancel is not None
                self._poller_obj = Poller(
                    self._poll_fetch,
                    self._poll_cancel,
                    policy=self.poll,
                    max_workers=self.max_workers,
                    clock=self.clock,
                    rng=self.rng,
                    is_transient=self._is_transient,
                )
            return self._poller_obj

    def _is_transient(self, error: BaseException) -> bool:
        # The poller retries a failed poll by the request loop's one definition of "transient".
        return isinstance(error, SailError) and self.retry.should_retry(error, replay_safe=True)

    def close(self) -> None:
        """Stop the poller's threads and close the connections. Idempotent.

        The poller is drained first, while the connections still work, so a
        server-side cancel queued just before (``future.cancel()``, Ctrl-C
        in a ``with`` block) still reaches the server.
        """
        self._check_fork()
        with self._lock:
            if self._closing:
                return
            self._closing = True  # no new waits from here on
            poller = self._poller_obj
        if poller is not None:
            poller.close()
        with self._lock:
            self._closed = True
            transport, self._poller_obj, self._transport_obj = self._transport_obj, None, None
        if transport is not None:
            transport.close()

    # --- per-call options ----------------------------------------------------------------

    #: Keys read from os.urandom at once. One read per key cost a GIL hand-off each (the read releases
    #: the GIL): about 1.5 ms per submit while the workers were busy, the submit loop's main cost.
    KEYS_PER_READ = 256

    def new_idempotency_key(self) -> str:
        """A fresh random key (for a write the caller gave none): 128 random bits, as a uuid4 has."""
        self._check_fork()
        with self._lock:
            keys = self._keys
            if not keys:
                data = os.urandom(16 * self.KEYS_PER_READ).hex()
                keys.extend("sail-lite-" + data[i : i + 32] for i in range(0, len(data), 32))
            return keys.pop()

    def call(
        self,
        *,
        timeout: Optional[float] = None,
        deadline: Optional[float] = None,
        extra_headers: Optional[Mapping[str, str]] = None,
        idempotency_key: Optional[str] = None,
    ) -> Call:
        """Check a call's options (before anything is sent) and fix its deadline on the clock."""
        return Call(
            timeout=None if timeout is None else seconds("timeout", timeout),
            deadline_at=None if deadline is None else self.clock() + seconds("deadline", deadline),
            extra_headers=string_mapping("extra_headers", extra_headers),
            idempotency_key=None
            if idempotency_key is None
            else header_value("idempotency_key", idempotency_key, max_length=255),
        )

    # --- the request loop ----------------------------------------------------------------

    def request(
        self,
        method: str,
        path: str,
        call: Call,
        *,
        json_body: Any = None,
        body: Any = None,
        content_type: Optional[str] = None,
        kind: str = "read",
        key_header: Optional[str] = None,
        replay_safe: Optional[bool] = None,
        response_id: Optional[str] = None,
        stream: Optional[str] = None,
    ) -> Any:
        """Make one logical API call and return its decoded JSON body (``None`` for an empty one).

        Blocks until a reply is accepted or the call gives up. ``json_body``
        is encoded here (sorted keys, compact), ``body`` is pre-built (bytes,
        or a stream with ``__len__`` and ``rewind()``). A write named with a
        ``key_header`` carries the call's idempotency key on every attempt.
        ``kind`` picks the default per-attempt bound (``read``, ``inference``
        or ``upload``). Raises the typed error of the last attempt, with
        ``attempts`` (and ``idempotency_key``) on it.

        ``stream`` (a :data:`~sail_lite.streaming.STREAM_KINDS` name) asks for
        server-sent events and returns an open :class:`~sail_lite.streaming.Stream`
        once a 2xx status and headers have arrived: attempts (and their
        retries) end there, so nothing is retried after the first byte of a
        stream (a retry then would be a new generation). The read timeout
        (``call.timeout``, else :attr:`Timeout.read`) bounds the wait for the
        headers and every silence between events; ``call.deadline_at`` bounds
        the whole stream.
        """
        headers: Dict[str, str] = dict(self._auth)
        if stream is not None:
            # identity: a compressed event stream could not be decoded event by event
            headers.update({"Accept": "text/event-stream", "Accept-Encoding": "identity"})
        headers.update(call.extra_headers)
        model = None
        if json_body is not None:
            body = encode_json(json_body)
            content_type = "application/json"
            model = json_body.get("model") if isinstance(json_body, Mapping) else None
        if content_type is not None:
            headers["Content-Type"] = content_type
        key = None
        if key_header is not None and model not in self._asap_only:
            key = call.idempotency_key or self.new_idempotency_key()
            headers[key_header] = key
        safe = replay_safe if replay_safe is not None else (method == "GET" or key is not None)
        one = _Request(method, path, call, headers, body, kind, safe, key, response_id, stream)
        try:
            return self._loop.run(one)
        except BadRequestError as exc:
            if key is None or exc.code != "unsupported_asap_only_request":
                raise
        # This model serves asap only and takes no idempotency key: nothing ran. Remember it (one
        # rejected POST per model, not per call) and resend without the key. Without a key a lost
        # reply cannot be replayed, so from here on the call is not retried once the server may
        # have acted on it.
        _logger.info("%s serves asap only and takes no idempotency key; sending without one", model)
        self._asap_only.add(str(model))
        del headers[key_header]  # type: ignore[arg-type]
        return self._loop.run(dataclasses.replace(one, replay_safe=bool(replay_safe), key=None))

    # --- waiting -------------------------------------------------------------------------

    def poll_until(
        self,
        fetch: Callable[[], T],
        settled: Callable[[T], bool],
        *,
        window: Optional[str],
        call: Call,
        what: str,
        on_poll: Optional[Callable[[T], None]] = None,
    ) -> T:
        """Fetch until ``settled(value)``, sleeping the poll policy's growing interval between fetches.

        The one synchronous wait (LoRA validations, batches). ``on_poll``
        sees every fetched value (progress). Raises
        :class:`DeadlineExceededError` naming ``what`` when the call's
        deadline (without one, the poll policy's wait bound for ``window``)
        would pass before the next fetch.
        """
        if on_poll is not None and not callable(on_poll):
            raise InvalidRequestError(
                f"on_poll must be a callable taking the polled object, got {type(on_poll).__name__}"
            )
        deadline_at = call.deadline_at
        if deadline_at is None:
            deadline_at = self.clock() + self.poll.wait_bound(window)
        return _poll(self, fetch, settled, window, deadline_at, what, on_poll)

    def note_status(self, status: str, response_id: str) -> None:
        """Log, once per client, a response status this client does not know (treated as running)."""
        if status in KNOWN_STATUSES or status in self._unknown_statuses:
            return
        self._unknown_statuses.add(status)
        _logger.warning(
            "response %s has status %r, which this client does not know: treating it as not finished "
            "yet",
            response_id,
            status,
        )


@dataclass(frozen=True)
class _Request:
    """One logical call as every attempt sends it."""

    method: str
    path: str
    call: Call
    headers: Mapping[str, str]
    body: Any
    kind: str
    replay_safe: bool
    key: Optional[str]
    response_id: Optional[str]
    stream: Optional[str] = None


class _AttemptLoop:
    """The one request loop: a logical call's attempts, retries, back-off and deadline.

    Reads its owner's public settings on each call (``retry``, ``timeout``,
    ``clock``, ``sleep``, ``rng``, ``transport``, ``base_url``), so a
    forked child's rebuilt transport is the one used.
    """

    def __init__(self, owner: Requester, key_forms: Tuple[bytes, ...]) -> None:
        self._owner = owner
        self._key_forms = key_forms

    def run(self, one: _Request) -> Any:
        """Attempt ``one`` until a 2xx reply is accepted or the retry policy gives up."""
        owner, policy = self._owner, self._owner.retry
        method, path, body, call = one.method, one.path, one.body, one.call
        error: Optional[SailError] = None
        for attempt in range(1, policy.max_attempts + 1):
            timeout, reply_within = self._bounds(one, error, attempt)
            if attempt > 1 and hasattr(body, "rewind"):
                try:
                    body.rewind()
                except UploadNotRewindableError as exc:
                    exc.attempts = attempt - 1
                    raise exc from error
            started = owner.clock()
            try:
                reply = _without(
                    self._key_forms,
                    owner.transport.send(
                        method,
                        path,
                        headers=one.headers,
                        body=body,
                        timeout=timeout,
                        reply_by=started + reply_within,
                        stream=one.stream is not None,
                    ),
                )
            except SailError as exc:
                error = exc
                _logger.debug("%s %s -> %s (attempt %d)", method, path, type(exc).__name__, attempt)
            else:
                if _logger.isEnabledFor(logging.DEBUG):  # the arguments cost a clock read
                    _log_reply(method, path, reply, attempt, owner.clock() - started)
                if 200 <= reply.status < 300:
                    return self._accept(one, reply, attempt)
                error = _reply_error(reply, owner.base_url)
            error.attempts = attempt
            error.response_id = error.response_id or one.response_id
            error.idempotency_key = error.idempotency_key or one.key
            delay = policy.delay_before_retry(
                error, attempt, replay_safe=one.replay_safe, rng=owner.rng
            )
            if delay is None:
                raise error
            if call.deadline_at is not None and owner.clock() + delay >= call.deadline_at:
                raise _deadline_error(method, path, error, attempt, one.response_id)
            _logger.info(
                "%s %s failed (%s), retry %d/%d in %.2f s",
                *(method, path, _short(error), attempt, policy.max_retries, delay),
            )
            owner.sleep(delay)
        raise AssertionError("unreachable: the last attempt's delay is None")  # pragma: no cover

    def _accept(self, one: _Request, reply: Reply, attempt: int) -> Any:
        if one.stream is None or reply.response is None:
            return _decode_reply(reply, one.method, one.path, attempt, one.response_id)
        # Here, not at the top: a script that never streams does not pay for importing the SSE
        # machinery with its first Client() (about 4 ms, against a 15 ms import budget).
        from .streaming import stream_from_requests

        call, owner = one.call, self._owner
        return stream_from_requests(
            reply.response,
            kind=one.stream,
            read_timeout=call.timeout if call.timeout is not None else owner.timeout.read,
            deadline_at=call.deadline_at,
            clock=owner.clock,
        )

    def _bounds(
        self, one: _Request, last: Optional[SailError], attempt: int
    ) -> Tuple[Tuple[float, float], float]:
        """``((connect, read) socket timeouts, seconds the whole reply may take)`` for one attempt.

        A stream's reply is its status and headers; its read bound is the read timeout.
        """
        call, settings = one.call, self._owner.timeout
        kind = "read" if one.stream is not None else one.kind
        within = call.timeout if call.timeout is not None else getattr(settings, kind)
        connect = settings.connect
        remaining = call.remaining(self._owner.clock())
        if remaining is not None:
            if remaining <= 0:
                raise _deadline_error(one.method, one.path, last, attempt - 1, one.response_id)
            within, connect = min(within, remaining), min(connect, remaining)
        return (connect, within), within


def _poll(
    requester: Requester,
    fetch: Callable[[], T],
    settled: Callable[[T], bool],
    window: Optional[str],
    deadline_at: float,
    what: str,
    on_poll: Optional[Callable[[T], None]],
) -> T:
    """:meth:`Requester.poll_until`'s loop, on the requester's clock, sleep and poll policy."""
    interval: Optional[float] = None
    while True:
        value = fetch()
        if on_poll is not None:
            on_poll(value)
        if settled(value):
            return value
        delay, interval = requester.poll.next_interval(interval, window, requester.rng)
        if requester.clock() + delay >= deadline_at:
            raise DeadlineExceededError(
                f"deadline passed while waiting for {what}; it goes on on the server"
            )
        requester.sleep(delay)


def _short(error: SailError) -> str:
    if error.status is not None:
        return f"{error.status} {error.code or type(error).__name__}"
    return type(error).__name__


def _without(forms: Tuple[bytes, ...], reply: Reply) -> Reply:
    """``reply`` with every form of the API key in its body replaced (a byte search per form)."""
    body = reply.body
    for form in forms:
        if form in body:
            body = body.replace(form, b"<redacted API key>")
    return reply if body is reply.body else Reply(reply.status, reply.headers, body)


def _log_reply(method: str, path: str, reply: Reply, attempt: int, took: float) -> None:
    _logger.debug(
        "%s %s -> %d (attempt %d, %.1f ms, request %s)",
        *(method, path, reply.status, attempt, took * 1000, reply.request_id),
    )


def _reply_error(reply: Reply, base_url: str) -> SailError:
    """The typed error of a non-2xx reply (its body decoded when it is JSON)."""
    try:
        payload: Any = decode_json(reply.body, "error body")
    except SailError:
        payload = reply.body.decode("utf-8", "replace")
    error = status_error(
        reply.status,
        payload,
        request_id=reply.request_id,
        retry_after=parse_retry_after(reply.headers, time.time()),
    )
    if reply.status == 404 and not base_url.endswith("/v1"):
        # Every Sail route lives under /v1: a base URL without it finds none of them.
        error.message += f" (the base URL has no /v1: did you mean {base_url}/v1?)"
        error.args = (error.message,)
    return error


def _decode_reply(
    reply: Reply, method: str, path: str, attempt: int, response_id: Optional[str]
) -> Any:
    if not reply.body:
        return None
    kind = reply.headers.get("content-type", "unknown content type")
    return decode_json(
        reply.body,
        f"{method} {path}: the {reply.status} reply ({kind}; a proxy page or a cut-off reply?)",
        status=reply.status,
        request_id=reply.request_id,
        attempts=attempt,
        response_id=response_id,
    )


def _deadline_error(
    method: str, path: str, last: Optional[SailError], attempts: int, response_id: Optional[str]
) -> DeadlineExceededError:
    message = f"{method} {path}: deadline passed after {attempts} attempt(s)"
    if last is not None:
        message += f"; last error: {_short(last)}"
    error = DeadlineExceededError(
        message,
        attempts=attempts,
        response_id=response_id,
        status=getattr(last, "status", None),
        code=getattr(last, "code", None),
        retry_after=getattr(last, "retry_after", None),
        request_id=getattr(last, "request_id", None),
        idempotency_key=getattr(last, "idempotency_key", None),
    )
    error.__cause__ = last
    return error
