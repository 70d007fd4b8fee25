"""The poller: many in-flight background responses, few threads, polls where completions happen.

A scheduler thread keeps a heap of ``(next poll time, watch)`` and hands due
polls to a :class:`concurrent.futures.ThreadPoolExecutor`; a worker is busy
only while an HTTP call is. Creates queued by :meth:`Poller.run` run on a
second executor, so a burst of creates never queues in front of a due poll
(at most one create per connection goes before it). Ten thousand responses
in flight cost ten thousand heap entries, not ten thousand threads.

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
from .retry import RetryPolicy

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
    if value < low or (low_open and value == low) or value > high or (high_open and value == high):
        above = ">" if low_open else ">="
        below = "<" if high_open else "<="
        raise ConfigurationError(
            f"{owner}.{name} must be {above} {low} and {below} {high}, got {value!r}"
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
      and approached on a geometric grid (x ``multiplier``) laid back from
      the region's start, its first point in [``initial_interval`` x
      sqrt(``multiplier``), that x ``multiplier``) (see :meth:`approach_point`):
      a cold sample whose turn ``t`` ends before the region costs
      1 + log_multiplier(t / ``initial_interval``) - 1/2 polls on average.
      Probes before the region are skipped when a response of the same
      (model, window) accepted earlier was just seen still running at a
      later point of its own schedule.
    - Nothing known (an unknown window, or ``learn=False`` and no prior):
      geometric, ``initial_interval`` then x ``multiplier``.
    - A response that began cold keeps that first schedule when its
      siblings' first completions reveal a region it is already inside (the
      dense polls would cost more than the cold bound); one that is still
      before the new region moves its next poll there, if that is earlier.

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

    **With a webhook receiver** (``Client(webhooks=...)``): a response whose
    create carried the receiver's ``completion_webhook`` is finished by its
    webhook (one confirming ``GET``), so polling is only the safety net for a
    webhook that never comes: its first poll is ``webhook_interval`` seconds
    (60) after acceptance and every gap after is at least that (the usual
    gap when wider, e.g. flex's 120 s cap). A lost webhook costs at most
    about ``webhook_interval`` seconds of latency, never a result; a
    delivered one costs no poll at all when the turn is shorter than
    ``webhook_interval``. These watches teach the schedule nothing (their
    polls are too sparse to say when a response finished).

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
    webhook_interval: float = 60.0

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
        _number(owner, "webhook_interval", self.webhook_interval)

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
            entry = region.low * (
                1.0 - region.eps * phase
            )  # the phase: a fraction of the first gap
            if elapsed < entry * _BELOW:
                point = self._before(elapsed, region, entry, frontier)
            elif elapsed < region.high:
                point = elapsed * (1.0 + region.eps)
            else:  # a straggler: gaps grow again
                straggle = (elapsed - region.high) * (self.multiplier - 1.0)
                point = elapsed * (1.0 + region.eps) + straggle
        return min(max(point, elapsed + self.min_interval), elapsed + cap)

    def _before(self, elapsed: float, region: Region, entry: float, frontier: float) -> float:
        if not region.learned:
            return self.approach_point(elapsed, entry, frontier)
        probe = entry / self.approach
        worth = elapsed < probe * 0.999 and probe >= self.initial_interval and frontier < probe
        return probe if worth else entry

    def approach_point(self, elapsed: float, entry: float, frontier: float = 0.0) -> float:
        """The next point of the first (cold) schedule before a region that starts at ``entry``.

        The points are a geometric grid (x ``multiplier``) laid back from
        ``entry`` (the prior's start, shifted by the watch's phase), the
        first in [``initial_interval`` x sqrt(``multiplier``), that x
        ``multiplier``): a turn of ``t`` seconds before the region is seen on
        1 + log_multiplier(t / initial_interval) - 1/2 polls on average (one
        more at most), and the region's start is itself a point, not one
        squeezed in before it. Points up to ``frontier`` are skipped (never
        the entry).
        """
        first = self.initial_interval * math.sqrt(self.multiplier)
        if self.multiplier <= 1.0:
            return min(max(elapsed, frontier) + self.initial_interval, entry)
        if entry <= first:
            return entry
        steps = math.floor(math.log(entry / first) / math.log(self.multiplier))
        point = entry / self.multiplier**steps
        while point < entry and (point <= elapsed / _BELOW or point <= frontier):
            point *= self.multiplier
        return min(point, entry)


#: A point this close under the region's start counts as on it (the grid is computed in floats).
_BELOW = 1.0 - 1e-9


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
    """What this client has seen of completion times, per (model, window); bounded.

    Not locked: the :class:`Poller` calls it under its one lock (a second
    lock here would only be taken inside that one).
    """

    #: An observation is precise when its interval is at most this fraction of its upper bound.
    PRECISE = 0.4  # a cold geometric schedule (x1.5) yields intervals of 1/3: those count

    def __init__(self, policy: PollPolicy) -> None:
        self._policy = policy
        self._by_key: Dict[Tuple[str, str], _History] = {}
        # region() runs before every poll; it changes only when an observation arrives.
        self._regions: Dict[Tuple[str, str], Dict[Optional[str], Optional[Region]]] = {}
        self._rescheduled: Dict[Tuple[str, str], float] = {}

    def _history(self, key: Tuple[str, str]) -> _History:
        found = self._by_key.get(key)
        if found is None:
            found = self._by_key[key] = _History(self._policy.history)
        return found

    def observe(self, key: Tuple[str, str], lower: float, upper: float) -> None:
        """A response became terminal after ``lower`` and by ``upper`` seconds from acceptance."""
        if not self._policy.learn or upper <= 0.0:
            return
        self._history(key).observations.append((max(0.0, lower), upper))
        self._regions.pop(key, None)

    #: A key's waiting watches are re-planned at most this often (seconds): each pass walks the heap.
    RESCHEDULE_EVERY = 1.0

    def observe_change(
        self, key: Tuple[str, str], window: Optional[str], lower: float, upper: float, now: float
    ) -> Optional[Region]:
        """:meth:`observe`; the new region when waiting watches of ``key`` should be re-planned.

        Watches planned before anything was known would otherwise keep
        their coarse next point although siblings have just shown where
        completions are (a cold watch only when that region lies wholly
        ahead of it: see ``_next_due``). Only on a material change (the
        region became learned, or its start moved 20% earlier), at most once
        per ``RESCHEDULE_EVERY`` per key.
        """
        before = self.region(key, window)
        self.observe(key, lower, upper)
        after = self.region(key, window)
        if (
            after is None
            or not after.learned
            or (before is not None and before.learned and after.low >= 0.8 * before.low)
            or now - self._rescheduled.get(key, -math.inf) < self.RESCHEDULE_EVERY
        ):
            return None
        self._rescheduled[key] = now
        return after

    def still_running(self, key: Tuple[str, str], elapsed: float, now: float) -> None:
        history = self._history(key)
        if elapsed > history.frontier or now - history.frontier_at > max(5.0, history.frontier):
            history.frontier, history.frontier_at = elapsed, now

    def frontier(self, key: Tuple[str, str], now: float) -> float:
        """The latest elapsed time a response of this kind was seen running, while recent."""
        history = self._by_key.get(key)
        if history is None or now - history.frontier_at > max(5.0, history.frontier):
            return 0.0
        return history.frontier

    def region(self, key: Tuple[str, str], window: Optional[str]) -> Optional[Region]:
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
            eps = policy.target_delay if precise else policy.prior_delay
            return Region(low, high, eps, bool(precise))
        return self.prior_region(window)

    def prior_region(self, window: Optional[str]) -> Optional[Region]:
        """The window's documented prior as a region (``None``: no prior for it)."""
        prior = self._policy.prior(window)
        if prior is None:
            return None
        return Region(prior[0], prior[1], self._policy.prior_delay, False)

    def __len__(self) -> int:
        return sum(len(h.observations) for h in self._by_key.values())


