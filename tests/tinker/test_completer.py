"""SailTokenCompleter against the emulator with the real tinker types."""

from __future__ import annotations

import asyncio
import json
import os
import pickle
import threading
import time

import pytest

tinker = pytest.importorskip("tinker")
pytest.importorskip("tinker_cookbook")

from tinker_cookbook.completers import TokenCompleter, TokensWithLogprobs  # noqa: E402

from sail_lite import (
    ConfigurationError,
    DeadlineExceededError,
    InvalidRequestError,
    ResponseFailedError,
    SailTokenCompleter,
)
from sail_lite.adapters import make_adapter
from sail_lite.emulator import EmulatorServer

from ..conftest import make_client, response_for
from .conftest import wait_for

MODEL = "moonshotai/Kimi-K2.6"
PROMPT = [72, 101, 108, 108, 111]
SLOW = {"asap": 0, "priority": 30, "standard": 30, "flex": 30}


def completer(client, **kwargs):
    options = dict(model=MODEL, max_tokens=16, temperature=0.0, client=client)
    options.update(kwargs)
    return SailTokenCompleter(**options)


def test_it_is_a_cookbook_token_completer_returning_tokens_with_logprobs(client, emulator):
    sampler = completer(client, temperature=1.0)
    assert isinstance(sampler, TokenCompleter)
    result = asyncio.run(sampler(tinker.ModelInput.from_ints(PROMPT), stop=[]))
    assert isinstance(result, TokensWithLogprobs)
    assert len(result.tokens) == len(result.logprobs) >= 1
    assert all(isinstance(t, int) for t in result.tokens)
    assert all(lp <= 0.0 for lp in result.logprobs)
    assert result.stop_reason in ("stop", "length")
    (record,) = emulator.state.responses.values()
    assert record.params.raw and record is response_for(emulator, PROMPT)  # the ids, verbatim


def test_sync_and_async_agree_and_accept_model_input_or_ints(client):
    sampler = completer(client)
    blocking = sampler.sample_tokens(PROMPT)
    awaited = asyncio.run(sampler(tinker.ModelInput.from_ints(PROMPT), []))
    assert blocking.tokens == awaited.tokens and blocking.logprobs == awaited.logprobs
    assert sampler.submit(tinker.ModelInput.from_ints(PROMPT)).result().tokens == blocking.tokens


def test_request_logprobs_false_gives_none(client):
    result = completer(client, request_logprobs=False).sample_tokens(PROMPT)
    assert result.maybe_logprobs is None and result.tokens


def test_per_call_max_tokens_takes_the_minimum(client):
    sampler = completer(client, max_tokens=5)
    short = sampler.sample_tokens(PROMPT, max_tokens=3)
    assert len(short.tokens) == 3 and short.stop_reason == "length"
    capped = asyncio.run(sampler(tinker.ModelInput.from_ints(PROMPT), [], max_tokens=100))
    assert len(capped.tokens) == 5 and capped.stop_reason == "length"
    with pytest.raises(InvalidRequestError, match="max_tokens"):
        sampler.sample_tokens(PROMPT, max_tokens=0)


def test_stop_strings_and_stop_token_ids(client):
    sampler = completer(client, max_tokens=32)
    free = sampler.sample_tokens(PROMPT).tokens
    stop_token = free[3]
    by_id = sampler.sample_tokens(PROMPT, [stop_token])
    assert by_id.stop_reason == "stop" and by_id.tokens[-1] == stop_token
    assert by_id.tokens == free[: free.index(stop_token) + 1]
    stop_text = bytes([free[2]]).decode()
    by_text = sampler.sample_tokens(PROMPT, stop_text)
    assert by_text.stop_reason == "stop" and len(by_text.tokens) < len(free)
    assert sampler.sample_tokens(PROMPT, [stop_text]).tokens == by_text.tokens


