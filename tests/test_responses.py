"""Responses, raw-token sampling and the poller, over loopback against the emulator."""

from __future__ import annotations

import math
import threading
import time

import pytest

from sail_lite import SampledTokens
from sail_lite.errors import (
    ClientClosedError,
    DeadlineExceededError,
    InvalidRequestError,
    ResponseCancelledError,
    ResponseFailedError,
)

from .conftest import make_client

MODEL = "moonshotai/Kimi-K2.6"
PROMPT = [72, 101, 108, 108, 111, 1000000, 7]


def sample(client, prompt=PROMPT, **kwargs):
    options = dict(model=MODEL, max_tokens=24)
    options.update(kwargs)
    return client.tokens.sample(prompt, **options)


def test_sync_create_returns_the_finished_response(client):
    response = client.responses.create(model=MODEL, input="Say something", max_output_tokens=16)
    assert response.status == "completed" and response.output_text
    assert (
        response.usage.output_tokens == len(response.output_text.encode("utf-8"))
        or response.usage.output_tokens > 0
    )


def test_background_create_then_wait(client):
    created = client.responses.create(
        model=MODEL, input="hello", background=True, completion_window="balanced"
    )
    assert created.status in ("queued", "in_progress")
    done = client.responses.wait(created.id)
    assert done.id == created.id and done.status == "completed" and done.output_text


def test_submit_resolves_to_the_terminal_response(client):
    future = client.responses.submit(model=MODEL, input="hello", completion_window="standard")
    response = future.result(timeout=10)
    assert (
        response.status == "completed" and response.metadata.get("completion_window") == "standard"
    )


def test_raw_token_sampling_returns_tokens_logprobs_usage(client):
    result = sample(client, temperature=0.0)
    assert isinstance(result, SampledTokens)
    assert result.tokens and all(isinstance(t, int) for t in result.tokens)
    assert len(result.logprobs) == len(result.tokens)
    assert all(lp <= 0.0 and math.isfinite(lp) for lp in result.logprobs)
    assert result.stop_reason in ("stop", "length")
    assert result.usage.input_tokens == len(PROMPT)
    assert result.usage.output_tokens == len(result.tokens)
    assert result.response_id.startswith("resp_")
    assert sample(client, temperature=0.0).tokens == result.tokens  # greedy is deterministic


def test_length_stop_reason_and_per_call_cap(client):
    result = client.tokens.sample(PROMPT, model=MODEL, max_tokens=5, temperature=0.0, stop=None)
    assert len(result.tokens) <= 5
    if len(result.tokens) == 5:
        assert result.stop_reason == "length"


def test_stop_token_id_ends_generation_and_is_last(client):
    base = sample(client, temperature=0.0, max_tokens=32)
    stop_id = base.tokens[3]
    result = sample(client, temperature=0.0, max_tokens=32, stop=[stop_id])
    assert result.stop_reason == "stop"
    assert result.tokens[-1] == stop_id
    assert result.tokens == base.tokens[: base.tokens.index(stop_id) + 1]


def test_stop_string(client):
    base = sample(client, temperature=0.0, max_tokens=32)
    text = bytes(t for t in base.tokens if t < 256).decode("latin-1")
    needle = text[4:6]
    result = sample(client, temperature=0.0, max_tokens=32, stop=needle)
    assert result.stop_reason == "stop"
    assert needle in bytes(t for t in result.tokens if t < 256).decode("latin-1")


def test_logprobs_can_be_left_out(client):
    assert sample(client, logprobs=False).logprobs is None


def test_sampling_rejects_bad_prompts_before_any_request(client, emulator):
    for prompt in ([], [1, -1], [1, "2"], "text"):
        with pytest.raises(InvalidRequestError):
            sample(client, prompt=prompt)
    assert emulator.stats()["inference_runs"] == 0


