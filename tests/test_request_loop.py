"""The request loop over real HTTP: retries, idempotency, Retry-After, deadlines, typed errors."""

from __future__ import annotations

import threading
import time

import pytest

from sail_lite import RetryPolicy
from sail_lite.errors import (
    APIConnectionError,
    AuthenticationError,
    BadRequestError,
    DeadlineExceededError,
    IdempotencyError,
    MalformedResponseError,
    NotFoundError,
    OverloadedError,
    RateLimitError,
    ServerError,
)

from .conftest import make_client

MODEL = "moonshotai/Kimi-K2.6"


def Fault(*args, **kwargs):
    from sail_lite.emulator import Fault as EmulatorFault

    return EmulatorFault(*args, **kwargs)


def background(client, **kwargs):
    return client.responses.create(model=MODEL, input="hello", background=True, **kwargs)


class FakeClock:
    def __init__(self):
        self.now = 1000.0
        self.sleeps = []

    def __call__(self):
        return self.now

    def sleep(self, seconds):
        self.sleeps.append(seconds)
        self.now += seconds


def test_retry_after_is_honoured_and_inference_runs_once(emulator):
    emulator.faults.add(
        Fault(
            "error",
            method="POST",
            path="/v1/responses",
            status=503,
            code="model_capacity_unavailable",
            retry_after=1,
            times=2,
        )
    )
    sleeps = []
    with make_client(emulator, sleep=sleeps.append) as client:
        response = background(client)
    assert response.status in ("queued", "in_progress", "completed")
    assert sleeps == [1.0, 1.0]
    assert emulator.stats()["inference_runs"] == 1


def test_backoff_without_retry_after_is_jittered_exponential(emulator):
    emulator.faults.add(Fault("error", method="GET", path="/v1/models", status=500, times=2))
    sleeps = []
    policy = RetryPolicy(initial_delay=0.5, multiplier=2.0, max_delay=8.0)
    with make_client(emulator, sleep=sleeps.append, retry=policy) as client:
        assert client.models.list()
    assert len(sleeps) == 2
    assert 0 <= sleeps[0] <= 0.5 and 0 <= sleeps[1] <= 1.0


def test_retry_after_beyond_the_cap_is_raised_at_once(emulator):
    emulator.faults.add(
        Fault("error", method="POST", path="/v1/responses", status=429, retry_after=3600, times=1)
    )
    sleeps = []
    with make_client(emulator, sleep=sleeps.append) as client:
        with pytest.raises(RateLimitError) as info:
            background(client)
    assert info.value.retry_after == 3600 and info.value.attempts == 1 and sleeps == []


def test_attempts_run_out_with_the_last_typed_error(emulator):
    emulator.faults.add(Fault("error", method="POST", path="/v1/responses", status=503, times=10))
    with make_client(emulator, sleep=lambda s: None) as client:
        with pytest.raises(OverloadedError) as info:
            background(client)
    assert info.value.attempts == 3 and info.value.status == 503
    assert emulator.stats()["inference_runs"] == 0


@pytest.mark.parametrize("kind", ["lose_reply", "drop", "truncate"])
def test_a_lost_or_cut_reply_is_replayed_without_running_twice(emulator, kind):
    emulator.faults.add(Fault(kind, method="POST", path="/v1/responses", times=1))
    with make_client(emulator, sleep=lambda s: None) as client:
        response = background(client)
        assert client.responses.wait(response.id).status == "completed"
    stats = emulator.stats()
    assert stats["inference_runs"] == 1
    assert stats["requests"]["POST /v1/responses"] == 2


@pytest.mark.parametrize("kind", ["drop", "truncate"])
def test_gets_are_retried_on_connection_failures(emulator, kind):
    emulator.faults.add(Fault(kind, method="GET", path="/v1/models", times=2))
    with make_client(emulator, sleep=lambda s: None) as client:
        assert [m.id for m in client.models.list()]


def test_a_proxy_html_page_becomes_a_typed_error(emulator):
    emulator.faults.add(Fault("html", method="GET", path="/v1/models", status=502, times=5))
    with make_client(emulator, sleep=lambda s: None) as client:
        with pytest.raises(ServerError) as info:
            client.models.list()
    assert info.value.status == 502 and info.value.attempts == 3
    assert "HTTP 502" in str(info.value) and "non-JSON" in str(info.value)


def test_an_html_200_is_a_malformed_response_not_a_decode_error(emulator):
    emulator.faults.add(Fault("html", method="GET", path="/v1/models", status=200, times=1))
    with make_client(emulator) as client:
        with pytest.raises(MalformedResponseError, match="not JSON"):
            client.models.list()