@pytest.mark.parametrize(
    "kwargs, words",
    [
        (
            dict(
                lora="funnier-v1", tinker_lora_signed_url="https://x/a.tar?sig=1", adapter_config={}
            ),
            "not both",
        ),
        (dict(tinker_lora_signed_url="https://x/a.tar?sig=1"), "adapter_config"),
        (dict(lora="funnier-v1", completion_window="asap"), "asap"),
        (
            dict(
                tinker_lora_signed_url="https://x/a.tar?s=1",
                adapter_config={"r": 8},
                completion_window="asap",
            ),
            "asap",
        ),
        (dict(model=""), "model"),
        (dict(max_tokens=0), "max_tokens"),
        (dict(max_tokens=-3), "max_tokens"),
        (
            dict(tinker_lora_signed_url="https://x/a.tar?sig=1", adapter_config="{not json"),
            "not valid JSON",
        ),
        (dict(completion_window="soon"), "completion_window"),
        (dict(temperature=3.0), "temperature"),
        (dict(timeout=0), "timeout"),
    ],
)
def test_bad_options_are_refused_at_construction(client, kwargs, words):
    with pytest.raises(InvalidRequestError, match=words):
        completer(client, **kwargs)


@pytest.mark.parametrize(
    "prompt, words",
    [
        ([], "empty"),
        (tinker.ModelInput.empty(), "empty"),
        ([1, -2, 3], "position 1"),
        ([1, 2.5], "position 1"),
        ([True], "position 0"),
        ("2+2=", "not text"),
    ],
)
def test_bad_prompts_are_refused_before_any_request(client, emulator, prompt, words):
    sampler = completer(client)
    with pytest.raises(InvalidRequestError, match=words):
        sampler.sample_tokens(prompt)
    with pytest.raises(InvalidRequestError, match=words):
        asyncio.run(sampler(prompt, []))
    assert emulator.stats()["inference_runs"] == 0


def test_bad_stop_is_refused(client):
    with pytest.raises(InvalidRequestError, match="stop"):
        completer(client).sample_tokens(PROMPT, ["a", 3])


def test_cancelling_the_await_cancels_the_response_on_the_server():
    with EmulatorServer(turn_times=SLOW) as server, make_client(server) as client:
        sampler = completer(client)

        async def turn():
            await asyncio.wait_for(sampler(tinker.ModelInput.from_ints(PROMPT), []), timeout=0.5)

        with pytest.raises(asyncio.TimeoutError):
            asyncio.run(turn())
        wait_for(lambda: server.stats()["cancellations"] == 1)
        stats = server.stats()
        assert stats["cancellations"] == 1 and stats["responses"] == {"cancelled": 1}


def test_the_poll_deadline_raises_with_the_response_id():
    with EmulatorServer(turn_times=SLOW) as server, make_client(server) as client:
        with pytest.raises(DeadlineExceededError) as info:
            completer(client, deadline=0.3).sample_tokens(PROMPT)
        assert info.value.response_id and info.value.response_id.startswith("resp_")


def test_map_yields_in_order_with_bounded_concurrency(client, emulator):
    sampler = completer(client, max_tokens=4)
    prompts = [[i + 1, 7] for i in range(10)]
    seen = []
    results = sampler.map(
        prompts, max_in_flight=3, progress=lambda p: seen.append((p.done, p.total))
    )
    first = next(results)
    running = emulator.stats()["responses"]
    assert (
        running.get("queued", 0) + running.get("in_progress", 0) <= 3
    )  # never more than max_in_flight at once
    rest = list(results)
    # Compared by content: with tinker-cookbook 0.6 each result also carries its own response id.
    assert [(r.tokens, r.logprobs) for r in [first] + rest] == [
        (r.tokens, r.logprobs) for r in (sampler.sample_tokens(p) for p in prompts)
    ]
    assert seen[-1] == (10, 10) and all(done <= total == 10 for done, total in seen)


def test_map_raises_a_bad_prompt_in_its_place(client, emulator):
    sampler = completer(client, max_tokens=4)
    out = []
    with pytest.raises(InvalidRequestError, match="empty"):
        for result in sampler.map(iter([[1], [2], [], [3]]), max_in_flight=4):
            out.append(result)
    assert len(out) == 2  # the results before the bad prompt were delivered