def _default_is_transient(error: BaseException) -> bool:
    """The client's default retry policy decides (one definition of "transient")."""
    return isinstance(error, SailError) and RetryPolicy().should_retry(error, replay_safe=True)


class Poller:
    """Polls background responses until terminal and settles their futures.

    ``fetch(response_id, deadline_at, read_timeout)`` retrieves a response
    (through the client's request loop); ``cancel(response_id)`` cancels one
    on the server; ``is_transient(error)`` says whether a failed poll is
    worth another (default: the default :class:`~sail_lite.retry.RetryPolicy`
    with ``replay_safe=True``; the client passes its own policy).

    Threads: one scheduler (a heap of ``(next poll time, watch)``, started on
    first use) and two :class:`~concurrent.futures.ThreadPoolExecutor` lanes
    that split ``max_workers`` between them: polls and server-side cancels on
    one, creates (:meth:`run`, :meth:`start`) on the other, so a burst of
    creates never queues in front of a due poll. At most 32 threads in all.
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
        self._condition = threading.Condition(threading.Lock())
        self._lanes = _Executors(max_workers, self._condition)
        self._heap = _Heap()
        # The one lock (self._condition, above): the heap, the knowledge, the closed flag, the
        # creates' backlog; the scheduler waits on it.
        self._scheduler: Optional[threading.Thread] = None
        self._running = 0  # polls handed to the executor and not finished
        self._closed = False

    # --- public --------------------------------------------------------

    def run(self, function: Callable[..., Any], *args: Any) -> Future:
        """Run ``function(*args)`` on the creates lane; the future settles with its outcome."""
        from concurrent.futures import Future

        future: Future = Future()
        self.start(_settle_with, future, function, args)
        return future

    def start(self, function: Callable[..., Any], *args: Any) -> None:
        """Like :meth:`run`, without a future to wait on: ``function`` settles its own outcome.

        An exception escaping ``function`` is logged (never silently lost).
        """
        if self._closed or not self._lanes.start(function, args):
            raise ClientClosedError("the client is closed; create a new one")

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
        pushed: bool = False,
    ) -> Optional[Callable[[Optional[Response]], None]]:
        """Poll ``response`` until terminal, then settle ``future`` with ``transform(terminal)``.

        Call it as soon as the create is accepted: the schedule counts from
        now. ``transform`` may raise (e.g. a failed response): the exception
        settles the future. Cancelling ``future`` cancels the response on the
        server. Without ``deadline_at`` the wait is bounded by the policy's
        ``max_wait`` for the window (:class:`DeadlineExceededError`).
        ``learn=False`` for a response created long before this call (e.g.
        ``responses.wait(id)``): its completion time says nothing about turns.

        ``pushed=True``: a webhook will say when it is done; polls follow the
        sparse safety schedule (``PollPolicy.webhook_interval``) and learn
        nothing. Returns ``nudge`` (``None``: settled already), to call when
        its webhook arrives: ``nudge(None)`` polls it now on the polls lane
        (again after a poll in flight), ``nudge(terminal)`` settles with that
        trusted body; a settled watch ignores it.
        """
        if response.is_terminal:
            # Finished already (a fast turn): settle here; no watch to track, nothing to cancel.
            _settle(future, transform, response)
            return None
        window = window or _metadata_window(response)
        now = self._clock()
        bound = deadline_at is None
        if deadline_at is None:
            deadline_at = now + self._policy.wait_bound(window)
        key = (response.model or "", window or "")
        watch = _Watch(response.id, window, key, future, deadline_at, bound, read_timeout)
        watch.transform, watch.started, watch.learn = transform, now, learn and not pushed
        watch.pushed = pushed
        watch.phase = self._rng.random()
        future.add_done_callback(lambda done: self._on_future_done(watch, done))
        self._schedule(watch)
        return lambda terminal: self._nudge(watch, terminal)

    def _nudge(self, watch: _Watch, terminal: Optional[Response]) -> None:
        """A webhook for ``watch`` arrived: poll it now, or settle it with a trusted terminal body."""
        if watch.future.done():
            return
        if terminal is not None and terminal.is_terminal:
            with self._condition:
                self._heap.unqueue(watch)
            _settle(watch.future, watch.transform, terminal)
            return
        with self._condition:
            if self._closed:
                return
            if not self._heap.unqueue(watch):  # a poll is in flight: it may have left too early
                watch.again = True
                return
            self._running += 1
        try:
            self._lanes.polls.submit(self._poll, watch)
        except RuntimeError:  # shut down under us: close() fails the future
            with self._condition:
                self._running -= 1

    def close(self) -> None:
        """Stop polling; unsettled futures fail with :class:`ClientClosedError` carrying the response id.

        Blocks until the tasks already queued (a create, a server-side
        cancel) have run, so a cancel issued just before still reaches the
        server; queued polls end without a request. From one of the
        poller's own threads (a done-callback) it does not wait for that one.
        """
        with self._condition:
            if self._closed:
                return
            self._closed = True
            pending = self._heap.clear()
            self._condition.notify_all()
        for watch in pending:
            _fail(watch.future, _closed_error(watch.response_id))
        if self._scheduler is not None and self._scheduler is not threading.current_thread():
            self._scheduler.join()
        self._lanes.shutdown()

    @property
    def in_flight(self) -> int:
        """How many responses are watched right now (scheduled, or being polled)."""
        with self._condition:
            return len(self._heap) + self._running

    @property
    def polling(self) -> int:
        """How many polls are handed to the workers and not finished yet."""
        with self._condition:
            return self._running

    def next_due(self) -> Optional[float]:
        """The clock time of the earliest scheduled poll (``None``: none), for tools and tests."""
        with self._condition:
            return self._heap.earliest()

    def wake(self) -> None:
        """Make the scheduler look at its clock again (for an injected clock that jumped)."""
        with self._condition:
            self._condition.notify_all()

    # --- scheduling ----------------------------------------------------

    def _schedule(self, watch: _Watch, running_at: Optional[float] = None) -> None:
        """Put ``watch``'s next poll on the heap (``running_at``: a poll just saw it running)."""
        if watch.future.done():
            return  # cancelled, or settled by a trusted webhook body: nothing left to poll
        with self._condition:
            if not self._closed:
                now = self._clock()
                if running_at is not None and watch.learn:
                    self._knowledge.still_running(watch.key, watch.last_running, running_at)
                # From the planned point when a poll went a little early (see COALESCE).
                elapsed = max(now, watch.due) - watch.started if watch.polled else 0.0
                watch.due = _next_due(self._knowledge, self._policy, watch, now, elapsed, None)
                if watch.again:  # a webhook came during the poll that just saw it running
                    watch.again, watch.due = False, now
                first = self._heap.push(watch, watch.due)
                if self._scheduler is None:
                    self._scheduler = threading.Thread(
                        target=self._run, name="sail-lite-poll-scheduler", daemon=True
                    )
                    self._scheduler.start()
                elif first:
                    self._condition.notify()
                return
        _fail(watch.future, _closed_error(watch.response_id))

    def _observe(self, watch: _Watch, seen_at: float) -> None:
        """Record a completion; pull waiting polls of its key earlier if completions come earlier
        (see :meth:`Knowledge.observe_change`; a poll is only ever moved earlier)."""
        key, knowledge = watch.key, self._knowledge
        with self._condition:
            lower, upper = watch.last_running, seen_at - watch.started
            after = knowledge.observe_change(key, watch.window, lower, upper, seen_at)
            if after is None:
                return

            def plan(other: _Watch) -> float:
                elapsed = other.last_running if other.polled else 0.0
                return _next_due(knowledge, self._policy, other, seen_at, elapsed, after)

            if self._heap.move_earlier(key, plan):
                self._condition.notify()

    #: Polls due this soon go with the ones due now: one wake of the scheduler for a few polls.
    COALESCE = 0.002

    def _run(self) -> None:
        """The scheduler: hand every due poll to the polls lane, then sleep until the next."""
        while True:
            with self._condition:
                while not self._closed:
                    first = self._heap.first()
                    wait = first - self._clock() if first is not None else None
                    if wait is not None and wait <= self.COALESCE:
                        break
                    self._condition.wait(wait)
                if self._closed:
                    return
                due = self._heap.pop_due(self._clock() + self.COALESCE)
                self._running += len(due)
            for index, watch in enumerate(due):
                try:
                    self._lanes.polls.submit(self._poll, watch)
                except RuntimeError:  # shut down under us (interpreter exit): settle, never drop
                    with self._condition:
                        self._running -= len(due) - index
                    for left in due[index:]:
                        _fail(left.future, _closed_error(left.response_id))
                    return

    def _poll(self, watch: _Watch) -> None:
        try:
            if self._closed:
                _fail(watch.future, _closed_error(watch.response_id))
            elif not watch.future.done():  # done: cancelled, and already cancelled on the server
                self._poll_once(watch)
        finally:
            with self._condition:
                self._running -= 1

    def _poll_once(self, watch: _Watch) -> None:
        sent = self._clock()
        if sent >= watch.deadline_at:
            _fail(watch.future, _deadline_error(self._policy, watch, None))
            return
        try:
            response = self._fetch(watch.response_id, watch.deadline_at, watch.read_timeout)
        except DeadlineExceededError as exc:
            _fail(watch.future, _deadline_error(self._policy, watch, exc))
            return
        except SailError as exc:
            self._poll_failed(watch, exc)
            return
        except Exception as exc:  # a bug must not kill a worker silently
            _fail(watch.future, exc)
            return
        watch.failures = 0
        watch.polled = True
        if response.is_terminal:
            if watch.learn and response.status in ("completed", "incomplete"):
                self._observe(watch, self._clock())
            _settle(watch.future, watch.transform, response)
        elif self._clock() >= watch.deadline_at:
            _fail(watch.future, _deadline_error(self._policy, watch, None, status=response.status))
        else:
            watch.last_running = sent - watch.started
            self._schedule(watch, running_at=sent)

    def _poll_failed(self, watch: _Watch, error: SailError) -> None:
        transient = self._is_transient(error) and not self._closed
        if _count_failure(watch, error, transient, self._policy.max_consecutive_failures):
            self._schedule(watch)

    def _on_future_done(self, watch: _Watch, future: Future) -> None:
        if not future.cancelled() or self._closed:
            return
        # Runs in the thread that called cancel(): never block it on HTTP.
        try:
            self._lanes.polls.submit(_cancel_quietly, self._cancel, watch.response_id)
        except RuntimeError:
            pass


