"""The poller's schedule, learning, lanes, wait bound and failure handling, with injected clocks (no wall-clock windows)."""

from __future__ import annotations

import math
import random
import threading
from concurrent.futures import Future

import pytest

from sail_lite import PollPolicy
from sail_lite.errors import (
    APIConnectionError,
    APIStatusError,
    ConfigurationError,
    DeadlineExceededError,
)
from sail_lite.polling import Knowledge, Poller, Region, lane_sizes
from sail_lite.types import Response

MODEL = "moonshotai/Kimi-K2.6"


# --- PollPolicy: typed errors naming the field --------------------------------------------------------------


@pytest.mark.parametrize(
    "field,value",
    [
        ("initial_interval", 0),
        ("initial_interval", -1.0),
        ("initial_interval", math.nan),
        ("initial_interval", math.inf),
        ("initial_interval", "0.1"),
        ("initial_interval", True),
        ("multiplier", 0.5),
        ("multiplier", math.nan),
        ("multiplier", None),
        ("max_interval", {"flex": -1}),
        ("max_interval", {"flex": math.inf}),
        ("max_interval", [1, 2]),
        ("max_interval", {3: 1.0}),
        ("default_max_interval", 0),
        ("default_max_interval", math.nan),
        ("jitter", -0.1),
        ("jitter", 1.0),
        ("jitter", math.nan),
        ("max_consecutive_failures", 0),
        ("max_consecutive_failures", 1.5),
        ("max_consecutive_failures", True),
        ("target_delay", 0),
        ("target_delay", 2.0),
        ("prior_delay", -0.1),
        ("approach", 1.0),
        ("approach", math.inf),
        ("min_interval", -0.01),
        ("min_interval", math.nan),
        ("margin", 1.0),
        ("margin", -0.1),
        ("history", 0),
        ("history", 2.5),
        ("learn", "yes"),
        ("priors", {"flex": (10.0, 1.0)}),
        ("priors", {"flex": (-1.0, 1.0)}),
        ("priors", {"flex": 5.0}),
        ("priors", {"flex": (1.0, math.inf)}),
        ("priors", "balanced"),
        ("max_wait", {"flex": 0}),
        ("max_wait", {"flex": math.nan}),
        ("max_wait", {"flex": math.inf}),
        ("default_max_wait", -5),
        ("default_max_wait", math.inf),
    ],
)
def test_bad_poll_policy_fields_raise_configuration_error_naming_the_field(field, value):
    with pytest.raises(ConfigurationError) as info:
        PollPolicy(**{field: value})
    assert field in str(info.value)


def test_default_policy_is_valid_and_documents_the_wait_bounds():
    policy = PollPolicy()
    assert policy.wait_bound("asap") == 600 and policy.wait_bound("balanced") == 1800
    assert policy.wait_bound("standard") == 1800 and policy.wait_bound("flex") == 86400
    assert policy.wait_bound(None) == 1800  # the server's default window is balanced
    assert policy.wait_bound("something-new") == 3600
    assert PollPolicy(max_wait={"flex": 5.0}).wait_bound("flex") == 5.0
    for number in ("600", "1,800", "86,400", "3,600", "1,200"):
        assert number in PollPolicy.__doc__


# --- the schedule (pure arithmetic) -------------------------------------------------------------------------


def polls_until(policy, turn, window, region, phase=0.5, frontier=0.0, limit=500):
    """Poll points up to and including the first at or after ``turn``."""
    points, elapsed = [], 0.0
    while not points or points[-1] < turn:
        elapsed = policy.next_poll(elapsed, window, region, phase, frontier)
        points.append(elapsed)
        assert len(points) < limit
    return points


def test_nothing_known_is_geometric_from_the_initial_interval():
    policy = PollPolicy(initial_interval=0.25, multiplier=2.0, default_max_interval=100.0)
    points = polls_until(policy, 3.0, "unknown-window", None, phase=0.5)
    assert points == pytest.approx([0.25, 0.5, 1.0, 2.0, 4.0])


