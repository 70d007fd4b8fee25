"""Idempotency-key retention: a key is replayed within the window, and is a new request after it."""

from __future__ import annotations

import io

import pytest

from sail_lite.emulator import EmulatorServer
from sail_lite.emulator.__main__ import build_parser, serve

from .conftest import MODEL, Api


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def create(api, key, text="hello"):
    reply = api(
        "POST",
        "/responses",
        json={"model": MODEL, "input": text, "background": True},
        headers={"Idempotency-Key": key},
    )
    assert reply.status_code == 202, reply.text
    return reply.json()["id"]


def test_a_key_is_replayed_within_the_window_and_runs_again_after_it():
    clock = FakeClock()
    with EmulatorServer(clock=clock, idempotency_retention=600) as server:
        api = Api(server)
        first = create(api, "k-1")
        clock.now += 599
        assert create(api, "k-1") == first  # within the window: the stored response
        # Another body under the key is still refused within the window.
        assert (
            api(
                "POST",
                "/responses",
                json={"model": MODEL, "input": "other", "background": True},
                headers={"Idempotency-Key": "k-1"},
            ).status_code
            == 400
        )
        clock.now += 1  # 600 s after the key was first used: forgotten
        second = create(api, "k-1")
        assert second != first
        assert server.stats()["inference_runs_by_idempotency_key"] == {"k-1": 2}
        # The first response itself is still there, by its id.
        assert api.ok("GET", "/responses/" + first)["id"] == first
        # The new reservation has its own window, and any body may take the forgotten key.
        clock.now += 599
        assert create(api, "k-1") == second
        api.close()


def test_the_default_window_is_24_hours():
    clock = FakeClock()
    with EmulatorServer(clock=clock) as server:
        assert server.state.idempotency_retention == 24 * 3600
        api = Api(server)
        first = create(api, "k")
        clock.now += 24 * 3600 - 1
        assert create(api, "k") == first
        clock.now += 1
        assert create(api, "k") != first
        api.close()


def test_a_bad_window_is_refused():
    for bad in (0, -1, float("nan"), True, "1h"):
        with pytest.raises(ValueError, match="idempotency_retention"):
            EmulatorServer(idempotency_retention=bad)


def test_the_command_line_option():
    args = build_parser().parse_args(["--idempotency-retention", "90", "--port", "70000"])
    assert args.idempotency_retention == 90.0
    assert build_parser().parse_args([]).idempotency_retention == 24 * 3600
    with pytest.raises(ValueError, match="--port"):
        serve(args, io.StringIO())  # the option parses; the bad port is what stops it here
    bad = build_parser().parse_args(["--idempotency-retention", "0"])
    with pytest.raises(ValueError, match="--idempotency-retention"):
        serve(bad, io.StringIO())