def _count_failure(watch: _Watch, error: SailError, transient: bool, limit: int) -> bool:
    """Count a failed poll of ``watch``: True to poll again later, else its future fails with ``error``."""
    watch.polled = True
    watch.failures += 1
    if transient and watch.failures < limit:
        _logger.warning(
            "poll of %s failed (%s); trying again later", watch.response_id, type(error).__name__
        )
        return True
    if error.response_id is None:
        error.response_id = watch.response_id
    _fail(watch.future, error)
    return False


def _next_due(
    knowledge: Knowledge,
    policy: PollPolicy,
    watch: _Watch,
    now: float,
    elapsed: float,
    region: Optional[Region],
) -> float:
    """The clock time of ``watch``'s next poll after one at ``elapsed`` (under the poller's lock).

    ``region``: where completions are likely (``None``: look it up). A watch
    that began before anything was learned (cold) keeps its first schedule,
    the prior's, unless a learned region still lies wholly ahead of it: a
    cold burst then costs at most 1 + log_multiplier(turn / initial_interval)
    polls a sample, not the dense polls of a region its siblings only just
    revealed.
    """
    if region is None:
        region = knowledge.region(watch.key, watch.window)
    if watch.cold and region is not None and region.learned:
        if elapsed >= region.low * (1.0 - region.eps * watch.phase):
            region = knowledge.prior_region(watch.window)
        else:
            watch.cold = False
    frontier = knowledge.frontier(watch.key, now)
    point = policy.next_poll(elapsed, watch.window, region, watch.phase, frontier)
    if watch.pushed:  # the webhook is the signal; polls are the safety net
        point = max(point, elapsed + policy.webhook_interval)
    return min(watch.started + point, watch.deadline_at)