def test_gaps_never_exceed_the_window_cap_nor_fall_under_min_interval():
    policy = PollPolicy(max_interval={"flex": 2.0}, min_interval=0.05)
    for region in (None, Region(10.0, 40.0, 0.25, False), Region(19.0, 21.0, 0.08, True)):
        points = [0.0] + polls_until(policy, 60.0, "flex", region)
        gaps = [b - a for a, b in zip(points, points[1:])]
        assert max(gaps) <= 2.0 + 1e-9 and min(gaps) >= 0.05 - 1e-9


@pytest.mark.parametrize("turn", [0.05, 0.2, 1.0, 5.0, 20.0, 60.0, 600.0])
def test_a_learned_region_sees_a_result_within_ten_percent_of_its_turn_on_few_polls(turn):
    policy = PollPolicy(max_interval={"balanced": 1e6})
    region = Region(turn * 0.85, turn * 1.1, policy.target_delay, True)
    for phase in (0.0, 0.3, 0.99):
        for completes in (turn * 0.9, turn, turn * 1.05):
            points = polls_until(policy, completes, "balanced", region, phase)
            assert points[-1] - completes <= max(0.1 * completes, policy.min_interval) + 1e-9
            assert len(points) <= 6, points


def test_the_phase_shifts_the_schedule_and_does_not_accumulate():
    policy = PollPolicy(max_interval={"balanced": 1e6})
    region = Region(17.0, 23.0, 0.08, True)
    early = polls_until(policy, 23.0, "balanced", region, phase=0.0)
    late = polls_until(policy, 23.0, "balanced", region, phase=0.9)
    assert early != late
    # inside the region, each gap is the same fraction of elapsed whatever the phase: no drift
    for points in (early, late):
        inside = [p for p in points if p >= 17.0 * (1 - 0.08)]
        assert all(b / a == pytest.approx(1.08) for a, b in zip(inside, inside[1:]))
    # and the two schedules' offsets stay within one gap of each other
    assert abs(early[-1] - late[-1]) <= 0.08 * 23.0 + 1e-9


def test_cold_schedule_approaches_the_prior_then_polls_it_coarsely():
    policy = PollPolicy(initial_interval=0.1, multiplier=1.5, max_interval={"balanced": 1e6})
    prior = Region(*policy.prior("balanced"), policy.prior_delay, False)
    points = polls_until(policy, 100.0, "balanced", prior)
    assert 0.1 * 1.5**0.5 <= points[0] < 0.1 * 1.5**1.5
    entry = 30.0 * (1 - 0.25 * 0.5)
    assert entry in points  # the grid lands on the region's start: no point squeezed in before it
    before = [p for p in points if p <= entry]
    assert all(b / a == pytest.approx(1.5) for a, b in zip(before, before[1:]))
    inside = [p for p in points if p >= 30.0]
    assert all(b / a == pytest.approx(1.25) for a, b in zip(inside, inside[1:]))
    assert len(points) < 25


PHASES = [i / 50 for i in range(50)]


@pytest.mark.parametrize("window", ["asap", "balanced", "flex"])
@pytest.mark.parametrize("turn", [0.2, 0.5, 1.0, 2.0, 5.0, 12.0, 20.0, 30.0])
def test_a_cold_schedule_stays_within_one_plus_log_1_5_of_turn_over_0_1_s(turn, window):
    # Issue 22: polls per sample when cold <= 1 + log1.5(turn / 0.1 s), on average over a burst's
    # phases; no single sample more than half a poll over.
    policy = PollPolicy()
    bound = 1 + math.log(turn / 0.1, 1.5)
    counts = []
    for phase in PHASES:
        prior = Region(*policy.prior(window), policy.prior_delay, False)
        if turn > prior.low * (1 - prior.eps):
            continue  # inside the prior's region polls are denser (see the prior test)
        counts.append(len(polls_until(policy, turn, window, prior, phase)))
    if counts:
        assert sum(counts) / len(counts) <= bound, (counts, bound)
        assert max(counts) <= bound + 0.5, (counts, bound)


