"""The poller: many in-flight background responses, few threads.

A scheduler thread keeps a heap of ``(next poll time, watch)`` and hands due
polls to a small ``ThreadPoolExecutor``; a pool thread is busy only while an
HTTP call is. Each response's poll interval starts small and grows
geometrically up to a cap chosen by its completion window, so a fast result
is seen quickly and a slow one costs few polls. Ten thousand responses in
flight cost ten thousand heap entries, not ten thousand threads.
"""
from __future__ import annotations

import heapq
import itertools
import logging
import random
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple

from ._checks import MAX_SECONDS
from .errors import APIConnectionError, ClientClosedError, ConfigurationError, DeadlineExceededError, SailError
from .types import Response

__all__ = ["PollPolicy", "Poller"]

_logger = logging.getLogger(__name__)

try:  # Python 3.8+: set_result on a cancelled future raises this
    from concurrent.futures import InvalidStateError as _InvalidStateError
except ImportError:  # pragma: no cover - very old Pythons
    _InvalidStateError = RuntimeError  # type: ignore[misc,assignment]


def _default_caps() -> Dict[str, float]:
    # Priority turns take about a minute, standard about five, flex is best
    # effort: the cap keeps a long wait cheap without hiding a fast result.
    return {"asap": 1.0, "priority": 5.0, "standard": 15.0, "balanced": 15.0, "flex": 60.0}


@dataclass(frozen=True)
class PollPolicy:
    """How often a background response is polled.

    The first poll comes ``initial_interval`` seconds after creation; each
    next interval is the previous times ``multiplier``, capped by
    ``max_interval[window]`` (``default_max_interval`` for an unknown
    window), with +-``jitter`` relative noise so many responses created
    together do not poll in lock-step. A poll that fails transiently (after
    the request loop's own retries) is tried again at the next interval, up
    to ``max_consecutive_failures`` in a row.
    """

    initial_interval: float = 0.25
    multiplier: float = 1.5
    max_interval: Dict[str, float] = field(default_factory=_default_caps, hash=False)
    default_max_interval: float = 10.0
    jitter: float = 0.1
    max_consecutive_failures: int = 8

    def __post_init__(self) -> None:
        def number(value: Any) -> bool:
            return not isinstance(value, bool) and isinstance(value, (int, float))

        caps = self.max_interval
        if not (number(self.initial_interval) and 0 < self.initial_interval <= MAX_SECONDS
                and number(self.multiplier) and 1 <= self.multiplier <= MAX_SECONDS
                and number(self.jitter) and 0 <= self.jitter < 1
                and number(self.default_max_interval) and 0 < self.default_max_interval <= MAX_SECONDS
                and isinstance(self.max_consecutive_failures, int) and not isinstance(self.max_consecutive_failures, bool)
                and self.max_consecutive_failures >= 0
                and isinstance(caps, Mapping) and all(isinstance(k, str) and number(v) and 0 < v <= MAX_SECONDS
                                                      for k, v in caps.items())):
            raise ConfigurationError(
                "PollPolicy needs 0 < initial_interval, default_max_interval and every max_interval value <= {:.0f} "
                "seconds (max_interval maps window names to them), 1 <= multiplier <= {:.0f}, 0 <= jitter < 1 and "
                "an int max_consecutive_failures >= 0".format(MAX_SECONDS, MAX_SECONDS))

    def cap(self, window: Optional[str]) -> float:
        return self.max_interval.get(window or "", self.default_max_interval)

    def next_interval(
        self, previous: Optional[float], window: Optional[str], rng: random.Random
    ) -> Tuple[float, float]:
        """``(jittered, base)``: the interval after ``previous`` (``None`` before the first poll)."""
        base = self.initial_interval if previous is None else previous * self.multiplier
        base = min(base, max(self.cap(window), self.initial_interval))
        return base * (1.0 + self.jitter * (2.0 * rng.random() - 1.0)), base