class _Heap:
    """The poller's schedule: a heap of ``(due, sequence, watch)``, at most one live entry per watch.

    Not locked: the :class:`Poller` uses it under its one lock. A watch taken
    off before it is due (a webhook's nudge) leaves its entry behind, stale
    (its sequence no longer the watch's), dropped when it comes due: no
    search of the heap per webhook.
    """

    def __init__(self) -> None:
        self._entries: List[Tuple[float, int, _Watch]] = []
        self._sequence = itertools.count()
        self._stale = 0

    def __len__(self) -> int:
        return len(self._entries) - self._stale

    def push(self, watch: _Watch, due: float) -> bool:
        """Plan ``watch``'s next poll at ``due``; True if it is now the earliest entry."""
        watch.due, watch.sequence, watch.queued = due, next(self._sequence), True
        heapq.heappush(self._entries, (due, watch.sequence, watch))
        return self._entries[0][2] is watch

    def unqueue(self, watch: _Watch) -> bool:
        """Take ``watch``'s planned poll off (its entry goes stale); False if none was planned."""
        if not watch.queued:
            return False
        watch.queued, watch.sequence = False, -1
        self._stale += 1
        return True

    def first(self) -> Optional[float]:
        """When the scheduler should look next (the earliest entry, stale ones included)."""
        return self._entries[0][0] if self._entries else None

    def earliest(self) -> Optional[float]:
        """The earliest planned poll (stale entries left out)."""
        due = [d for d, sequence, watch in self._entries if sequence == watch.sequence]
        return min(due) if due else None

    def pop_due(self, until: float) -> List[_Watch]:
        """The watches planned up to ``until``, taken off."""
        entries, due = self._entries, []
        while entries and entries[0][0] <= until:
            _, sequence, watch = heapq.heappop(entries)
            if sequence != watch.sequence:
                self._stale -= 1  # nudged off: polled already
                continue
            watch.queued = False
            due.append(watch)
        return due

    def clear(self) -> List[_Watch]:
        """Every planned watch, taken off."""
        live = [watch for _, sequence, watch in self._entries if sequence == watch.sequence]
        for watch in live:
            watch.queued = False
        self._entries.clear()
        self._stale = 0
        return live

    def move_earlier(self, key: Tuple[str, str], plan: Callable[[_Watch], float]) -> bool:
        """Move each planned poll of ``key`` to ``plan(watch)`` when that is earlier; True if any moved."""
        entries, moved = self._entries, False
        for index, (due, sequence, watch) in enumerate(entries):
            if watch.key == key and sequence == watch.sequence:
                earlier = plan(watch)
                if earlier < due:
                    entries[index], watch.due = (earlier, sequence, watch), earlier
                    moved = True
        if moved:
            heapq.heapify(entries)
        return moved