def test_cancelling_a_future_cancels_on_the_server():
    from sail_lite.emulator import EmulatorServer

    with EmulatorServer(turn_times={"standard": 5.0, "flex": 5.0}) as server:
        with make_client(server) as client:
            future = client.tokens.submit(PROMPT, model=MODEL, max_tokens=8)
            deadline = time.monotonic() + 5
            while server.stats()["inference_runs"] == 0 and time.monotonic() < deadline:
                time.sleep(0.01)
            assert future.cancel()
            deadline = time.monotonic() + 5
            while server.stats()["cancellations"] == 0 and time.monotonic() < deadline:
                time.sleep(0.01)
            assert server.stats()["cancellations"] == 1
            assert server.stats()["responses"].get("cancelled") == 1


def test_wait_deadline_carries_the_response_id_and_work_can_resume():
    from sail_lite.emulator import EmulatorServer

    with EmulatorServer(turn_times={"standard": 0.6, "flex": 0.6}) as server:
        with make_client(server) as client:
            created = client.responses.create(
                model=MODEL, input="x", background=True, completion_window="flex"
            )
            with pytest.raises(DeadlineExceededError) as info:
                client.responses.wait(created.id, deadline=0.1)
            assert info.value.response_id == created.id
            assert client.responses.wait(created.id, deadline=10).status == "completed"


def test_cancelled_response_raises_typed_error_with_the_response(client):
    created = client.responses.create(
        model=MODEL, input="x", background=True, completion_window="flex"
    )
    client.responses.cancel(created.id)
    with pytest.raises(ResponseCancelledError) as info:
        client.responses.wait(created.id)
    assert info.value.response.status == "cancelled" and info.value.response_id == created.id


def test_failed_response_raises_with_server_code(client, emulator, tmp_path):
    from sail_lite.adapters import make_adapter

    url = emulator.publish_tinker_checkpoint(make_adapter(tmp_path / "a"), ttl_seconds=60)
    tampered = url.replace("sig=", "sig=0")
    with pytest.raises(ResponseFailedError) as info:
        sample(
            client, tinker_lora_signed_url=tampered, adapter_config={"r": 8, "peft_type": "LORA"}
        )
    assert info.value.code and "invalid" in str(info.value).lower()
    assert "sig=" not in str(info.value)


def client_threads():
    """Live threads, leaving out the in-process emulator's connection threads."""
    return [
        t for t in threading.enumerate() if t.is_alive() and not t.name.startswith("sail-emulator")
    ]


def test_hundreds_in_flight_on_a_bounded_number_of_threads():
    from sail_lite import PollPolicy
    from sail_lite.emulator import TURN_PRESETS, EmulatorServer

    # One virtual clock for the emulator and the client: it stands still until every sample
    # is in flight (no poll is due, none can finish), however slow this machine is; then one
    # step makes every first poll due and every sample done: 2 requests per sample. (The poll
    # scheduler sleeps in real time for the virtual wait, so that wait is short: the step is
    # seen within 0.2 s.)
    class Clock:
        now = 1_000_000.0

        def __call__(self):
            return self.now

    clock = Clock()
    count = 200  # twenty times the thread bound below: one thread per sample could not pass
    policy = PollPolicy(
        initial_interval=0.2,
        multiplier=1.5,
        learn=False,
        priors={},
        default_max_interval=0.2,
        max_interval={},
    )
    with EmulatorServer(turn_times={w: 10.0 for w in TURN_PRESETS["fast"]}, clock=clock) as server:
        before = len(client_threads())
        with make_client(server, max_workers=8, poll=policy, clock=clock) as client:
            futures = [
                client.tokens.submit(
                    [1, 2, i], model=MODEL, max_tokens=2, logprobs=False, completion_window="flex"
                )
                for i in range(count)
            ]
            peak, safety = (
                len(client_threads()),
                time.monotonic() + 120,
            )  # a hang fails, it does not block CI
            while server.stats()["inference_runs"] < count:
                peak = max(peak, len(client_threads()))
                assert time.monotonic() < safety
                time.sleep(0.02)
            while (
                client._requester.poller.in_flight < count
            ):  # the last creates' watches are being set up
                assert time.monotonic() < safety
                time.sleep(0.02)
            in_flight = client._requester.poller.in_flight
            clock.now += 60.0
            while not all(f.done() for f in futures):
                peak = max(peak, len(client_threads()))
                assert time.monotonic() < safety
                time.sleep(0.02)
            results = [f.result() for f in futures]
        assert in_flight == count
        assert len({r.response_id for r in results}) == count
        assert (
            peak - before <= 8 + 2
        )  # the workers, the poll scheduler and the transport's watchdog
        assert server.stats()["inference_runs"] == count
    assert len(client_threads()) <= before