class _Watch:
    """One background response being polled."""

    __slots__ = (
        "response_id", "window", "future", "deadline_at", "read_timeout", "transform", "interval", "failures"
    )

    def __init__(
        self,
        response_id: str,
        window: Optional[str],
        future: Future,
        deadline_at: Optional[float],
        read_timeout: Optional[float],
        transform: Callable[[Response], Any],
    ) -> None:
        self.response_id = response_id
        self.window = window
        self.future = future
        self.deadline_at = deadline_at
        self.read_timeout = read_timeout
        self.transform = transform
        self.interval: Optional[float] = None
        self.failures = 0


class Poller:
    """Polls background responses until terminal and settles their futures.

    ``fetch(response_id, deadline_at, read_timeout)`` retrieves a response
    (through the client's request loop); ``cancel(response_id)`` cancels one on the
    server. Threads start on first use; :meth:`close` stops them.
    """

    def __init__(
        self,
        fetch: Callable[[str, Optional[float], Optional[float]], Response],
        cancel: Callable[[str], Any],
        *,
        policy: PollPolicy,
        max_workers: int,
        clock: Callable[[], float],
        rng: random.Random,
    ) -> None:
        self._fetch = fetch
        self._cancel = cancel
        self._policy = policy
        self._clock = clock
        self._rng = rng
        self._executor = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="sail-lite-poll")
        self._heap: List[Tuple[float, int, _Watch]] = []
        self._sequence = itertools.count()
        self._condition = threading.Condition()
        self._scheduler: Optional[threading.Thread] = None
        self._closed = False

    # --- public --------------------------------------------------------

    def run(self, function: Callable[..., Any], *args: Any) -> Future:
        """Run ``function(*args)`` on the pool (used for creates that precede a watch)."""
        if self._closed:
            raise ClientClosedError("the client is closed; create a new one")
        return self._executor.submit(function, *args)

    def watch(
        self,
        response: Response,
        future: Future,
        *,
        window: Optional[str],
        deadline_at: Optional[float],
        transform: Callable[[Response], Any],
        read_timeout: Optional[float] = None,
    ) -> None:
        """Poll ``response`` until terminal, then settle ``future`` with ``transform(terminal)``.

        ``transform`` may raise (e.g. a failed response): the exception
        settles the future. Cancelling ``future`` cancels the response on
        the server.
        """
        watch = _Watch(response.id, window, future, deadline_at, read_timeout, transform)
        future.add_done_callback(lambda done: self._on_future_done(watch, done))
        if response.is_terminal:
            self._settle(watch, response)
            return
        self._schedule(watch)

    def close(self) -> None:
        """Stop polling; unsettled futures fail with :class:`ClientClosedError` carrying the response id."""
        with self._condition:
            if self._closed:
                return
            self._closed = True
            pending = [watch for _, _, watch in self._heap]
            self._heap.clear()
            self._condition.notify_all()
        for watch in pending:
            self._fail(
                watch,
                ClientClosedError(
                    "the client closed while waiting for response {}; it continues on the server: "
                    "resume with client.responses.wait({!r}) on a new client".format(
                        watch.response_id, watch.response_id
                    ),
                    response_id=watch.response_id,
                ),
            )
        if self._scheduler is not None and self._scheduler is not threading.current_thread():
            self._scheduler.join()
        self._executor.shutdown(wait=True)

    @property
    def in_flight(self) -> int:
        """How many responses are scheduled for a poll right now."""
        with self._condition:
            return len(self._heap)

    # --- scheduling ----------------------------------------------------

    def _schedule(self, watch: _Watch) -> None:
        jittered, watch.interval = self._policy.next_interval(watch.interval, watch.window, self._rng)
        due = self._clock() + jittered
        if watch.deadline_at is not None:
            due = min(due, watch.deadline_at)
        with self._condition:
            if self._closed:
                closed = True
            else:
                closed = False
                heapq.heappush(self._heap, (due, next(self._sequence), watch))
                if self._scheduler is None:
                    self._scheduler = threading.Thread(
                        target=self._run, name="sail-lite-poll-scheduler", daemon=True
                    )
                    self._scheduler.start()
                elif self._heap[0][2] is watch:
                    self._condition.notify()
        if closed:
            self._fail(watch, ClientClosedError("the client is closed", response_id=watch.response_id))

    def _run(self) -> None:
        while True:
            with self._condition:
                while not self._closed:
                    if not self._heap:
                        self._condition.wait()
                        continue
                    wait = self._heap[0][0] - self._clock()
                    if wait <= 0:
                        break
                    self._condition.wait(wait)
                if self._closed:
                    return
                _, _, watch = heapq.heappop(self._heap)
            if watch.future.done():
                continue  # cancelled: the done-callback has already cancelled it on the server
            try:
                self._executor.submit(self._poll, watch)
            except RuntimeError:  # the pool shut down under us: close() is settling everything
                return

    def _poll(self, watch: _Watch) -> None:
        if watch.future.done():
            return
        if watch.deadline_at is not None and self._clock() >= watch.deadline_at:
            self._fail(watch, self._deadline_error(watch, None))
            return
        try:
            response = self._fetch(watch.response_id, watch.deadline_at, watch.read_timeout)
        except SailError as exc:
            watch.failures += 1
            transient = isinstance(exc, APIConnectionError) or (exc.status or 0) in (408, 429) or (exc.status or 0) >= 500
            if isinstance(exc, DeadlineExceededError):
                self._fail(watch, self._deadline_error(watch, exc))
            elif transient and watch.failures < self._policy.max_consecutive_failures and not self._closed:
                _logger.warning(
                    "poll of %s failed (%s); trying again later", watch.response_id, type(exc).__name__
                )
                self._schedule(watch)
            else:
                if exc.response_id is None:
                    exc.response_id = watch.response_id
                self._fail(watch, exc)
            return
        except Exception as exc:  # a bug must not kill a pool thread silently
            self._fail(watch, exc)
            return
        watch.failures = 0
        if response.is_terminal:
            self._settle(watch, response)
        elif watch.deadline_at is not None and self._clock() >= watch.deadline_at:
            self._fail(watch, self._deadline_error(watch, None, status=response.status))
        else:
            self._schedule(watch)

    # --- settling ------------------------------------------------------

    def _settle(self, watch: _Watch, response: Response) -> None:
        try:
            result = watch.transform(response)
        except BaseException as exc:  # the transform's typed error is the result
            self._fail(watch, exc)
            return
        try:
            watch.future.set_result(result)
        except _InvalidStateError:
            pass  # cancelled meanwhile; the result is dropped by the caller's choice

    def _fail(self, watch: _Watch, error: BaseException) -> None:
        try:
            watch.future.set_exception(error)
        except _InvalidStateError:
            pass

    def _on_future_done(self, watch: _Watch, future: Future) -> None:
        if not future.cancelled():
            return
        # Runs in the thread that called cancel(): never block it on HTTP.
        with self._condition:
            if self._closed:
                return
        try:
            self._executor.submit(self._cancel_quietly, watch.response_id)
        except RuntimeError:
            pass

    def _cancel_quietly(self, response_id: str) -> None:
        try:
            self._cancel(response_id)
        except SailError as exc:
            _logger.warning("cancelling %s on the server failed: %s", response_id, type(exc).__name__)

    def _deadline_error(
        self, watch: _Watch, cause: Optional[BaseException], status: Optional[str] = None
    ) -> DeadlineExceededError:
        error = DeadlineExceededError(
            "deadline passed while waiting for response {}{}; it continues on the server: "
            "wait on it again or cancel it".format(
                watch.response_id, " (last status {})".format(status) if status else ""
            ),
            response_id=watch.response_id,
        )
        error.__cause__ = cause
        return error
