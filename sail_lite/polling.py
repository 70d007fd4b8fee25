"""The poller: many in-flight background responses, few threads, polls where completions happen.

A scheduler thread keeps a heap of ``(next poll time, watch)`` and hands due
polls to a few worker threads; a worker is busy only while an HTTP call is.
Workers take from two lanes: due polls (and cancels), and creates queued
by :meth:`Poller.run`. A create goes first while the oldest due poll may
still slip (by half of its own gap: a probe long before completions are
expected slips more than a poll where they are), so the turn clocks of a
burst start early; past that, the poll goes first, so a due poll never
waits behind a burst of creates for longer than its schedule allows. Ten
thousand responses in flight cost ten thousand heap entries, not ten
thousand threads.

Where to poll: the poller learns, per (model, completion window), when
responses it has watched became terminal (a small ring of recent
observations, each an interval ``(last poll that saw it running, first poll
that saw it done]`` measured from the moment the create was accepted), and
polls densely only where completions are likely; see :class:`PollPolicy`.
"""

from __future__ import annotations

import collections
import heapq
import itertools
import logging
import math
import random
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Deque, Dict, List, Mapping, Optional, Tuple

from ._checks import MAX_SECONDS
from .errors import ClientClosedError, ConfigurationError, DeadlineExceededError, SailError

if (
    TYPE_CHECKING
):  # concurrent.futures is imported when the first future is made, not with sail_lite
    from concurrent.futures import Future

    from .types import Response

__all__ = ["PollPolicy", "Poller"]

_logger = logging.getLogger(__name__)

#: Hard ceiling on the poller's threads (workers + the scheduler), whatever ``max_workers`` says.
MAX_THREADS = 32


def _default_caps() -> Dict[str, float]:
    # The longest gap between two polls, whatever the schedule says: a bound
    # on how late a result that arrives far from where it was expected is seen.
    return {"asap": 2.0, "balanced": 30.0, "standard": 30.0, "priority": 15.0, "flex": 120.0}


def _default_priors() -> Dict[str, Tuple[float, float]]:
    # Where completions are expected before this client has seen any, in
    # seconds after the create was accepted (Sail's documentation): asap
    # answers within seconds; balanced (alias standard; the retired priority
    # maps to it) takes about a minute to a few; flex is best effort, off-peak.
    return {
        "asap": (0.5, 30.0),
        "balanced": (30.0, 300.0),
        "standard": (30.0, 300.0),
        "priority": (30.0, 300.0),
        "flex": (60.0, 3600.0),
    }


def _default_max_wait() -> Dict[str, float]:
    # How long a wait with no deadline lasts before DeadlineExceededError (see PollPolicy).
    return {
        "asap": 600.0,
        "balanced": 1800.0,
        "standard": 1800.0,
        "priority": 1800.0,
        "flex": 86400.0,
    }