@pytest.mark.parametrize(
    "elapsed,frontier,expected",
    [
        # the grid laid back from entry = 30 x (1 - 0.25 x 0.5) = 26.25 by x1.5: first in [0.122, 0.184)
        (0.0, 0.0, 26.25 / 1.5**13),
        (26.25 / 1.5**13, 0.0, 26.25 / 1.5**12),
        (1.0, 0.0, 26.25 / 1.5**8),
        (20.0, 0.0, 26.25),  # the next grid point is the entry itself
        (0.0, 5.0, 26.25 / 1.5**4),  # probes up to the frontier are skipped
        (0.0, 1e9, 26.25),  # ... never past the region's start
        (26.25, 0.0, 26.25 * 1.25),  # inside the region: prior_delay x elapsed apart
    ],
)
def test_cold_points_are_pure_arithmetic(elapsed, frontier, expected):
    policy = PollPolicy()
    prior = Region(30.0, 300.0, 0.25, False)
    assert policy.next_poll(elapsed, "balanced", prior, 0.5, frontier) == pytest.approx(expected)


def test_a_unit_multiplier_never_loops_forever():
    policy = PollPolicy(multiplier=1.0, initial_interval=0.5)
    points = polls_until(policy, 3.0, "balanced", Region(30.0, 300.0, 0.25, False))
    assert points == pytest.approx([0.5, 1.0, 1.5, 2.0, 2.5, 3.0])


def test_frontier_skips_cold_probes_but_never_past_the_region():
    policy = PollPolicy(initial_interval=0.1, multiplier=1.5, max_interval={"balanced": 1e6})
    prior = Region(30.0, 300.0, 0.25, False)
    without = polls_until(policy, 35.0, "balanced", prior)
    skipping = polls_until(policy, 35.0, "balanced", prior, frontier=10.0)
    assert len(skipping) < len(without) and min(skipping) > 10.0
    assert polls_until(policy, 31.0, "balanced", prior, frontier=1e9)[0] <= 30.0


# --- learning ------------------------------------------------------------------------------------------------


def run_sample(policy, knowledge, key, window, turn, phase):
    """One watch as the Poller runs it, on virtual time: (delay after completion, polls)."""
    last_running, elapsed, polls = 0.0, 0.0, 0
    while True:
        elapsed = policy.next_poll(
            elapsed, window, knowledge.region(key, window), phase, knowledge.frontier(key, 0)
        )
        polls += 1
        if elapsed >= turn:
            knowledge.observe(key, last_running, elapsed)
            return elapsed - turn, polls
        last_running = elapsed
        knowledge.still_running(key, elapsed, 0)


@pytest.mark.parametrize(
    "turn,spread", [(0.05, 0.0), (1.0, 0.2), (5.0, 0.2), (30.0, 0.0), (120.0, 0.2)]
)
def test_after_a_few_completions_delay_is_within_ten_percent_on_few_polls(turn, spread):
    policy = PollPolicy(max_interval={"balanced": 1e6})
    knowledge, rng = Knowledge(policy), random.Random(7)
    key = (MODEL, "balanced")
    results = []
    for _ in range(40):
        this_turn = turn * (1 + spread * (2 * rng.random() - 1))
        delay, polls = run_sample(policy, knowledge, key, "balanced", this_turn, rng.random())
        results.append((delay / this_turn, polls))
    warm = results[5:]
    assert max(d for d, _ in warm) <= 0.1 or turn * max(d for d, _ in warm) <= 0.05
    assert sum(p for _, p in warm) / len(warm) <= (10 if spread else 6)


def test_knowledge_is_bounded_per_key_and_prefers_precise_observations():
    policy = PollPolicy(history=4)
    knowledge = Knowledge(policy)
    key = (MODEL, "flex")
    knowledge.observe(key, 0.0, 50.0)  # coarse: seen at the first poll
    assert not knowledge.region(key, "flex").learned
    for _ in range(10):
        knowledge.observe(key, 19.0, 20.0)
    assert len(knowledge) == 4
    region = knowledge.region(key, "flex")
    assert (
        region.learned
        and region.low == pytest.approx(19.0 * 0.95)
        and region.high == pytest.approx(21.0)
    )
    assert (
        knowledge.region((MODEL, "other"), "unknown") is None
    )  # nothing seen, no prior: geometric