@pytest.mark.parametrize(
    "kwargs, error",
    [
        (dict(model="no/such-model", input="x"), BadRequestError),
        (dict(model=MODEL, input="x", extra_body={"max_output_tokens": "many"}), BadRequestError),
    ],
)
def test_client_errors_are_not_retried(emulator, kwargs, error):
    with make_client(emulator, sleep=lambda s: pytest.fail("slept")) as client:
        with pytest.raises(error) as info:
            client.responses.create(**kwargs)
    assert info.value.attempts == 1 and info.value.message


def test_wrong_key_is_401_not_retried(emulator):
    with make_client(emulator, api_key="sk_wrong", sleep=lambda s: pytest.fail("slept")) as client:
        with pytest.raises(AuthenticationError) as info:
            client.models.list()
    assert info.value.status == 401 and info.value.attempts == 1
    assert "sk_wrong" not in str(info.value)


def test_unknown_response_is_404(client):
    with pytest.raises(NotFoundError) as info:
        client.responses.retrieve("resp_nope")
    assert info.value.response_id == "resp_nope"


def test_caller_idempotency_key_replays_and_guards_the_body(client, emulator):
    first = background(client, idempotency_key="my-key-1")
    again = background(client, idempotency_key="my-key-1")
    assert again.id == first.id
    assert emulator.stats()["inference_runs"] == 1
    with pytest.raises(IdempotencyError):
        client.responses.create(
            model=MODEL, input="something else", background=True, idempotency_key="my-key-1"
        )


def test_every_post_attempt_carries_the_same_minted_key(emulator):
    emulator.faults.add(Fault("lose_reply", method="POST", path="/v1/responses", times=2))
    with make_client(emulator, sleep=lambda s: None) as client:
        background(client)
    keys = emulator.stats()["inference_runs_by_idempotency_key"]
    assert len(keys) == 1 and list(keys.values()) == [1]
    assert list(keys)[0].startswith("sail-lite-")


def test_asap_only_model_is_resent_once_without_the_key(client, emulator):
    response = client.responses.create(model="sail-emulator/asap-only", input="hi")
    assert response.status == "completed"
    assert emulator.stats()["requests"]["POST /v1/responses"] == 2


def test_deadline_bounds_attempts_and_sleeps(emulator):
    emulator.faults.add(Fault("error", method="POST", path="/v1/responses", status=503))
    clock = FakeClock()
    policy = RetryPolicy(max_retries=50, initial_delay=1.0, multiplier=1.0, max_delay=1.0)
    with make_client(emulator, retry=policy, clock=clock, sleep=clock.sleep) as client:
        with pytest.raises(DeadlineExceededError) as info:
            background(client, deadline=2.5)
    assert sum(clock.sleeps) <= 2.5
    assert info.value.status == 503 and info.value.attempts >= 2
    assert isinstance(info.value, TimeoutError)


def test_in_progress_replay_waits_and_gets_the_stored_result():
    from sail_lite.emulator import EmulatorServer

    with EmulatorServer(turn_times={"standard": 0.6, "flex": 0.6}) as server:
        first = {}

        def original():
            with make_client(server) as c:
                first["r"] = c.responses.create(
                    model=MODEL,
                    input="hi",
                    completion_window="standard",
                    idempotency_key="sync-key",
                )

        thread = threading.Thread(target=original)
        thread.start()
        time.sleep(0.2)
        sleeps = []

        def short_sleep(seconds):
            sleeps.append(seconds)
            time.sleep(min(seconds, 0.25))

        with make_client(server, sleep=short_sleep, retry=RetryPolicy(max_retries=8)) as c:
            replay = c.responses.create(
                model=MODEL, input="hi", completion_window="standard", idempotency_key="sync-key"
            )
        thread.join()
        assert 5.0 in sleeps  # Retry-After of the 409 request_in_progress
        assert replay.id == first["r"].id and replay.status == "completed"
        assert server.stats()["inference_runs"] == 1


def test_connection_refused_is_a_typed_connection_error():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    from sail_lite import Client

    with Client(
        "k", base_url=f"http://127.0.0.1:{port}/v1", environ={}, sleep=lambda s: None
    ) as client:
        with pytest.raises(APIConnectionError) as info:
            client.models.list()
    assert info.value.attempts == 3


def test_the_requester_knows_every_status_the_wire_types_know():
    # note_status knows every status the wire types know (one definition: types.TERMINAL_STATUSES).
    from sail_lite import _requester, types

    assert types.TERMINAL_STATUSES | {"queued", "in_progress"} == _requester.KNOWN_STATUSES
