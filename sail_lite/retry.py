"""Which failures are retried, and how long to wait before the next attempt.

Pure arithmetic, no I/O: the request loop in :mod:`sail_lite._requester` asks
:meth:`RetryPolicy.delay_before_retry` (:meth:`~RetryPolicy.should_retry`, then
:meth:`~RetryPolicy.delay`) and does the sleeping itself (through an injectable
``sleep``); the poller asks :meth:`~RetryPolicy.should_retry` about a failed poll.
"""

from __future__ import annotations

import email.utils
import math
import random
from dataclasses import dataclass
from typing import FrozenSet, Mapping, Optional

from ._checks import MAX_SECONDS, int_in, number_in, shown
from .errors import (
    APIConnectionError,
    APIStatusError,
    BadRequestError,
    ConfigurationError,
    InvalidRequestError,
    RequestTooLargeError,
    ResponseFailedError,
    SailError,
    TLSError,
    UnprocessableEntityError,
    UploadNotRewindableError,
)

__all__ = ["RetryPolicy", "parse_retry_after", "is_final"]

_RETRYABLE_STATUSES = frozenset({408, 409, 429, 500, 502, 503, 504, 529})
_REFUSED_UNRUN = frozenset({429, 503, 529})  # load shedding: the server ran nothing


_FINAL = (
    ResponseFailedError,  # failed, expired, cancelled by someone else: the server's final word
    InvalidRequestError,  # refused by the client's checks, before any I/O
    BadRequestError,  # 400, including idempotency_error
    RequestTooLargeError,
    UnprocessableEntityError,
)


def is_final(error: BaseException) -> bool:
    """True when sending the same request again cannot succeed: the server's final word on it, or
    a request refused as invalid (by the client's checks, or 400, 413, 422).

    Everything else (connection errors, load and server errors after the retries, deadlines, a
    closed client, an unreadable reply, 401/403/404 that a fixed setting cures) is worth trying
    again later: a journal keeps such a request resumable.
    """
    return isinstance(error, _FINAL)


@dataclass(frozen=True)
class RetryPolicy:
    """How the request loop retries one logical call.

    ``max_retries`` retries follow the first attempt. A delay is the server's
    ``Retry-After``/``retry-after-ms`` when given (up to
    ``max_retry_after``: beyond it the error is raised at once, carrying
    ``retry_after``), otherwise exponential back-off with full jitter:
    uniform in ``[0, min(max_delay, initial_delay * multiplier ** n)]`` for
    the n-th retry (n from 0).

    Retried (the one definition of "transient", which the poller uses too):
    connection errors and timeouts (not a failed certificate check, not a
    host name that does not resolve: ``code="host_not_found"``), and the
    statuses in ``retry_statuses`` (409 only with code
    ``request_in_progress``). A write is retried only when it is
    replay-safe (it carries an idempotency key, which the client adds to
    every create, so a replay never runs inference twice), or when the
    failure proves the request never reached the server.

    Bad fields raise :class:`~sail_lite.errors.ConfigurationError`.
    """

    max_retries: int = 2
    initial_delay: float = 0.5
    multiplier: float = 2.0
    max_delay: float = 8.0
    max_retry_after: float = 60.0
    retry_statuses: FrozenSet[int] = _RETRYABLE_STATUSES

    def __post_init__(self) -> None:
        int_in("RetryPolicy.max_retries", self.max_retries, 0, 100, ConfigurationError)
        for name, low in (
            ("initial_delay", 0.0),
            ("max_delay", 0.0),
            ("max_retry_after", 0.0),
            ("multiplier", 1.0),
        ):
            number_in(
                f"RetryPolicy.{name}", getattr(self, name), low, MAX_SECONDS, ConfigurationError
            )
        statuses = self.retry_statuses
        if (
            isinstance(statuses, (str, bytes))
            or not hasattr(statuses, "__iter__")
            or not all(isinstance(code, int) and not isinstance(code, bool) for code in statuses)
        ):
            raise ConfigurationError(
                f"RetryPolicy.retry_statuses must be a set of HTTP status ints, got {shown(statuses)}"
            )
        object.__setattr__(self, "retry_statuses", frozenset(statuses))

    @property
    def max_attempts(self) -> int:
        return self.max_retries + 1

    def should_retry(self, error: SailError, *, replay_safe: bool) -> bool:
        """Whether ``error`` is worth another attempt.

        ``replay_safe`` is true for reads, for writes that carry an
        idempotency key and for writes that are idempotent by nature.
        Other writes are retried only when the server cannot have acted:
        the connection was never made, or it refused for load (429, 503,
        529) before running anything.
        """
        if isinstance(error, (UploadNotRewindableError, TLSError)):
            return False
        if isinstance(error, APIConnectionError):
            if error.code == "host_not_found":  # a name that does not resolve will not next time
                return False
            return replay_safe or not error.request_sent
        if not replay_safe and error.status not in _REFUSED_UNRUN:
            return False
        if isinstance(error, APIStatusError) and error.status in self.retry_statuses:
            if error.status == 409:
                return error.code == "request_in_progress"
            return True
        return False

    def delay_before_retry(
        self, error: SailError, attempt: int, *, replay_safe: bool, rng: random.Random
    ) -> Optional[float]:
        """Seconds to wait before attempt ``attempt + 1`` after ``error``, or ``None`` to give up.

        Gives up when ``attempt`` was the last, the error is not worth
        another attempt, or the server asked for a longer wait than
        ``max_retry_after``.
        """
        if attempt >= self.max_attempts or not self.should_retry(error, replay_safe=replay_safe):
            return None
        return self.delay(attempt - 1, error.retry_after, rng)

    def backoff(self, retry_index: int, rng: random.Random) -> float:
        """Full-jitter exponential delay before retry number ``retry_index`` (from 0)."""
        exponent = min(retry_index, 64)  # keeps the power finite
        try:
            grown = self.initial_delay * float(self.multiplier) ** exponent
        except OverflowError:
            grown = math.inf if self.initial_delay > 0 else 0.0
        ceiling = min(self.max_delay, grown)
        return rng.uniform(0.0, ceiling)

    def delay(
        self, retry_index: int, retry_after: Optional[float], rng: random.Random
    ) -> Optional[float]:
        """Seconds to wait before the next attempt, or ``None`` to give up.

        ``None`` means the server asked for a wait longer than
        ``max_retry_after``: the caller should surface the error and its
        ``retry_after`` instead of blocking that long.
        """
        if retry_after is not None:
            if retry_after > self.max_retry_after:
                return None
            return max(0.0, retry_after)
        return self.backoff(retry_index, rng)


def parse_retry_after(headers: Mapping[str, str], now: float) -> Optional[float]:
    """Seconds the server asked us to wait, from ``retry-after-ms`` or ``Retry-After``.

    ``Retry-After`` may be delta-seconds or an HTTP date (relative to ``now``,
    a Unix timestamp). Unparseable or negative values are ignored.
    ``headers`` must be case-insensitive (as ``requests`` gives them).
    """
    millis = headers.get("retry-after-ms")
    if millis is not None:
        try:
            value = float(millis) / 1000.0
        except ValueError:
            value = math.nan
        if math.isfinite(value) and value >= 0:
            return value
    raw = headers.get("retry-after")
    if raw is None:
        return None
    raw = raw.strip()
    try:
        value = float(raw)
    except ValueError:
        try:
            parsed = email.utils.parsedate_to_datetime(raw)
        except (TypeError, ValueError, IndexError):
            return None
        if parsed is None:
            return None
        return max(0.0, parsed.timestamp() - now)
    if not math.isfinite(value) or value < 0:
        return None
    return value