def test_learning_can_be_switched_off():
    knowledge = Knowledge(PollPolicy(learn=False))
    knowledge.observe((MODEL, "flex"), 19.0, 20.0)
    assert len(knowledge) == 0


# --- the Poller, threads and all, on an injected clock ------------------------------------------------------


class FakeClock:
    """Virtual seconds: a fetch moves time forward, so nothing waits for real."""

    def __init__(self):
        self.now = 1000.0
        self.lock = threading.Lock()

    def __call__(self):
        with self.lock:
            return self.now

    def advance(self, seconds):
        with self.lock:
            self.now += seconds


def drive(poller, clock, future, limit=100000):
    """Step virtual time to each due poll until ``future`` is done (waking the scheduler each time)."""
    for _ in range(limit):
        if future.done():
            return
        due = poller.next_due()
        if due is not None and due > clock():
            clock.advance(due - clock())
            poller.wake()
        threading.Event().wait(0.0005)
    raise AssertionError("the future never settled")


def response(status, response_id="resp_1", window="balanced"):
    return Response.from_dict(
        {
            "id": response_id,
            "object": "response",
            "status": status,
            "model": MODEL,
            "metadata": {"completion_window": window},
        }
    )


def make_poller(fetch, clock, policy=None, **kwargs):
    return Poller(
        fetch,
        lambda _id: None,
        policy=policy or PollPolicy(),
        max_workers=kwargs.pop("max_workers", 2),
        clock=clock,
        rng=random.Random(0),
        **kwargs,
    )


def test_a_wait_without_deadline_ends_at_the_windows_default_bound_with_the_response_id():
    clock = FakeClock()
    calls = []

    def fetch(response_id, deadline_at, read_timeout):
        calls.append(clock())
        clock.advance(30.0)
        return response("in_progress", response_id)

    poller = make_poller(fetch, clock, PollPolicy(max_wait={"balanced": 600.0}))
    future = Future()
    started = clock()
    poller.watch(
        response("queued"), future, window="balanced", deadline_at=None, transform=lambda r: r
    )
    drive(poller, clock, future)
    with pytest.raises(DeadlineExceededError) as info:
        future.result(timeout=30)
    poller.close()
    assert info.value.response_id == "resp_1"
    assert "default wait bound" in str(info.value) and "max_wait" in str(info.value)
    assert 600.0 <= clock() - started <= 600.0 + 30.0 + 1e-6
    assert calls and max(calls) - started < 600.0


def test_an_explicit_deadline_replaces_the_default_bound():
    clock = FakeClock()

    def fetch(response_id, deadline_at, read_timeout):
        clock.advance(30.0)
        return response("in_progress", response_id)

    poller = make_poller(fetch, clock, PollPolicy(max_wait={"balanced": 10.0}))
    future = Future()
    started = clock()
    poller.watch(
        response("queued"),
        future,
        window="balanced",
        deadline_at=started + 200.0,
        transform=lambda r: r,
    )
    drive(poller, clock, future)
    with pytest.raises(DeadlineExceededError) as info:
        future.result(timeout=30)
    poller.close()
    assert clock() - started >= 200.0 and "default wait bound" not in str(info.value)