class _Executors:
    """The poller's two lanes: a ThreadPoolExecutor for polls and cancels, one for creates.

    Creates beyond the creates lane's threads wait in a backlog here, not in
    the executor's queue: a create that finishes hands the next one to the
    executor. So when the interpreter exits with a client never closed (the
    executor then joins its threads after its queue drains, and refuses new
    work), at most one create per thread is still sent, not the whole
    backlog. ``condition`` is the poller's lock.
    """

    def __init__(self, max_workers: int, condition: threading.Condition) -> None:
        # Here, not at the top: importing sail_lite (for PollPolicy) starts no executor machinery.
        from concurrent.futures import ThreadPoolExecutor

        self._local = threading.local()  # .ours is True in these executors' threads
        polls, self._slots = lane_sizes(max_workers)
        self.polls = ThreadPoolExecutor(polls, "sail-lite-poll", self._mark)
        self.creates = ThreadPoolExecutor(self._slots, "sail-lite-create", self._mark)
        self._condition = condition
        self._backlog: Deque[Tuple[Callable[..., Any], Tuple[Any, ...]]] = collections.deque()
        self._creating = 0  # creates handed to the executor and not finished

    def _mark(self) -> None:
        self._local.ours = True

    def start(self, function: Callable[..., Any], args: Tuple[Any, ...]) -> bool:
        """Run ``function(*args)`` on the creates lane, in order; False: the lane is shut down."""
        with self._condition:
            if self._creating >= self._slots:
                self._backlog.append((function, args))
                return True
            self._creating += 1
        return self._hand_over(function, args)

    def _hand_over(self, function: Callable[..., Any], args: Tuple[Any, ...]) -> bool:
        try:
            self.creates.submit(self._create, function, args)
            return True
        except RuntimeError:  # shut down: closed, or the interpreter is exiting
            with self._condition:
                self._creating -= 1
                self._condition.notify_all()
            return False

    def _create(self, function: Callable[..., Any], args: Tuple[Any, ...]) -> None:
        _logged(function, args)
        with self._condition:
            if not self._backlog:
                self._creating -= 1
                self._condition.notify_all()
                return
            function, args = self._backlog.popleft()
        self._hand_over(function, args)  # refused at exit: the rest of the backlog is dropped

    def shutdown(self) -> None:
        """Let the backlog and queued tasks run, then join the threads (not the calling one, if ours)."""
        wait = not getattr(self._local, "ours", False)
        if wait:
            with self._condition:
                while self._creating and self._backlog:
                    self._condition.wait()
        self.creates.shutdown(wait=wait)
        self.polls.shutdown(wait=wait)