def test_close_stops_threads_and_fails_waiters_with_the_response_id():
    from sail_lite.emulator import EmulatorServer

    with EmulatorServer(turn_times={"standard": 30, "flex": 30}) as server:
        before = {t.ident for t in client_threads()}
        client = make_client(server)
        future = client.tokens.submit(PROMPT, model=MODEL, max_tokens=4)
        deadline = time.monotonic() + 5
        while client._requester.poller.in_flight == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        client.close()
        with pytest.raises(ClientClosedError) as info:
            future.result(timeout=5)
        assert info.value.response_id and info.value.response_id.startswith("resp_")
        leftover = [t for t in client_threads() if t.ident not in before]
        assert not leftover, leftover
        with pytest.raises(ClientClosedError):
            client.models.list()
        client.close()  # idempotent


def test_chat_messages_models(client, emulator):
    models = [m.id for m in client.models.list()]
    assert MODEL in models
    chat = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "hi"}], max_completion_tokens=8
    )
    assert chat.content and chat.choices[0].role == "assistant" and chat.usage.output_tokens > 0
    message = client.messages.create(
        model=MODEL, max_tokens=8, messages=[{"role": "user", "content": "hi"}], system="be brief"
    )
    assert message.text and message.stop_reason
    runs = emulator.stats()["inference_runs"]
    count = client.messages.count_tokens(
        model=MODEL, messages=[{"role": "user", "content": "hi"}], system="be brief"
    )
    assert count.input_tokens == message.usage.input_tokens  # counted as /messages bills
    assert emulator.stats()["inference_runs"] == runs  # and nothing ran


def test_lora_and_window_conveniences_land_in_metadata(client):
    response = client.responses.create(
        model=MODEL,
        input="x",
        background=True,
        completion_window="balanced",
        metadata={"trace": {"a": 1}},
    )
    assert response.metadata["completion_window"] in ("balanced", "standard")
    assert response.metadata["trace"] == '{"a":1}'
    with pytest.raises(InvalidRequestError, match="asap"):
        client.chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": "x"}],
            lora="funny",
            completion_window="asap",
        )
    with pytest.raises(Exception) as info:  # no such LoRA on the server
        client.chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": "x"}],
            lora="no-such-lora",
            completion_window="balanced",
        )
    assert info.value.status in (400, 404) and "no-such-lora" in str(info.value)


def test_batches(client):
    items = [
        {
            "custom_id": f"q-{i}",
            "params": {"model": MODEL, "input": f"hi {i}", "max_output_tokens": 4},
        }
        for i in range(3)
    ]
    batch = client.batches.create(items, label="smoke")
    assert batch.id
    done = client.batches.wait(batch.id, deadline=10)
    assert set(done.request_status) == {"q-0", "q-1", "q-2"}
    result = client.batches.result(batch.id, "q-1")
    assert result.status == "completed" and result.output_text
    assert batch.id in [b.id for b in client.batches.list(limit=10)]
    with pytest.raises(InvalidRequestError, match="asap"):
        client.batches.create(items, completion_window="asap")
    with pytest.warns(DeprecationWarning, match="retired"):  # seed-era code keeps working
        assert client.batches.create(items, completion_window="priority").id
    with pytest.raises(InvalidRequestError, match="twice"):
        client.batches.create(items + items[:1])
    with pytest.raises(InvalidRequestError, match="custom_id"):
        client.batches.create([{"custom_id": "Bad ID", "params": {"model": MODEL}}])