def test_a_failure_in_map_cancels_the_samples_still_in_flight():
    with EmulatorServer(turn_times=SLOW) as server, make_client(server) as client:
        sampler = completer(client)
        cancelled_elsewhere = []

        def cancel_the_first():
            # Someone else cancels the first prompt's response: map raises it in first place.
            wait_for(lambda: sum(server.stats()["responses"].values()) == 3)
            first = response_for(server, (1,))
            client.responses.cancel(first.id)
            cancelled_elsewhere.append(first.id)

        canceller = threading.Thread(target=cancel_the_first)
        canceller.start()
        with pytest.raises(ResponseFailedError) as info:
            list(sampler.map([[1], [2], [3]], max_in_flight=3))
        canceller.join()
        assert info.value.response_id == cancelled_elsewhere[0]
        wait_for(
            lambda: server.stats()["cancellations"] == 3
        )  # that one, then the two map cancelled
        assert server.stats()["responses"] == {"cancelled": 3}


class ManualClock:
    def __init__(self):
        self.now = 1_000_000.0

    def __call__(self):
        return self.now


def test_stopping_a_map_early_cancels_what_is_in_flight():
    clock = ManualClock()
    with EmulatorServer(turn_times=SLOW, clock=clock) as server, make_client(server) as client:
        sampler = completer(client, max_tokens=4)

        def prompts():
            yield [1]
            wait_for(lambda: sum(server.stats()["responses"].values()) == 1)
            clock.now += 29  # the second prompt starts 29 s after the first, so it ends 29 s later
            yield [2]
            clock.now += 2  # now the first is done and the second has 28 s to go

        stream = sampler.map(
            prompts(), max_in_flight=3
        )  # so map asks for a third prompt (and the clock moves)
        assert next(stream).tokens
        assert server.stats()["responses"] == {"completed": 1, "queued": 1}
        stream.close()
        wait_for(lambda: server.stats()["cancellations"] == 1)
        assert server.stats()["responses"] == {"completed": 1, "cancelled": 1}


def test_pickles_as_configuration_and_works_after(client, emulator):
    sampler = completer(client)
    clone = pickle.loads(pickle.dumps(sampler))
    assert clone.options == sampler.options and clone.client is not client
    assert clone.sample_tokens(PROMPT).tokens == sampler.sample_tokens(PROMPT).tokens
    clone.client.close()


def test_without_a_client_it_reads_the_environment(emulator, monkeypatch):
    monkeypatch.setenv("SAIL_API_KEY", emulator.api_key)
    monkeypatch.setenv("SAIL_BASE_URL", emulator.base_url)
    with SailTokenCompleter(model=MODEL, max_tokens=4) as sampler:
        assert len(sampler.sample_tokens(PROMPT).tokens) >= 1
    monkeypatch.delenv("SAIL_API_KEY")
    with pytest.raises(ConfigurationError, match="SAIL_API_KEY"):
        SailTokenCompleter(model=MODEL, max_tokens=4)


def test_an_uploaded_lora_changes_greedy_samples(client, tmp_path):
    client.loras.upload(make_adapter(tmp_path / "a"), name="funnier-v1", supported_models=[MODEL])
    base = completer(client).sample_tokens(PROMPT).tokens
    tuned = completer(client, lora="funnier-v1").sample_tokens(PROMPT).tokens
    assert tuned != base


