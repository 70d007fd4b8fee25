"""Back-off arithmetic and Retry-After parsing: pure tables, no I/O."""

from __future__ import annotations

import email.utils
import random

import pytest
from requests.structures import CaseInsensitiveDict

from sail_lite import RetryPolicy
from sail_lite.errors import (
    APIConnectionError,
    APITimeoutError,
    ConfigurationError,
    ConflictError,
    TLSError,
    UploadNotRewindableError,
    status_error,
)
from sail_lite.retry import parse_retry_after


class FixedRandom(random.Random):
    """uniform(a, b) returns b: the ceiling of the full-jitter window."""

    def uniform(self, a, b):
        return b


@pytest.mark.parametrize(
    "retry_index, expected",
    [(0, 0.5), (1, 1.0), (2, 2.0), (3, 4.0), (4, 8.0), (5, 8.0), (60, 8.0), (10**6, 8.0)],
)
def test_backoff_ceiling_doubles_to_cap(retry_index, expected):
    assert RetryPolicy().backoff(retry_index, FixedRandom()) == expected


def test_backoff_is_full_jitter():
    rng = random.Random(7)
    samples = [RetryPolicy().backoff(2, rng) for _ in range(2000)]
    assert min(samples) >= 0 and max(samples) <= 2.0
    assert min(samples) < 0.1 and max(samples) > 1.9  # spread over the whole window


@pytest.mark.parametrize(
    "retry_after, expected",
    [(None, 0.5), (0.0, 0.0), (3.0, 3.0), (60.0, 60.0), (61.0, None)],
)
def test_delay_honours_retry_after_up_to_cap(retry_after, expected):
    assert RetryPolicy().delay(0, retry_after, FixedRandom()) == expected


def _status(status, code=None):
    return status_error(status, {"error": {"message": "x", "type": "t", "code": code}})


@pytest.mark.parametrize(
    "error, replay_safe, expected",
    [
        (APIConnectionError("reset"), True, True),
        (APITimeoutError("slow"), True, True),
        (APIConnectionError("reset"), False, False),
        (UploadNotRewindableError("gone"), True, False),
        (_status(408), True, True),
        (_status(409, "request_in_progress"), True, True),
        (_status(409), True, False),
        (_status(429), True, True),
        (_status(500), True, True),
        (_status(502), True, True),
        (_status(503, "model_capacity_unavailable"), True, True),
        (_status(504), True, True),
        (_status(529), True, True),
        (
            _status(503),
            False,
            True,
        ),  # load shedding: nothing ran, even a keyless write may go again
        (_status(429), False, True),
        (_status(500), False, False),  # the server may have acted: a keyless write is not re-sent
        (_status(501), True, False),
        (APIConnectionError("refused", request_sent=False), False, True),
        (APITimeoutError("connect", request_sent=False), False, True),
        (TLSError("bad certificate"), True, False),
        (_status(400), True, False),
        (_status(401), True, False),
        (_status(403), True, False),
        (_status(404), True, False),
        (_status(413), True, False),
        (_status(422), True, False),
    ],
)
def test_should_retry_table(error, replay_safe, expected):
    assert RetryPolicy().should_retry(error, replay_safe=replay_safe) is expected


def test_conflict_without_in_progress_code_is_a_conflict_error():
    assert isinstance(_status(409), ConflictError)


NOW = 1_700_000_000.0


@pytest.mark.parametrize(
    "headers, expected",
    [
        ({}, None),
        ({"Retry-After": "5"}, 5.0),
        ({"Retry-After": "1.5"}, 1.5),
        ({"Retry-After": " 2 "}, 2.0),
        ({"Retry-After": "-1"}, None),
        ({"Retry-After": "soon"}, None),
        ({"Retry-After": "inf"}, None),
        ({"retry-after-ms": "250"}, 0.25),
        ({"retry-after-ms": "250", "Retry-After": "9"}, 0.25),
        ({"retry-after-ms": "nan", "Retry-After": "9"}, 9.0),
        ({"Retry-After": email.utils.formatdate(NOW + 30, usegmt=True)}, 30.0),
        ({"Retry-After": email.utils.formatdate(NOW - 30, usegmt=True)}, 0.0),
    ],
)
def test_parse_retry_after(headers, expected):
    assert parse_retry_after(CaseInsensitiveDict(headers), NOW) == expected


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_retries": -1},
        {"initial_delay": -0.1},
        {"multiplier": 0.5},
        {"max_retry_after": -1},
        {"max_retries": 2.5},
        {"max_retries": True},
        {"max_retries": 10**6},
        {"initial_delay": float("nan")},
        {"max_delay": float("inf")},
        {"multiplier": "2"},
        {"retry_statuses": "500"},
        {"retry_statuses": [500.0]},
    ],
)
def test_policy_rejects_nonsense(kwargs):
    with pytest.raises(ConfigurationError) as info:
        RetryPolicy(**kwargs)
    assert "RetryPolicy." + next(iter(kwargs)) in str(info.value)
