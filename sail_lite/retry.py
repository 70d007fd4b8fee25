"""Which failures are retried, and how long to wait before the next attempt.

Pure arithmetic, no I/O: the request loop in :mod:`sail_lite.client` asks
:meth:`RetryPolicy.should_retry` and :meth:`RetryPolicy.delay` and does the
sleeping itself (through an injectable ``sleep``).
"""
from __future__ import annotations

import email.utils
import math
import random
from dataclasses import dataclass
from typing import FrozenSet, Mapping, Optional

from .errors import (
    APIConnectionError,
    APIStatusError,
    SailError,
    UploadNotRewindableError,
)

__all__ = ["RetryPolicy", "parse_retry_after"]

_RETRYABLE_STATUSES = frozenset({408, 409, 429, 500, 502, 503, 504, 529})


@dataclass(frozen=True)
class RetryPolicy:
    """How the request loop retries one logical call.

    ``max_retries`` retries follow the first attempt. A delay is the server's
    ``Retry-After``/``retry-after-ms`` when given (up to
    ``max_retry_after``: beyond it the error is raised at once, carrying
    ``retry_after``), otherwise exponential back-off with full jitter:
    uniform in ``[0, min(max_delay, initial_delay * multiplier ** n)]`` for
    the n-th retry (n from 0).

    Retried: connection errors and timeouts, and the statuses in
    ``retry_statuses`` (409 only with code ``request_in_progress``). A POST is
    retried only when it carries an idempotency key, which the client always
    adds, so a replay never runs inference twice.
    """

    max_retries: int = 2
    initial_delay: float = 0.5
    multiplier: float = 2.0
    max_delay: float = 8.0
    max_retry_after: float = 60.0
    retry_statuses: FrozenSet[int] = _RETRYABLE_STATUSES

    def __post_init__(self) -> None:
        if self.max_retries < 0:
            raise ValueError("RetryPolicy.max_retries must be >= 0, got {}".format(self.max_retries))
        for name in ("initial_delay", "max_delay", "max_retry_after"):
            if getattr(self, name) < 0:
                raise ValueError("RetryPolicy.{} must be >= 0".format(name))
        if self.multiplier < 1:
            raise ValueError("RetryPolicy.multiplier must be >= 1, got {}".format(self.multiplier))

    @property
    def max_attempts(self) -> int:
        return self.max_retries + 1

    def should_retry(self, error: SailError, *, replay_safe: bool) -> bool:
        """Whether ``error`` is worth another attempt.

        ``replay_safe`` is true for reads and for writes that carry an
        idempotency key; other writes are never retried.
        """
        if not replay_safe or isinstance(error, UploadNotRewindableError):
            return False
        if isinstance(error, APIConnectionError):
            return True
        if isinstance(error, APIStatusError) and error.status in self.retry_statuses:
            if error.status == 409:
                return error.code == "request_in_progress"
            return True
        return False

    def backoff(self, retry_index: int, rng: random.Random) -> float:
        """Full-jitter exponential delay before retry number ``retry_index`` (from 0)."""
        exponent = min(retry_index, 64)  # keeps the power finite
        ceiling = min(self.max_delay, self.initial_delay * self.multiplier ** exponent)
        return rng.uniform(0.0, ceiling)

    def delay(self, retry_index: int, retry_after: Optional[float], rng: random.Random) -> Optional[float]:
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