def test_tinker_checkpoint_end_to_end_and_an_expired_url(client, emulator, tmp_path):
    folder_a = make_adapter(tmp_path / "a", seed=1)
    folder_b = make_adapter(tmp_path / "b", seed=2)
    with open(os.path.join(folder_a, "adapter_config.json")) as handle:
        config = json.load(handle)
    url_a = emulator.publish_tinker_checkpoint(folder_a, ttl_seconds=60)
    url_b = emulator.publish_tinker_checkpoint(folder_b, ttl_seconds=60)
    base = completer(client).sample_tokens(PROMPT).tokens
    step_a = completer(
        client, tinker_lora_signed_url=url_a, adapter_config=config, tinker_lora_name="rl-step-1"
    )
    step_b = completer(client, tinker_lora_signed_url=url_b, adapter_config=json.dumps(config))
    tokens_a = asyncio.run(step_a(tinker.ModelInput.from_ints(PROMPT), [])).tokens
    assert tokens_a != base
    assert step_b.sample_tokens(PROMPT).tokens not in (base, tokens_a)
    assert "sig=" not in repr(step_a) and "<redacted>" in repr(step_a)

    expired = emulator.publish_tinker_checkpoint(folder_a, ttl_seconds=0.05)
    time.sleep(0.2)
    with pytest.raises(ResponseFailedError) as info:
        completer(client, tinker_lora_signed_url=expired, adapter_config=config).sample_tokens(
            PROMPT
        )
    message = str(info.value)
    assert "expired" in message and "upload_external_weights" in message
    assert "sig=" not in message
    assert info.value.response_id


@pytest.mark.parametrize(
    "status, error, hinted",
    [
        ("failed", {"code": "checkpoint_url_expired", "message": "the signed URL expired"}, True),
        ("failed", {"code": "lora_load_failed", "message": "bad adapter"}, False),
        ("expired", None, False),  # the response expired in its queue: not the URL's fault
    ],
)
def test_a_server_that_only_says_expired_gets_the_re_resolve_hint(client, status, error, hinted):
    from sail_lite import Response

    sampler = completer(
        client, tinker_lora_signed_url="https://x/a.tar?sig=1", adapter_config={"r": 8}
    )
    response = Response.from_dict(
        {"id": "resp_1", "object": "response", "status": status, "error": error, "output": []}
    )
    with pytest.raises(ResponseFailedError) as info:
        sampler._to_result(response)
    assert ("upload_external_weights" in str(info.value)) is hinted
    assert info.value.response_id == "resp_1"


def test_tinker_text_requests_with_checkpoint_metadata_use_the_base_model(
    client, emulator, tmp_path
):
    folder = make_adapter(tmp_path / "a", seed=1)
    url = emulator.publish_tinker_checkpoint(folder, ttl_seconds=60)
    plain = client.responses.create(
        model=MODEL, input="Hi", max_output_tokens=8, temperature=0, completion_window="balanced"
    )
    tagged = client.responses.create(
        model=MODEL,
        input="Hi",
        max_output_tokens=8,
        temperature=0,
        completion_window="balanced",
        metadata={"lora": url, "tinker_adapter_config": "{}"},
    )
    assert plain.output_text == tagged.output_text


def test_real_tinker_without_the_archive_method_gets_a_clear_error():
    from importlib.metadata import version

    from tinker.lib.public_interfaces.rest_client import RestClient

    from sail_lite import get_tinker_checkpoint_signed_url

    if hasattr(RestClient, "get_checkpoint_archive_url_from_tinker_path"):
        pytest.skip("this tinker still has get_checkpoint_archive_url_from_tinker_path")

    class Service:
        def create_rest_client(self):
            return object.__new__(RestClient)

    with pytest.raises(ConfigurationError) as info:
        get_tinker_checkpoint_signed_url(
            Service(), "tinker://run/sampler_weights/1", ttl_seconds=3600
        )
    assert "tinker {}".format(version("tinker")) in str(info.value)
    assert "save_weights_external" in str(info.value) and "upload_external_weights" in str(
        info.value
    )


def test_map_with_a_journal_resumes_without_paying_twice(client, emulator, tmp_path):
    from sail_lite import Journal

    sampler = completer(client, max_tokens=4)
    prompts = [[1, 2], [3], [1, 2]]
    with Journal(str(tmp_path / "rollouts.db")) as journal:
        first = list(sampler.map(prompts, journal=journal, job="step-7"))
    with Journal(str(tmp_path / "rollouts.db")) as journal:
        again = list(sampler.map(prompts, journal=journal, job="step-7"))
    assert [r.tokens for r in again] == [r.tokens for r in first] and len(first) == 3
    assert all(isinstance(r, TokensWithLogprobs) for r in again)
    assert (
        emulator.stats()["inference_runs"] == 3
    )  # the repeated prompt is its own sample; the re-run is free