def lane_sizes(max_workers: int) -> Tuple[int, int]:
    """``(poll threads, create threads)`` for ``max_workers``: half each, at least one, at most 31 in all."""
    total = max(2, min(max_workers, MAX_THREADS - 1))
    polls = total // 2
    return polls, total - polls


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
        "cold",
        "due",
        "pushed",
        "sequence",
        "queued",
        "again",
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
    ) -> None:
        self.response_id = response_id
        self.window = window
        self.key = key
        self.future = future
        self.deadline_at = deadline_at
        self.bounded_by_default = bounded_by_default
        self.read_timeout = read_timeout
        self.transform: Callable[[Response], Any] = _identity
        self.started = 0.0  # the clock when the watch began (the create was accepted)
        self.phase = 0.0  # in [0, 1), drawn once: spreads a burst's polls
        self.last_running = 0.0  # elapsed at the last poll that saw it running (0: none yet)
        self.failures = 0
        self.learn = True
        self.polled = False  # whether any poll was sent yet: the first point is special
        self.cold = True  # on its first (prior) schedule; see _next_due
        self.due = 0.0  # the clock time its next poll was planned for
        self.pushed = False  # a completion webhook signals it: the sparse safety schedule
        self.sequence = -1  # its live heap entry's sequence (other entries of it are stale)
        self.queued = False  # whether it has a live heap entry
        self.again = False  # nudged while a poll was in flight: poll again at once