def _number(
    owner: str,
    name: str,
    value: Any,
    *,
    low: float = 0.0,
    low_open: bool = True,
    high: Optional[float] = None,
    high_open: bool = False,
) -> None:
    """Raise ConfigurationError unless ``value`` is a finite real number in the range."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigurationError(f"{owner}.{name} must be a number, got {type(value).__name__}")
    if not math.isfinite(value):
        raise ConfigurationError(f"{owner}.{name} must be finite, got {value!r}")
    if high is None:
        high = MAX_SECONDS  # past it, threads and sockets refuse the number (OverflowError)
    if (
        value < low
        or (low_open and value == low)
        or (high is not None and (value > high or (high_open and value == high)))
    ):
        raise ConfigurationError(
            "{}.{} must be {} {}{}, got {!r}".format(
                owner,
                name,
                ">" if low_open else ">=",
                low,
                "" if high is None else " and {} {}".format("<" if high_open else "<=", high),
                value,
            )
        )


def _per_window(owner: str, name: str, value: Any) -> None:
    if not isinstance(value, Mapping):
        raise ConfigurationError(
            f"{owner}.{name} must be a mapping of window name to seconds, got {type(value).__name__}"
        )
    for window, seconds in value.items():
        if not isinstance(window, str):
            raise ConfigurationError(
                f"{owner}.{name} keys must be window names (str), got {window!r}"
            )
        _number(owner, f"{name}[{window!r}]", seconds)


@dataclass(frozen=True)
class PollPolicy:
    """Where and how often a background response is polled, and how long a wait lasts.

    **The schedule.** Time is measured from the moment the create was
    accepted (the poller's clock when it starts watching), not from the
    server's whole-second ``created_at``. For each (model, window) the poller
    keeps the last ``history`` completion observations of responses it
    watched, each an interval (last poll that saw it running, first poll
    that saw it done], so the poll granularity is part of the record. From
    them it derives the region where completions are likely: from the
    smallest lower bound to the largest upper bound of the precise ones
    (narrower than 40% of their upper bound; once there are four, those more
    than twice as wide as the median are left out), widened by ``margin``.

    - Inside that region polls are ``target_delay`` x elapsed apart (0.08:
      a result is seen within 8% of its turn). Before it, one probe at
      ``region start / approach`` then the region start (so a service that
      got faster is noticed). Past it (a straggler), gaps grow again by
      ``multiplier``.
    - With only coarse observations, or none but a prior for the window
      (``priors``: asap 0.5-30 s, balanced/standard 30-300 s, flex
      60-3,600 s), the region is polled ``prior_delay`` x elapsed apart (0.25)
      and approached geometrically (x ``multiplier``) from ``initial_interval``.
      Probes before the region are skipped when a response of the same
      (model, window) accepted earlier was just seen still running at a
      later point of its own schedule.
    - Nothing known (an unknown window, or ``learn=False`` and no prior):
      geometric, ``initial_interval`` then x ``multiplier``.
    - Responses already waiting when a first precise observation arrives
      (a cold burst, planned geometrically) have their next poll moved to
      where the new region puts it, if that is earlier.

    Every gap is at least ``min_interval`` and at most ``max_interval[window]``
    (``default_max_interval`` for an unknown window). ``jitter`` shifts each
    watch's schedule by a random phase drawn once (+-``jitter`` of the first
    point, a fraction of a gap inside the region): many responses created
    together do not poll in lock-step, and the noise never accumulates.

    **Failures.** A poll that fails transiently (as the client's retry policy
    defines it, after the request loop's own retries) is tried again at the
    next point, up to ``max_consecutive_failures`` in a row.

    **Wait bound.** A wait with no deadline ends after ``max_wait[window]``
    seconds (``default_max_wait`` for an unknown window) with
    :class:`~sail_lite.errors.DeadlineExceededError` carrying the response
    id; the response goes on on the server. Defaults: asap 600 s (it answers
    in seconds: ten minutes means something is wrong), balanced / standard
    (and the retired priority) 1,800 s (six to thirty times its typical turn;
    the official SDK's completer gives up after 1,200 s), flex 86,400 s (best
    effort, off-peak: a day), unknown windows 3,600 s. A ``deadline=`` on the
    call replaces the bound.

    Bad values raise :class:`~sail_lite.errors.ConfigurationError` naming the field.
    """

    initial_interval: float = 0.1
    multiplier: float = 1.5
    max_interval: Dict[str, float] = field(default_factory=_default_caps, hash=False)
    default_max_interval: float = 10.0
    jitter: float = 0.1
    max_consecutive_failures: int = 8
    target_delay: float = 0.08
    prior_delay: float = 0.25
    approach: float = 3.0
    min_interval: float = 0.02
    margin: float = 0.05
    history: int = 32
    learn: bool = True
    priors: Dict[str, Tuple[float, float]] = field(default_factory=_default_priors, hash=False)
    max_wait: Dict[str, float] = field(default_factory=_default_max_wait, hash=False)
    default_max_wait: float = 3600.0

    def __post_init__(self) -> None:
        owner = "PollPolicy"
        _number(owner, "initial_interval", self.initial_interval)
        _number(owner, "multiplier", self.multiplier, low=1.0, low_open=False)
        _per_window(owner, "max_interval", self.max_interval)
        _number(owner, "default_max_interval", self.default_max_interval)
        _number(owner, "jitter", self.jitter, low_open=False, high=1.0, high_open=True)
        if isinstance(self.max_consecutive_failures, bool) or not isinstance(
            self.max_consecutive_failures, int
        ):
            raise ConfigurationError(
                f"PollPolicy.max_consecutive_failures must be an int, got {type(self.max_consecutive_failures).__name__}"
            )
        if self.max_consecutive_failures < 1:
            raise ConfigurationError(
                f"PollPolicy.max_consecutive_failures must be >= 1, got {self.max_consecutive_failures}"
            )
        _number(owner, "target_delay", self.target_delay, high=1.0)
        _number(owner, "prior_delay", self.prior_delay, high=1.0)
        _number(owner, "approach", self.approach, low=1.0)
        _number(owner, "min_interval", self.min_interval, low_open=False)
        _number(owner, "margin", self.margin, low_open=False, high=1.0, high_open=True)
        if isinstance(self.history, bool) or not isinstance(self.history, int) or self.history < 1:
            raise ConfigurationError(
                f"PollPolicy.history must be an int >= 1, got {self.history!r}"
            )
        if not isinstance(self.learn, bool):
            raise ConfigurationError(
                f"PollPolicy.learn must be a bool, got {type(self.learn).__name__}"
            )
        if not isinstance(self.priors, Mapping):
            raise ConfigurationError(
                "PollPolicy.priors must be a mapping of window name to (low, high) seconds"
            )
        for window, bounds in self.priors.items():
            name = f"priors[{window!r}]"
            if (
                not isinstance(window, str)
                or not isinstance(bounds, (tuple, list))
                or len(bounds) != 2
            ):
                raise ConfigurationError(f"PollPolicy.{name} must be a (low, high) pair of seconds")
            _number(owner, name + "[0]", bounds[0])
            _number(owner, name + "[1]", bounds[1])
            if bounds[1] < bounds[0]:
                raise ConfigurationError(
                    f"PollPolicy.{name} must have low <= high, got {tuple(bounds)!r}"
                )
        _per_window(owner, "max_wait", self.max_wait)
        _number(owner, "default_max_wait", self.default_max_wait)

    def cap(self, window: Optional[str]) -> float:
        """The longest gap between two polls of a response in ``window``."""
        return self.max_interval.get(window or "", self.default_max_interval)

    def wait_bound(self, window: Optional[str]) -> float:
        """Seconds a wait with no deadline lasts for ``window`` (``None``: the server's default, balanced)."""
        return self.max_wait.get(window or "balanced", self.default_max_wait)

    def prior(self, window: Optional[str]) -> Optional[Tuple[float, float]]:
        """Where completions are expected for ``window`` before any is seen (``None``: balanced)."""
        bounds = self.priors.get(window or "balanced")
        return (float(bounds[0]), float(bounds[1])) if bounds is not None else None

    def next_interval(
        self, previous: Optional[float], window: Optional[str], rng: random.Random
    ) -> Tuple[float, float]:
        """``(jittered, base)``: a geometric interval after ``previous`` (``None`` before the first).

        For waits outside the poller (batches, LoRA validation): the base
        grows by ``multiplier`` up to the window's cap; the jitter applies to
        the returned wait only, so it never accumulates.
        """
        base = self.initial_interval if previous is None else previous * self.multiplier
        base = min(base, max(self.cap(window), self.initial_interval))
        return base * (1.0 + self.jitter * (2.0 * rng.random() - 1.0)), base

    def next_poll(
        self,
        elapsed: float,
        window: Optional[str],
        region: Optional[Region],
        phase: float,
        frontier: float = 0.0,
    ) -> float:
        """The elapsed time (from acceptance) of the poll after one at ``elapsed`` (0: none yet).

        ``region`` is where completions are likely (``None``: nothing known);
        ``phase`` in [0, 1) is the watch's random phase, drawn once;
        ``frontier``: a response of the same kind accepted earlier was seen
        still running at this elapsed time, so probes up to it are skipped.
        Pure arithmetic: the poller calls it, tests table it.
        """
        cap = max(self.cap(window), self.min_interval)
        if region is None:
            if elapsed <= 0.0:
                point = self.initial_interval * (1.0 + self.jitter * (2.0 * phase - 1.0))
            else:
                point = elapsed * self.multiplier
        else:
            lo, hi, eps = region.low, region.high, region.eps
            entry = lo * (1.0 - eps * phase)  # the phase: a fraction of the first gap
            if elapsed < entry:
                if region.learned:
                    probe = entry / self.approach
                    worth = (
                        elapsed < probe * 0.999
                        and probe >= self.initial_interval
                        and frontier < probe
                    )
                    point = probe if worth else entry
                else:
                    point = self.initial_interval * (1.0 + self.jitter * (2.0 * phase - 1.0))
                    while point <= elapsed or (point <= frontier and point < entry):
                        point *= self.multiplier
                    point = min(point, entry)
            elif elapsed < hi:
                point = elapsed * (1.0 + eps)
            else:  # a straggler: gaps grow again
                point = elapsed * (1.0 + eps) + (elapsed - hi) * (self.multiplier - 1.0)
        return min(max(point, elapsed + self.min_interval), elapsed + cap)


class Region:
    """Where completions are likely, in seconds after acceptance; ``eps``: gap as a fraction of elapsed."""

    __slots__ = ("low", "high", "eps", "learned")

    def __init__(self, low: float, high: float, eps: float, learned: bool) -> None:
        self.low, self.high, self.eps, self.learned = low, high, eps, learned

    def __repr__(self) -> str:
        return f"Region({self.low:.3f}, {self.high:.3f}, eps={self.eps}, learned={self.learned})"


class _History:
    """Recent completion observations of one (model, window), and the latest "still running" frontier."""

    __slots__ = ("observations", "frontier", "frontier_at")

    def __init__(self, size: int) -> None:
        self.observations: Deque[Tuple[float, float]] = collections.deque(maxlen=size)
        self.frontier = 0.0
        self.frontier_at = -math.inf


class Knowledge:
    """What this client has seen of completion times, per (model, window); bounded; thread-safe."""

    #: An observation is precise when its interval is at most this fraction of its upper bound.
    PRECISE = 0.4  # a cold geometric schedule (x1.5) yields intervals of 1/3: those count

    def __init__(self, policy: PollPolicy) -> None:
        self._policy = policy
        self._lock = threading.Lock()
        self._by_key: Dict[Tuple[str, str], _History] = {}
        # region() runs before every poll; it changes only when an observation arrives.
        self._regions: Dict[Tuple[str, str], Dict[Optional[str], Optional[Region]]] = {}

    def _history(self, key: Tuple[str, str]) -> _History:
        found = self._by_key.get(key)
        if found is None:
            found = self._by_key[key] = _History(self._policy.history)
        return found

    def observe(self, key: Tuple[str, str], lower: float, upper: float) -> None:
        """A response became terminal after ``lower`` and by ``upper`` seconds from acceptance."""
        if not self._policy.learn or upper <= 0.0:
            return
        with self._lock:
            self._history(key).observations.append((max(0.0, lower), upper))
            self._regions.pop(key, None)

    def still_running(self, key: Tuple[str, str], elapsed: float, now: float) -> None:
        with self._lock:
            history = self._history(key)
            if elapsed > history.frontier or now - history.frontier_at > max(5.0, history.frontier):
                history.frontier, history.frontier_at = elapsed, now

    def frontier(self, key: Tuple[str, str], now: float) -> float:
        """The latest elapsed time a response of this kind was seen running, while recent."""
        with self._lock:
            history = self._by_key.get(key)
            if history is None or now - history.frontier_at > max(5.0, history.frontier):
                return 0.0
            return history.frontier

    def region(self, key: Tuple[str, str], window: Optional[str]) -> Optional[Region]:
        with self._lock:
            cached = self._regions.get(key)
            if cached is None:
                cached = self._regions[key] = {}
            elif window in cached:
                return cached[window]
            history = self._by_key.get(key)
            region = self._derive(list(history.observations) if history is not None else [], window)
            if len(cached) < 64:  # one entry per window name a caller used: bounded all the same
                cached[window] = region
            return region

    def _derive(
        self, observations: List[Tuple[float, float]], window: Optional[str]
    ) -> Optional[Region]:
        policy = self._policy
        precise = [(lo, hi) for lo, hi in observations if hi - lo <= self.PRECISE * hi]
        if len(precise) >= 4:  # once there are enough, the coarse early ones only blur the region
            widths = sorted(hi - lo for lo, hi in precise)
            limit = 2.0 * widths[len(widths) // 2]
            precise = [(lo, hi) for lo, hi in precise if hi - lo <= limit]
        use = precise or observations
        if use:
            low = min(lo for lo, _ in use) * (1.0 - policy.margin)
            high = max(hi for _, hi in use) * (1.0 + policy.margin)
            return Region(
                low, high, policy.target_delay if precise else policy.prior_delay, bool(precise)
            )
        prior = policy.prior(window)
        if prior is None:
            return None
        return Region(prior[0], prior[1], policy.prior_delay, False)

    def __len__(self) -> int:
        with self._lock:
            return sum(len(h.observations) for h in self._by_key.values())


def _default_is_transient(error: BaseException) -> bool:
    """The client's default retry policy decides (one definition of "transient")."""
    from .retry import RetryPolicy  # the client imported it already; deferred only for import order

    return isinstance(error, SailError) and RetryPolicy().should_retry(error, replay_safe=True)


class _Watch:
    """One background response being polled."""

    __slots__ = (
        "response_id",
        "window",
        "key",
        "future",
        "deadline_at",
        "bounded_by_default",
        "read_timeout",
        "transform",
        "started",
        "phase",
        "last_running",
        "failures",
        "learn",
        "polled",
        "slip",
    )

    def __init__(
        self,
        response_id: str,
        window: Optional[str],
        key: Tuple[str, str],
        future: Future,
        deadline_at: float,
        bounded_by_default: bool,
        read_timeout: Optional[float],
        transform: Callable[[Response], Any],
        started: float,
        phase: float,
        learn: bool,
    ) -> None:
        self.response_id = response_id
        self.window = window
        self.key = key
        self.future = future
        self.deadline_at = deadline_at
        self.bounded_by_default = bounded_by_default
        self.read_timeout = read_timeout
        self.transform = transform
        self.started = started
        self.phase = phase
        self.last_running = 0.0  # elapsed at the last poll that saw it running (0: none yet)
        self.failures = 0
        self.learn = learn
        self.polled = False  # whether any poll was sent yet: the first point is special
        self.slip = 0.0  # how late the next poll may go while creates wait: half its gap


class _Lanes:
    """Worker threads fed by two FIFO lanes: urgent (polls, cancels) and normal (creates).

    An urgent task may carry ``slip_until`` (on ``clock``): until then a
    queued normal task goes before it (a create starts a turn clock; a poll
    that may slip loses little by waiting). Past it, or without one, the
    urgent task goes first; not always: one task in ``FAIR`` comes from the
    normal lane when both wait, so a flood of due polls slows creates
    without stopping them.

    Threads start on demand up to ``workers``. :meth:`shutdown` lets queued
    tasks run (their futures must settle), then joins the threads.
    """

    def __init__(self, workers: int, name: str, clock: Callable[[], float]) -> None:
        self._workers = workers
        self._name = name
        self._clock = clock
        self._urgent: Deque[Tuple[Callable[..., Any], Tuple[Any, ...], float]] = collections.deque()
        self._normal: Deque[Tuple[Callable[..., Any], Tuple[Any, ...]]] = collections.deque()
        # "with self._lock" (C) on the hot paths; the condition shares it for waits and notifies.
        self._lock = threading.Lock()
        self._condition = threading.Condition(self._lock)
        self._threads: List[threading.Thread] = []
        self._idle = 0
        self._shutdown = False
        self._served = 0

    FAIR = 4

    def submit(
        self, urgent: bool, function: Callable[..., Any], *args: Any, slip_until: float = -math.inf
    ) -> None:
        with self._lock:
            if self._shutdown:
                raise RuntimeError("the poller's workers are shut down")
            if urgent:
                self._urgent.append((function, args, slip_until))
            else:
                self._normal.append((function, args))
            if self._idle:
                self._idle -= 1  # counted here, so a burst of submits wakes as many workers
                self._condition.notify()
            elif len(self._threads) < self._workers:
                thread = threading.Thread(
                    target=self._work, name=f"{self._name}-{len(self._threads)}", daemon=True
                )
                self._threads.append(thread)
                thread.start()

    def _work(self) -> None:
        while True:
            with self._lock:
                while not self._urgent and not self._normal:
                    if self._shutdown:
                        return
                    self._idle += 1
                    self._condition.wait()  # whoever notifies takes us off the idle count
                self._served += 1
                if self._normal and (
                    not self._urgent
                    or self._served % self.FAIR == 0
                    or self._urgent[0][2] > self._clock()
                ):
                    function, args = self._normal.popleft()
                else:
                    function, args, _ = self._urgent.popleft()
            try:
                function(*args)
            except BaseException:  # a task settles its own future; this only keeps the worker alive
                _logger.exception("a poller task failed")

    @property
    def threads(self) -> int:
        with self._condition:
            return len(self._threads)

    def shutdown(self) -> None:
        with self._condition:
            self._shutdown = True
            self._condition.notify_all()
            threads = list(self._threads)
        for thread in threads:
            if thread is not threading.current_thread():
                thread.join()


class Poller:
    """Polls background responses until terminal and settles their futures.

    ``fetch(response_id, deadline_at, read_timeout)`` retrieves a response
    (through the client's request loop); ``cancel(response_id)`` cancels one
    on the server; ``is_transient(error)`` says whether a failed poll is
    worth another (default: the default :class:`~sail_lite.retry.RetryPolicy`
    with ``replay_safe=True``; the client passes its own policy). At most
    ``min(max_workers, 31)`` worker threads plus one scheduler, started on
    first use; :meth:`close` stops them.
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
        is_transient: Optional[Callable[[BaseException], bool]] = None,
    ) -> None:
        self._fetch = fetch
        self._cancel = cancel
        self._policy = policy
        self._clock = clock
        self._rng = rng
        self._is_transient = is_transient or _default_is_transient
        self._knowledge = Knowledge(policy)
        self._lanes = _Lanes(max(1, min(max_workers, MAX_THREADS - 1)), "sail-lite-poll", clock)
        self._heap: List[Tuple[float, int, _Watch]] = []
        self._sequence = itertools.count()
        self._lock = threading.Lock()
        self._condition = threading.Condition(
            self._lock
        )  # shares the lock: "with self._lock" on hot paths
        self._scheduler: Optional[threading.Thread] = None
        self._rescheduled: Dict[Tuple[str, str], float] = {}
        self._closed = False

    # --- public --------------------------------------------------------

    def run(self, function: Callable[..., Any], *args: Any) -> Future:
        """Run ``function(*args)`` on a worker, behind due polls (used for creates that precede a watch)."""
        if self._closed:
            raise ClientClosedError("the client is closed; create a new one")
        from concurrent.futures import Future

        future: Future = Future()

        def task() -> None:
            if not future.set_running_or_notify_cancel():
                return
            try:
                result = function(*args)
            except BaseException as exc:
                future.set_exception(exc)
            else:
                future.set_result(result)

        try:
            self._lanes.submit(False, task)
        except RuntimeError:
            raise ClientClosedError("the client is closed; create a new one") from None
        return future

    def start(self, function: Callable[..., Any], *args: Any) -> None:
        """Like :meth:`run`, without a future: ``function`` settles its own outcome (an exception is logged)."""
        if self._closed:
            raise ClientClosedError("the client is closed; create a new one")
        try:
            self._lanes.submit(False, function, *args)
        except RuntimeError:
            raise ClientClosedError("the client is closed; create a new one") from None

    def watch(
        self,
        response: Response,
        future: Future,
        *,
        window: Optional[str],
        deadline_at: Optional[float],
        transform: Callable[[Response], Any],
        read_timeout: Optional[float] = None,
        learn: bool = True,
    ) -> None:
        """Poll ``response`` until terminal, then settle ``future`` with ``transform(terminal)``.

        Call it as soon as the create is accepted: the schedule counts from
        now. ``transform`` may raise (e.g. a failed response): the exception
        settles the future. Cancelling ``future`` cancels the response on the
        server. Without ``deadline_at`` the wait is bounded by the policy's
        ``max_wait`` for the window (:class:`DeadlineExceededError`).
        ``learn=False`` for a response created long before this call (e.g.
        ``responses.wait(id)``): its completion time says nothing about turns.
        """
        if response.is_terminal and not future.done():
            # Finished already (a fast turn): settle here; no watch to track, nothing left to cancel.
            self._settle_now(future, transform, response)
            return
        window = window or _metadata_window(response)
        now = self._clock()
        bounded_by_default = deadline_at is None
        if deadline_at is None:
            deadline_at = now + self._policy.wait_bound(window)
        key = (response.model or "", window or "")
        watch = _Watch(
            response.id,
            window,
            key,
            future,
            deadline_at,
            bounded_by_default,
            read_timeout,
            transform,
            now,
            self._rng.random(),
            learn,
        )
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
                    f"the client closed while waiting for response {watch.response_id}; it continues on the server: "
                    f"resume with client.responses.wait({watch.response_id!r}) on a new client",
                    response_id=watch.response_id,
                ),
            )
        if self._scheduler is not None and self._scheduler is not threading.current_thread():
            self._scheduler.join()
        self._lanes.shutdown()

    @property
    def in_flight(self) -> int:
        """How many responses are scheduled for a poll right now."""
        with self._condition:
            return len(self._heap)

    # --- scheduling ----------------------------------------------------

    def _schedule(self, watch: _Watch) -> None:
        now = self._clock()
        elapsed = now - watch.started if watch.polled else 0.0
        region = self._knowledge.region(watch.key, watch.window)
        point = self._policy.next_poll(
            elapsed, watch.window, region, watch.phase, self._knowledge.frontier(watch.key, now)
        )
        due = min(watch.started + point, watch.deadline_at)
        watch.slip = 0.5 * max(0.0, due - (watch.started + elapsed))
        with self._lock:
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
            self._fail(
                watch, ClientClosedError("the client is closed", response_id=watch.response_id)
            )

    #: A key's waiting watches are re-planned at most this often (seconds): each pass walks the heap.
    RESCHEDULE_EVERY = 1.0

    def _maybe_reschedule(
        self, key: Tuple[str, str], window: Optional[str], before: Optional[Region]
    ) -> None:
        """Pull waiting polls of ``key`` earlier when an observation just placed completions earlier.

        Watches that were planned before anything was known (a cold burst,
        all accepted within seconds) would otherwise keep their coarse,
        geometric next point although siblings have just shown where
        completions are. Only on a material change (the region became
        learned, or its start moved 20% earlier), at most once per
        ``RESCHEDULE_EVERY`` per key; a poll is only ever moved earlier.
        """
        after = self._knowledge.region(key, window)
        if (
            after is None
            or not after.learned
            or (before is not None and before.learned and after.low >= 0.8 * before.low)
        ):
            return
        now = self._clock()
        with self._lock:
            if now - self._rescheduled.get(key, -math.inf) < self.RESCHEDULE_EVERY:
                return
            self._rescheduled[key] = now
        frontier = self._knowledge.frontier(key, now)
        policy = self._policy
        with self._lock:
            heap = self._heap
            moved = False
            for index, (due, sequence, watch) in enumerate(heap):
                if watch.key != key:
                    continue
                elapsed = watch.last_running if watch.polled else 0.0
                point = policy.next_poll(elapsed, watch.window, after, watch.phase, frontier)
                earlier = min(watch.started + point, watch.deadline_at)
                if earlier < due:
                    watch.slip = 0.5 * max(0.0, earlier - (watch.started + elapsed))
                    heap[index] = (earlier, sequence, watch)
                    moved = True
            if moved:
                heapq.heapify(heap)
                self._condition.notify()

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
                due, _, watch = heapq.heappop(self._heap)
            if watch.future.done():
                continue  # cancelled: the done-callback has already cancelled it on the server
            try:
                self._lanes.submit(True, self._poll, watch, slip_until=due + watch.slip)
            except RuntimeError:  # the workers shut down under us: close() is settling everything
                return

    def _poll(self, watch: _Watch) -> None:
        if watch.future.done():
            return
        sent = self._clock()
        watch.polled = True
        if sent >= watch.deadline_at:
            self._fail(watch, self._deadline_error(watch, None))
            return
        try:
            response = self._fetch(watch.response_id, watch.deadline_at, watch.read_timeout)
        except DeadlineExceededError as exc:
            self._fail(watch, self._deadline_error(watch, exc))
            return
        except SailError as exc:
            watch.failures += 1
            if (
                self._is_transient(exc)
                and watch.failures < self._policy.max_consecutive_failures
                and not self._closed
            ):
                _logger.warning(
                    "poll of %s failed (%s); trying again later",
                    watch.response_id,
                    type(exc).__name__,
                )
                self._schedule(watch)
            else:
                if exc.response_id is None:
                    exc.response_id = watch.response_id
                self._fail(watch, exc)
            return
        except Exception as exc:  # a bug must not kill a worker silently
            self._fail(watch, exc)
            return
        watch.failures = 0
        if response.is_terminal:
            if watch.learn and response.status in ("completed", "incomplete"):
                before = self._knowledge.region(watch.key, watch.window)
                self._knowledge.observe(
                    watch.key, watch.last_running, self._clock() - watch.started
                )
                self._maybe_reschedule(watch.key, watch.window, before)
            self._settle(watch, response)
        elif self._clock() >= watch.deadline_at:
            self._fail(watch, self._deadline_error(watch, None, status=response.status))
        else:
            watch.last_running = sent - watch.started
            if watch.learn:
                self._knowledge.still_running(watch.key, watch.last_running, sent)
            self._schedule(watch)

    # --- settling ------------------------------------------------------

    def _settle(self, watch: _Watch, response: Response) -> None:
        self._settle_now(watch.future, watch.transform, response)

    @staticmethod
    def _settle_now(
        future: Future, transform: Callable[[Response], Any], response: Response
    ) -> None:
        try:
            result = transform(response)
        except BaseException as exc:  # the transform's typed error is the result
            outcome, value = future.set_exception, exc
        else:
            outcome, value = future.set_result, result
        try:
            outcome(value)
        except _invalid_state():
            pass  # cancelled meanwhile; the result is dropped by the caller's choice

    def _fail(self, watch: _Watch, error: BaseException) -> None:
        try:
            watch.future.set_exception(error)
        except _invalid_state():
            pass

    def _on_future_done(self, watch: _Watch, future: Future) -> None:
        if not future.cancelled():
            return
        # Runs in the thread that called cancel(): never block it on HTTP.
        with self._condition:
            if self._closed:
                return
        try:
            self._lanes.submit(True, self._cancel_quietly, watch.response_id)
        except RuntimeError:
            pass

    def _cancel_quietly(self, response_id: str) -> None:
        try:
            self._cancel(response_id)
        except SailError as exc:
            _logger.warning(
                "cancelling %s on the server failed: %s", response_id, type(exc).__name__
            )

    def _deadline_error(
        self, watch: _Watch, cause: Optional[BaseException], status: Optional[str] = None
    ) -> DeadlineExceededError:
        if watch.bounded_by_default:
            why = "the default wait bound ({:g} s for the {} window) passed while waiting for response {}".format(
                self._policy.wait_bound(watch.window), watch.window or "default", watch.response_id
            )
            how = "; pass deadline= or PollPolicy(max_wait=...) to wait longer"
        else:
            why = f"deadline passed while waiting for response {watch.response_id}"
            how = ""
        error = DeadlineExceededError(
            "{}{}; it continues on the server: wait on it again or cancel it{}".format(
                why, f" (last status {status})" if status else "", how
            ),
            response_id=watch.response_id,
        )
        error.__cause__ = cause
        return error


def _invalid_state() -> type:
    """``concurrent.futures.InvalidStateError`` (set_* on a cancelled future), imported when first needed."""
    from concurrent.futures import InvalidStateError

    return InvalidStateError


def _metadata_window(response: Response) -> Optional[str]:
    window = (
        response.metadata.get("completion_window") if isinstance(response.metadata, dict) else None
    )
    return window if isinstance(window, str) and window else None