@pytest.mark.parametrize(
    "error,default_retries",
    [
        (APIStatusError("not implemented", status=501), False),
        (APIStatusError("busy", status=409, code="request_in_progress"), True),
        (APIStatusError("conflict", status=409, code="lora_name_taken"), False),
        (APIStatusError("overloaded", status=503), True),
        (APIStatusError("rate limited", status=429), True),
        (APIConnectionError("reset"), True),
    ],
)
def test_one_definition_of_transient_decides_whether_a_failed_poll_is_retried(
    error, default_retries
):
    def run(**kwargs):
        clock = FakeClock()
        replies = [error]

        def fetch(response_id, deadline_at, read_timeout):
            clock.advance(1.0)
            if replies:
                raise replies.pop()
            return response("completed", response_id)

        poller = make_poller(fetch, clock, **kwargs)
        future = Future()
        poller.watch(
            response("queued"),
            future,
            window="balanced",
            deadline_at=None,
            transform=lambda r: r.status,
        )
        drive(poller, clock, future)
        try:
            return future.result(timeout=30)
        except APIStatusError as exc:
            assert exc.response_id == "resp_1"
            return "failed"
        except APIConnectionError:
            return "failed"
        finally:
            poller.close()

    assert run() == ("completed" if default_retries else "failed")
    assert run(is_transient=lambda exc: True) == "completed"
    assert run(is_transient=lambda exc: False) == "failed"


def test_due_polls_do_not_wait_behind_queued_creates():
    clock = FakeClock()
    order = []
    release = threading.Event()
    polled = threading.Event()

    def fetch(response_id, deadline_at, read_timeout):
        order.append("poll")
        polled.set()
        return response("completed", response_id)

    poller = make_poller(fetch, clock, max_workers=1)
    blocker = poller.run(release.wait)
    creates = [poller.run(order.append, "create") for _ in range(5)]
    future = Future()
    clock.advance(0.0)
    poller.watch(
        response("queued"), future, window="balanced", deadline_at=None, transform=lambda r: r
    )
    clock.advance(10.0)  # the first poll is due
    deadline = threading.Event()
    while poller.in_flight:  # the scheduler has handed the poll to the (busy) worker's urgent lane
        deadline.wait(0.005)
    release.set()
    future.result(timeout=30)
    for create in [blocker] + creates:
        create.result(timeout=30)
    poller.close()
    assert order[0] == "poll", order


@pytest.mark.parametrize(
    "max_workers,polls,creates",
    [(1, 1, 1), (2, 1, 1), (8, 4, 4), (16, 8, 8), (17, 8, 9), (500, 15, 16)],
)
def test_lane_sizes_split_max_workers_and_stay_under_32_threads(max_workers, polls, creates):
    assert lane_sizes(max_workers) == (polls, creates)


def test_a_burst_of_blocked_creates_cannot_starve_cancels_either():
    clock = FakeClock()
    release = threading.Event()
    cancelled = threading.Event()
    poller = Poller(
        lambda *a: response("in_progress"),
        lambda response_id: cancelled.set(),
        policy=PollPolicy(),
        max_workers=2,
        clock=clock,
        rng=random.Random(0),
    )
    creates = [poller.run(release.wait) for _ in range(10)]  # the creates lane is stuck
    future = Future()
    poller.watch(
        response("queued"), future, window="balanced", deadline_at=None, transform=lambda r: r
    )
    assert future.cancel()
    assert cancelled.wait(30)  # the server-side cancel went out on the polls lane
    release.set()
    for create in creates:
        create.result(timeout=30)
    poller.close()


def test_a_first_completion_pulls_in_the_waiting_polls_of_a_cold_burst():
    # B was planned before anything was known (a geometric point far past its completion); A's
    # completion shows where completions are, and B's waiting poll moves there at once.
    clock = FakeClock()
    finish = {}

    def fetch(response_id, deadline_at, read_timeout):
        return response(
            "completed" if clock() >= finish[response_id] else "in_progress", response_id
        )

    poller = make_poller(fetch, clock, PollPolicy(max_interval={"balanced": 1e6}))
    start = clock()
    finish["resp_a"] = start + 10.0
    first = Future()
    poller.watch(
        response("queued", "resp_a"),
        first,
        window="balanced",
        deadline_at=None,
        transform=lambda r: r,
    )
    drive_until(poller, clock, start + 4.0)
    finish["resp_b"] = clock() + 10.0
    second = Future()
    poller.watch(
        response("queued", "resp_b"),
        second,
        window="balanced",
        deadline_at=None,
        transform=lambda r: r,
    )
    drive_until(poller, clock, future=second)
    seen = clock()
    assert first.done()
    poller.close()
    # Without the pull, B would wait for its geometric point (about 3.6 s late here).
    assert seen - finish["resp_b"] <= 0.1 * 10.0, seen - finish["resp_b"]