def _identity(response: Response) -> Any:
    return response


def _settle_with(future: Future, function: Callable[..., Any], args: Tuple[Any, ...]) -> None:
    """Run ``function(*args)`` for ``future`` (public Future API only); skip it if cancelled first."""
    if not future.set_running_or_notify_cancel():
        return
    try:
        result = function(*args)
    except BaseException as exc:
        future.set_exception(exc)
    else:
        future.set_result(result)


def _logged(function: Callable[..., Any], args: Tuple[Any, ...]) -> None:
    try:
        function(*args)
    except BaseException:  # the task settles its own future; this only keeps it from vanishing
        _logger.exception("a poller task failed")


def _cancel_quietly(cancel: Callable[[str], Any], response_id: str) -> None:
    try:
        cancel(response_id)
    except SailError as exc:
        _logger.warning("cancelling %s on the server failed: %s", response_id, type(exc).__name__)


def _settle(future: Future, transform: Callable[[Response], Any], response: Response) -> None:
    """Settle ``future`` with ``transform(response)`` or the exception it raises."""
    try:
        result = transform(response)
    except BaseException as exc:  # the transform's typed error is the result
        _fail(future, exc)
        return
    if future.done():
        return  # cancelled meanwhile: the result is dropped by the caller's choice
    try:
        future.set_result(result)
    except _invalid_state():
        pass  # cancelled between the check and the set


def _fail(future: Future, error: BaseException) -> None:
    if future.done():
        return
    try:
        future.set_exception(error)
    except _invalid_state():
        pass  # cancelled meanwhile


def _deadline_error(
    policy: PollPolicy,
    watch: _Watch,
    cause: Optional[BaseException],
    status: Optional[str] = None,
) -> DeadlineExceededError:
    rid = watch.response_id
    if watch.bounded_by_default:
        bound = policy.wait_bound(watch.window)
        why = (
            f"the default wait bound ({bound:g} s for the {watch.window or 'default'} window) "
            f"passed while waiting for response {rid}"
        )
        how = "; pass deadline= or PollPolicy(max_wait=...) to wait longer"
    else:
        why, how = f"deadline passed while waiting for response {rid}", ""
    last = f" (last status {status})" if status else ""
    error = DeadlineExceededError(
        f"{why}{last}; it continues on the server: wait on it again or cancel it{how}",
        response_id=rid,
    )
    error.__cause__ = cause
    return error


def _closed_error(response_id: str) -> ClientClosedError:
    return ClientClosedError(
        f"the client closed while waiting for response {response_id}; it continues on the "
        f"server: resume with client.responses.wait({response_id!r}) on a new client",
        response_id=response_id,
    )


def _invalid_state() -> type:
    """``concurrent.futures.InvalidStateError`` (set_* on a cancelled future), imported when first needed."""
    from concurrent.futures import InvalidStateError

    return InvalidStateError


def _metadata_window(response: Response) -> Optional[str]:
    metadata = response.metadata
    window = metadata.get("completion_window") if isinstance(metadata, dict) else None
    return window if isinstance(window, str) and window else None
