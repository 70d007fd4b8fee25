"""The Client: configuration, the HTTP session, and the one request loop.

Every call to the API goes through :meth:`Client._request`, a single bounded
loop (``for attempt in range(policy.max_attempts)``) that mints one
idempotency key per logical POST, retries what :class:`RetryPolicy` says is
transient, honours ``Retry-After``, respects a total deadline, and turns
every failure into a typed :mod:`sail_lite.errors` exception.
"""
from __future__ import annotations

import json
import logging
import os
import random
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any, Callable, Dict, Mapping, Optional, Union

from ._version import __version__
from ._transport import Reply, Transport
from .errors import (
    APIStatusError,
    ClientClosedError,
    ConfigurationError,
    InvalidRequestError,
    MalformedResponseError,
    SailError,
    UploadNotRewindableError,
    DeadlineExceededError,
    status_error,
)
from .polling import PollPolicy, Poller
from .resources._common import positive_seconds
from .retry import RetryPolicy, parse_retry_after

__all__ = ["Client", "Timeout", "DEFAULT_BASE_URL"]

DEFAULT_BASE_URL = "https://api.sailresearch.com/v1"
_LOGGER_NAME = "sail_lite"
_logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Timeout:
    """Per-attempt HTTP timeouts, in seconds. Every call has a finite one.

    ``read`` bounds ordinary calls (retrieves, cancels, background creates,
    lists); ``inference`` bounds synchronous inference calls, where the server
    holds the connection while the model runs; ``upload`` bounds the wait for
    the reply to a file upload.
    """

    connect: float = 5.0
    read: float = 30.0
    inference: float = 600.0
    upload: float = 600.0

    def __post_init__(self) -> None:
        for name in ("connect", "read", "inference", "upload"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0 < value < float("inf"):
                raise ConfigurationError(
                    "Timeout.{} must be a finite number of seconds > 0, got {!r}".format(name, value)
                )


def _configure_logging(level_name: Optional[str]) -> None:
    """Honour ``SAIL_LOG=debug|info`` by giving the ``sail_lite`` logger a stderr handler.

    Only adds a handler when the logger has none of its own, so an
    application's logging setup always wins and repeated clients do not
    stack handlers.
    """
    if not level_name:
        return
    level = {"debug": logging.DEBUG, "info": logging.INFO}.get(level_name.strip().lower())
    if level is None:
        return
    logger = logging.getLogger(_LOGGER_NAME)
    logger.setLevel(level)
    if not any(not isinstance(h, logging.NullHandler) for h in logger.handlers):
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
        logger.addHandler(handler)


class Client:
    """A synchronous client for the Sail API.

    ``api_key`` and ``base_url`` default to ``SAIL_API_KEY`` and
    ``SAIL_BASE_URL``, read once here. The constructor does no I/O and starts
    no thread: the HTTP session and the poller's threads are created on first
    use, and rebuilt in a forked child so parent and child never share
    sockets.

    Thread-safe: one client may be shared by any number of threads. At most
    ``max_workers`` HTTP requests are on the wire at once (that is the size of
    the connection pool and of the poller's thread pool); further callers wait
    for a free connection.

    Picklable: a pickle holds the configuration (including the API key, so a
    worker process can use it), never sessions or threads. ``repr`` never
    shows the key.

    ``sleep``, ``clock`` (monotonic seconds) and ``rng`` are injectable so
    tests can check back-off delays without waiting.
    """

    def __init__(
        self,
        api_key: Optional[str] = None,
        *,
        base_url: Optional[str] = None,
        timeout: Union[Timeout, float, None] = None,
        retry: Optional[RetryPolicy] = None,
        poll: Optional[PollPolicy] = None,
        max_workers: int = 16,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        rng: Optional[random.Random] = None,
        environ: Optional[Mapping[str, str]] = None,
    ) -> None:
        env = os.environ if environ is None else environ
        key = api_key if api_key is not None else env.get("SAIL_API_KEY")
        if not key or not key.strip():
            raise ConfigurationError(
                "No Sail API key: pass Client(api_key=...) or set the SAIL_API_KEY environment variable "
                "(for offline work, start sail_lite.emulator.EmulatorServer and use its api_key and base_url)"
            )
        url = (base_url or env.get("SAIL_BASE_URL") or DEFAULT_BASE_URL).rstrip("/")
        if not url.startswith(("http://", "https://")) or "?" in url:
            raise ConfigurationError(
                "base_url must be an http(s) URL without a query string, like {!r}; got {!r}".format(
                    DEFAULT_BASE_URL, url.split("?")[0]
                )
            )
        if isinstance(timeout, (int, float)) and not isinstance(timeout, bool):
            timeout = Timeout(read=float(timeout))
        if not isinstance(max_workers, int) or max_workers < 1:
            raise ConfigurationError("max_workers must be an int >= 1, got {!r}".format(max_workers))
        _configure_logging(env.get("SAIL_LOG"))

        self._api_key = key.strip()
        self.base_url = url
        self.timeout = timeout or Timeout()
        self.retry = retry or RetryPolicy()
        self.poll = poll or PollPolicy()
        self.max_workers = max_workers
        self._sleep = sleep
        self._clock = clock
        self._rng = rng or random.Random()
        self._init_runtime()
        self._init_resources()

    # --- lifecycle -----------------------------------------------------

    def _init_runtime(self) -> None:
        self._lock = threading.Lock()
        self._pid = os.getpid()
        self._transport_obj: Optional[Transport] = None
        self._poller_obj: Optional[Poller] = None
        self._closed = False

    def _init_resources(self) -> None:
        from .resources import Batches, Chat, Files, LoRAs, Messages, Models, Responses, Tokens

        self.responses = Responses(self)
        self.tokens = Tokens(self)
        self.chat = Chat(self)
        self.messages = Messages(self)
        self.models = Models(self)
        self.files = Files(self)
        self.loras = LoRAs(self)
        self.batches = Batches(self)

    def _check_fork(self) -> None:
        # In a forked child the parent's sockets and threads are not ours:
        # forget them (never close them, that would break the parent).
        if os.getpid() != self._pid:
            self._init_runtime()

    @property
    def _transport(self) -> Transport:
        self._check_fork()
        with self._lock:
            if self._closed:
                raise ClientClosedError("this Client is closed; create a new one")
            if self._transport_obj is None:
                self._transport_obj = Transport(
                    pool_size=self.max_workers, user_agent="sail-lite/{}".format(__version__)
                )
            return self._transport_obj

    @property
    def _poller(self) -> Poller:
        self._check_fork()
        with self._lock:
            if self._closed:
                raise ClientClosedError("this Client is closed; create a new one")
            if self._poller_obj is None:
                self._poller_obj = Poller(
                    self.responses._poll_fetch,
                    self.responses._poll_cancel,
                    policy=self.poll,
                    max_workers=self.max_workers,
                    clock=self._clock,
                    rng=self._rng,
                )
            return self._poller_obj

    def close(self) -> None:
        """Stop the poller's threads and close the connection pool.

        Futures still waiting on background responses fail with
        :class:`~sail_lite.errors.DeadlineExceededError` carrying their response
        id: the work continues on the server and can be resumed with
        ``client.responses.wait(id)`` on a new client. Idempotent.
        """
        self._check_fork()
        with self._lock:
            if self._closed:
                return
            self._closed = True
            poller, transport = self._poller_obj, self._transport_obj
            self._poller_obj = self._transport_obj = None
        if poller is not None:
            poller.close()
        if transport is not None:
            transport.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return "Client(base_url={!r}, max_workers={})".format(self.base_url, self.max_workers)

    def __getstate__(self) -> Dict[str, Any]:
        return {
            "api_key": self._api_key,
            "base_url": self.base_url,
            "timeout": self.timeout,
            "retry": self.retry,
            "poll": self.poll,
            "max_workers": self.max_workers,
        }

    def __setstate__(self, state: Dict[str, Any]) -> None:
        self.__init__(  # type: ignore[misc]
            state["api_key"],
            base_url=state["base_url"],
            timeout=state["timeout"],
            retry=state["retry"],
            poll=state["poll"],
            max_workers=state["max_workers"],
            environ={},
        )

    # --- the request loop ----------------------------------------------

    @staticmethod
    def _new_idempotency_key() -> str:
        return "sail-lite-" + uuid.uuid4().hex

    def _deadline_at(self, deadline: Optional[float]) -> Optional[float]:
        """Absolute clock time for a relative ``deadline`` in seconds."""
        if deadline is None:
            return None
        return self._clock() + positive_seconds("deadline", deadline)

    def _request(
        self,
        method: str,
        path: str,
        *,
        json_body: Any = None,
        body: Any = None,
        headers: Optional[Mapping[str, str]] = None,
        idempotency_key: Optional[str] = None,
        idempotency_header: str = "Idempotency-Key",
        read_timeout: Optional[float] = None,
        deadline_at: Optional[float] = None,
        response_id: Optional[str] = None,
    ) -> Any:
        """Make one logical API call and return its decoded JSON body.

        Blocks until a reply is accepted or the call is given up. GETs are
        retried on transient failures; POST/PATCH are retried only with an
        idempotency key, which is minted here (once, reused on every attempt)
        unless the caller gives one. ``json_body`` is serialized
        deterministically (sorted keys, compact) so replays fingerprint alike;
        ``body`` is a pre-built payload (bytes, or a stream with ``rewind()``).

        Raises the typed error of the last attempt, with ``attempts`` set.
        """
        policy = self.retry
        send_headers = {"Authorization": "Bearer " + self._api_key, "Accept": "application/json"}
        if headers:
            send_headers.update(headers)
        if json_body is not None:
            body = json.dumps(json_body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
            send_headers["Content-Type"] = "application/json"
        replay_safe = method == "GET"
        if method in ("POST", "PATCH") and idempotency_header:
            if idempotency_key is None:
                idempotency_key = self._new_idempotency_key()
            elif not isinstance(idempotency_key, str) or not 0 < len(idempotency_key) <= 255:
                raise InvalidRequestError("idempotency_key must be a string of 1 to 255 characters")
            send_headers[idempotency_header] = idempotency_key
            replay_safe = True
        url = self.base_url + path
        read = read_timeout if read_timeout is not None else self.timeout.read
        dropped_key = False

        error: Optional[SailError] = None
        attempt = 0
        retries = 0
        while attempt < policy.max_attempts:
            attempt += 1
            timeout = (self.timeout.connect, read)
            if deadline_at is not None:
                remaining = deadline_at - self._clock()
                if remaining <= 0:
                    raise self._deadline_error(method, path, error, attempt - 1, response_id)
                timeout = (min(self.timeout.connect, remaining), min(read, remaining))
            if attempt > 1 and hasattr(body, "rewind"):
                try:
                    body.rewind()
                except UploadNotRewindableError as exc:
                    exc.attempts = attempt - 1
                    raise exc from error
            started = self._clock()
            try:
                reply = self._transport.send(
                    method, url, headers=send_headers, body=body, timeout=timeout, path=path
                )
            except SailError as exc:
                error = exc
                _logger.debug("%s %s -> %s (attempt %d)", method, path, type(exc).__name__, attempt)
            else:
                _logger.debug(
                    "%s %s -> %d (attempt %d, %.1f ms, request %s)",
                    method, path, reply.status, attempt, (self._clock() - started) * 1000, reply.request_id,
                )
                if 200 <= reply.status < 300:
                    return self._decode(reply, method, path, attempt, response_id)
                error = self._status_error(reply, attempt, response_id)
                if (
                    error.status == 400
                    and error.code == "unsupported_asap_only_request"
                    and not dropped_key
                    and idempotency_header in send_headers
                ):
                    # This model serves asap only and takes no idempotency
                    # key: resend once without it (not a retry: nothing ran).
                    del send_headers[idempotency_header]
                    dropped_key = True
                    attempt -= 1
                    continue
            error.attempts = attempt
            if error.response_id is None:
                error.response_id = response_id
            if attempt >= policy.max_attempts or not policy.should_retry(error, replay_safe=replay_safe):
                raise error
            delay = policy.delay(retries, error.retry_after, self._rng)
            retries += 1
            if delay is None:
                raise error
            if deadline_at is not None and self._clock() + delay >= deadline_at:
                raise self._deadline_error(method, path, error, attempt, response_id)
            _logger.info(
                "%s %s failed (%s), retry %d/%d in %.2f s",
                method, path, _short(error), retries, policy.max_retries, delay,
            )
            self._sleep(delay)
        assert error is not None  # the loop ran at least once
        raise error

    def _status_error(self, reply: Reply, attempt: int, response_id: Optional[str]) -> APIStatusError:
        try:
            payload: Any = json.loads(reply.body.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            payload = reply.body.decode("utf-8", "replace")
        return status_error(
            reply.status,
            payload,
            request_id=reply.request_id,
            retry_after=parse_retry_after(reply.headers, time.time()),
            attempts=attempt,
            response_id=response_id,
        )

    def _decode(self, reply: Reply, method: str, path: str, attempt: int, response_id: Optional[str]) -> Any:
        if not reply.body:
            return None
        try:
            return json.loads(reply.body.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            kind = reply.headers.get("content-type", "unknown content type")
            raise MalformedResponseError(
                "{} {} answered {} with a body that is not JSON ({}, {} bytes): "
                "a proxy or a cut-off reply".format(method, path, reply.status, kind, len(reply.body)),
                status=reply.status,
                request_id=reply.request_id,
                attempts=attempt,
                response_id=response_id,
            ) from None

    def _deadline_error(
        self, method: str, path: str, last: Optional[SailError], attempts: int, response_id: Optional[str]
    ) -> DeadlineExceededError:
        message = "{} {}: deadline passed after {} attempt(s)".format(method, path, attempts)
        if last is not None:
            message += "; last error: {}".format(_short(last))
        error = DeadlineExceededError(
            message,
            attempts=attempts,
            response_id=response_id,
            status=getattr(last, "status", None),
            code=getattr(last, "code", None),
            retry_after=getattr(last, "retry_after", None),
            request_id=getattr(last, "request_id", None),
        )
        error.__cause__ = last
        return error


def _short(error: SailError) -> str:
    if error.status is not None:
        return "{} {}".format(error.status, error.code or type(error).__name__)
    return type(error).__name__