def test_a_cold_burst_keeps_its_first_schedule_and_stays_within_the_poll_bound():
    # Eight samples accepted together, turns spread +-20% around 5 s: the first completion reveals a
    # region the others are already inside; switching them to its dense polls would cost more than
    # the cold bound (issue 22: 1 + log1.5(turn / 0.1 s) per sample when cold).
    clock = FakeClock()
    finish, polls = {}, {}

    def fetch(response_id, deadline_at, read_timeout):
        polls[response_id] = polls.get(response_id, 0) + 1
        done = clock() >= finish[response_id]
        return response("completed" if done else "in_progress", response_id)

    poller = make_poller(fetch, clock)
    start, futures = clock(), []
    for n, turn in enumerate([4.0, 4.3, 4.6, 4.9, 5.1, 5.4, 5.7, 6.0]):
        finish[f"resp_{n}"] = start + turn
        futures.append(Future())
        poller.watch(
            response("queued", f"resp_{n}"),
            futures[-1],
            window="balanced",
            deadline_at=None,
            transform=lambda r: r,
        )
    for future in futures:
        drive_until(poller, clock, future=future)
    poller.close()
    bound = 1 + math.log(5.0 / 0.1, 1.5)
    assert sum(polls.values()) / len(polls) <= bound, polls


def drive_until(poller, clock, until=None, future=None):
    """Step virtual time to each due poll, one at a time (the poller idle in between), until ``until``
    or until ``future`` is done."""
    for _ in range(200000):
        if future is not None and future.done():
            return
        due = poller.next_due()
        if poller.polling or (due is not None and due <= clock()):
            threading.Event().wait(0.0005)  # a poll is on its way or running: let it finish first
            continue
        if due is None or (until is not None and due > until):
            break
        clock.advance(due - clock())
        poller.wake()
    if until is not None and clock() < until:
        clock.advance(until - clock())


def test_threads_stay_under_32_whatever_max_workers_says():
    clock = FakeClock()
    gate = threading.Event()
    poller = make_poller(lambda *a: response("completed"), clock, max_workers=500)
    futures = [poller.run(gate.wait) for _ in range(100)]
    for _ in range(40):  # and as many polls, cancels
        doomed = Future()
        poller.watch(
            response("queued"), doomed, window="flex", deadline_at=None, transform=lambda r: r
        )
        doomed.cancel()
    names = [t.name for t in threading.enumerate() if t.name.startswith("sail-lite-")]
    assert len(names) <= 32, names
    gate.set()
    for future in futures:
        future.result(timeout=30)
    poller.close()


def test_a_completion_seen_by_the_poller_teaches_it_where_to_poll_next_time():
    clock = FakeClock()
    finish = {}

    def fetch(response_id, deadline_at, read_timeout):
        now = clock()
        status = "completed" if now >= finish[response_id] else "in_progress"
        return response(status, response_id)

    poller = make_poller(fetch, clock, PollPolicy(max_interval={"balanced": 1e6}))
    # Drive virtual time by hand: step to each due poll.
    for n in range(6):
        response_id = f"resp_{n}"
        finish[response_id] = clock() + 20.0
        future = Future()
        poller.watch(
            response("queued", response_id),
            future,
            window="balanced",
            deadline_at=None,
            transform=lambda r: r,
        )
        drive(poller, clock, future)
        future.result(timeout=30)
        delay = clock() - finish[response_id]
    poller.close()
    region = poller._knowledge.region((MODEL, "balanced"), "balanced")
    assert region.learned and 15.0 <= region.low <= 20.0 <= region.high <= 25.0
    assert delay <= 2.0
