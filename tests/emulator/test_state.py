"""State without HTTP: the idempotency protocol (wire.md) as one function, driven directly."""

from __future__ import annotations

import threading

import pytest

from sail_lite.emulator.params import ApiError
from sail_lite.emulator.state import DEFAULT_MODELS, Organization, State


@pytest.fixture
def state():
    state = State(
        seed=0,
        turn_times={},
        models=DEFAULT_MODELS,
        organizations={"o": ["k"]},
        validation_time=0.0,
    )
    yield state
    state.close()


ORG = Organization("o", ["k"])


def run(state, key, fingerprint=b"f", commit=None, **kwargs):
    calls = []

    def default_commit():
        calls.append(1)
        return f"result-{len(calls)}"

    result = state.run_idempotent(
        ORG, "k", key, "responses", fingerprint, commit or default_commit, **kwargs
    )
    return result, calls


def test_without_a_key_every_call_commits(state):
    assert run(state, None)[0] == ("result-1", 200)
    assert run(state, None, status=202)[0] == ("result-1", 202)
    assert state.idempotency == {}


def test_a_replay_returns_the_stored_result_and_status_without_committing_again(state):
    first, calls = run(state, "a", status=202)
    assert first == ("result-1", 202) and calls == [1]
    replay, calls = run(state, "a")
    assert replay == ("result-1", 202) and calls == []
    other_route = state.run_idempotent(ORG, "k", "a", "chat", b"f", lambda: "chat-result")
    assert other_route == ("chat-result", 200)  # keys are per route (and organization, and API key)


def test_the_same_key_with_another_body_is_an_idempotency_error(state):
    run(state, "a")
    with pytest.raises(ApiError) as caught:
        run(state, "a", fingerprint=b"other", key_header="anthropic-idempotency-key")
    assert caught.value.status == 400 and caught.value.code == "idempotency_error"
    assert caught.value.param == "anthropic-idempotency-key"


def test_a_commit_that_raises_gives_the_key_back(state):
    def rejected():
        raise ApiError(400, "bad request")

    with pytest.raises(ApiError):
        run(state, "a", commit=rejected)
    assert run(state, "a")[0] == ("result-1", 200)


def test_a_replay_during_settle_is_409_and_after_a_failed_settle_it_gets_the_result(state):
    settling = threading.Event()
    release = threading.Event()
    outcome = []

    def settle(result):
        settling.set()
        release.wait(10)
        raise ApiError(504, "sync timeout")

    def first():
        try:
            run(state, "a", settle=settle)
        except ApiError as exc:
            outcome.append(exc.status)

    thread = threading.Thread(target=first)
    thread.start()
    assert settling.wait(10)
    with pytest.raises(ApiError) as caught:
        run(state, "a")
    assert caught.value.status == 409 and caught.value.code == "request_in_progress"
    assert caught.value.headers == {"Retry-After": "5"}
    release.set()
    thread.join(10)
    assert outcome == [504]
    assert run(state, "a")[0] == (
        "result-1",
        200,
    )  # committed before settle failed: the key holds it
