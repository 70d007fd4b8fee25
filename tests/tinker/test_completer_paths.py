"""SailTokenCompleter's sync, async and map paths, and its settable attributes, in every test run.

With tinker-cookbook installed (the Tinker tier) these use its real types;
without it (the README's test run) the ``cookbook`` fixture puts the stand-in
of tests/tinker_standin.py under ``tinker_cookbook.completers`` for the test.
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import pickle
import warnings

import pytest

from sail_lite import InvalidRequestError, MalformedResponseError, Response, SailTokenCompleter
from sail_lite.emulator import EmulatorServer

from ..conftest import make_client, response_for
from ..tinker_standin import model_input_type
from .conftest import wait_for

MODEL = "moonshotai/Kimi-K2.6"
PROMPT = [72, 101, 108, 108, 111]
SLOW = {"asap": 0, "priority": 30, "standard": 30, "flex": 30}
URL = "https://storage.example/ckpt.tar?sig=secret&exp=1"

#: The official completer's attributes (sail 0.17.1): its constructor's arguments, stored as given.
OFFICIAL_ATTRIBUTES = (
    "model",
    "max_tokens",
    "temperature",
    "top_p",
    "completion_window",
    "lora",
    "tinker_lora_signed_url",
    "adapter_config",
    "tinker_lora_name",
    "metadata",
    "timeout",
    "poll_timeout",
    "voyage",
    "request_logprobs",
)


def completer(client, **kwargs):
    options = dict(model=MODEL, max_tokens=8, temperature=0.0, client=client)
    options.update(kwargs)
    return SailTokenCompleter(**options)


def last_request(emulator):
    return list(emulator.state.responses.values())[-1].params


# -- the three paths ---------------------------------------------------------------------------


def test_sample_tokens_blocks_for_a_cookbook_result(cookbook, client, emulator):
    result = completer(client).sample_tokens(PROMPT, stop=[])
    assert isinstance(result, cookbook.TokensWithLogprobs)
    assert len(result.tokens) == len(result.logprobs) >= 1 and result.stop_reason in (
        "stop",
        "length",
    )
    (record,) = emulator.state.responses.values()
    assert record.params.raw and record is response_for(emulator, PROMPT)
    assert result.sail_response_id == record.id
    assert getattr(result, "sequence_id", None) is None  # cookbook 0.6+: Tinker's id, not Sail's


def test_await_takes_a_model_input_and_agrees_with_the_sync_path(cookbook, client):
    sampler = completer(client)
    awaited = asyncio.run(sampler(model_input_type().from_ints(PROMPT), []))
    assert isinstance(awaited, cookbook.TokensWithLogprobs)
    assert awaited.tokens == sampler.sample_tokens(PROMPT).tokens
    assert asyncio.run(sampler(PROMPT, [], max_tokens=2)).tokens == awaited.tokens[:2]


def test_cancelling_the_await_cancels_the_response_on_the_server(cookbook):
    with EmulatorServer(turn_times=SLOW) as server, make_client(server) as client:

        async def main():
            await asyncio.wait_for(completer(client)(PROMPT, []), 0.3)

        with pytest.raises(asyncio.TimeoutError):
            asyncio.run(main())
        wait_for(lambda: server.stats()["cancellations"] == 1)
        assert server.stats()["responses"] == {"cancelled": 1}


def test_map_yields_results_in_order_one_sample_each(cookbook, client, emulator):
    prompts = [[1 + i, 2, 3] for i in range(6)]
    results = list(completer(client).map(iter(prompts), max_in_flight=3))
    assert [type(r) for r in results] == [cookbook.TokensWithLogprobs] * 6
    assert [r.sail_response_id for r in results] == [response_for(emulator, p).id for p in prompts]
    assert emulator.stats()["inference_runs"] == 6


def test_a_bare_int_stop_is_a_one_token_stop(cookbook, client):
    sampler = completer(client, max_tokens=32)
    free = sampler.sample_tokens(PROMPT).tokens
    stopped = sampler.sample_tokens(PROMPT, free[3])
    assert stopped.stop_reason == "stop" and stopped.tokens == free[: free.index(free[3]) + 1]


# -- the official completer's attributes: plain, settable, used by the next request -----------


def official_attributes():
    try:
        sdk = importlib.import_module("sail.tinker")
    except ImportError:
        return OFFICIAL_ATTRIBUTES
    names = tuple(inspect.signature(sdk.SailTokenCompleter.__init__).parameters)[1:]
    assert set(names) >= set(OFFICIAL_ATTRIBUTES)
    return names


@pytest.mark.parametrize(
    "name, value",
    [
        ("model", "moonshotai/Kimi-K2.6"),
        ("max_tokens", 3),
        ("temperature", 0.5),
        ("top_p", 0.25),
        ("completion_window", "flex"),
        ("lora", "my-lora"),
        ("tinker_lora_name", "step-7"),
        ("metadata", {"team": "rl"}),
        ("timeout", 30.0),
        ("poll_timeout", 60.0),
        ("voyage", None),
        ("request_logprobs", False),
    ],
)
def test_each_official_attribute_can_be_set_and_reads_back(cookbook, client, name, value):
    assert name in official_attributes()
    sampler = completer(client)
    setattr(sampler, name, value)
    assert getattr(sampler, name) == value


def test_every_official_attribute_is_settable(cookbook, client):
    sampler = completer(client, tinker_lora_signed_url=URL, adapter_config={"r": 8})
    for name in official_attributes():
        setattr(sampler, name, getattr(sampler, name))  # no AttributeError


def test_the_next_request_uses_what_was_set(cookbook, client, emulator):
    sampler = completer(client)
    sampler.temperature = 1.5
    sampler.top_p = 0.5
    sampler.max_tokens = 2
    sampler.completion_window = "flex"
    sampler.request_logprobs = False
    result = sampler.sample_tokens(PROMPT)
    params = last_request(emulator)
    assert (params.temperature, params.top_p, params.max_tokens) == (1.5, 0.5, 2)
    assert params.metadata["completion_window"] == "flex"
    assert len(result.tokens) <= 2 and result.maybe_logprobs is None
    sampler.lora = "no-such-lora"
    assert sampler.request_body(PROMPT)["metadata"]["lora"] == "no-such-lora"
    sampler.lora = None
    assert "lora" not in sampler.request_body(PROMPT)["metadata"]


def test_metadata_is_the_dict_the_requests_use_not_a_copy(cookbook, client, emulator):
    sampler = completer(client, metadata={"team": "rl"})
    sampler.metadata["step"] = "7"  # changed in place: the next request carries it
    sampler.sample_tokens(PROMPT)
    assert last_request(emulator).metadata["step"] == "7"
    shared = {"run": "a"}
    sampler.metadata = shared
    shared["run"] = "b"  # a dict assigned is used as it is, as the official completer's
    assert sampler.metadata is shared and sampler.request_body(PROMPT)["metadata"]["run"] == "b"
    sampler.metadata["bad"] = object()  # checked at the next request, before it is sent
    runs = emulator.stats()["inference_runs"]
    with pytest.raises(InvalidRequestError, match="metadata"):
        sampler.sample_tokens(PROMPT)
    assert emulator.stats()["inference_runs"] == runs


def test_adapter_config_exists_and_switches_to_a_tinker_checkpoint(cookbook, client):
    sampler = completer(client)
    assert sampler.adapter_config is None
    sampler.adapter_config = {"r": 8, "peft_type": "LORA"}
    sampler.tinker_lora_signed_url = URL
    sampler.tinker_lora_name = "step-7"
    assert sampler.adapter_config == {"r": 8, "peft_type": "LORA"}  # as given, as the official
    metadata = sampler.request_body(PROMPT)["metadata"]
    assert metadata["lora"] == URL and metadata["tinker_lora_name"] == "step-7"
    assert metadata["tinker_adapter_config"] == '{"peft_type":"LORA","r":8}'
    assert "sig=" not in repr(sampler)


@pytest.mark.parametrize(
    "name, value, match",
    [
        ("model", "", "model"),
        ("max_tokens", 0, "max_tokens"),
        ("max_tokens", "8", "max_tokens"),
        ("temperature", 3, "temperature"),
        ("top_p", "x", "top_p"),
        ("completion_window", "asap", "asap"),
        ("completion_window", "hourly", "completion_window"),
        ("lora", "", "lora"),
        ("tinker_lora_signed_url", "ftp://x", "tinker_lora_signed_url"),
        ("tinker_lora_signed_url", URL, "adapter_config"),  # a signed URL needs the config
        ("adapter_config", "{not json", "adapter_config"),
        ("adapter_config", [1], "adapter_config"),
        ("tinker_lora_name", 5, "tinker_lora_name"),
        ("metadata", 5, "metadata"),
        ("metadata", {"k": object()}, "metadata"),
        ("timeout", -1, "timeout"),
        ("poll_timeout", 0, "poll_timeout"),
        ("request_logprobs", "yes", "request_logprobs"),
    ],
)
def test_a_bad_assignment_is_a_typed_error_and_changes_nothing(
    cookbook, client, name, value, match
):
    sampler = completer(client, metadata={"team": "rl"})
    before = sampler.request_body(PROMPT)
    kept = getattr(sampler, name)
    with pytest.raises(InvalidRequestError, match=match):
        setattr(sampler, name, value)
    assert getattr(sampler, name) == kept
    assert sampler.request_body(PROMPT) == before


def test_lora_and_a_signed_url_are_exclusive_on_assignment_too(cookbook, client):
    sampler = completer(client, lora="my-lora")
    sampler.adapter_config = {"r": 8}
    with pytest.raises(InvalidRequestError, match="not both"):
        sampler.tinker_lora_signed_url = URL
    sampler.lora = None
    sampler.tinker_lora_signed_url = URL
    assert sampler.request_body(PROMPT)["metadata"]["lora"] == URL


def test_a_retired_window_set_later_becomes_balanced_with_a_warning(cookbook, client):
    sampler = completer(client, completion_window="flex")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        sampler.completion_window = "priority"
        sampler.request_body(PROMPT)
    assert [w.category for w in caught] == [DeprecationWarning]
    assert sampler.completion_window == "balanced"


def test_poll_timeout_set_later_bounds_the_next_sample(cookbook):
    from sail_lite import DeadlineExceededError

    with EmulatorServer(turn_times=SLOW) as server, make_client(server) as client:
        sampler = completer(client)
        sampler.poll_timeout = 0.3
        with pytest.raises(DeadlineExceededError) as info:
            sampler.sample_tokens(PROMPT)
        assert info.value.response_id.startswith("resp_")
        sampler.poll_timeout = None
        assert sampler.poll_timeout is None


def test_what_was_set_survives_pickling(cookbook, client):
    sampler = completer(client, metadata={"team": "rl"})
    sampler.temperature = 0.7
    sampler.metadata["step"] = "3"
    copy = pickle.loads(pickle.dumps(sampler))
    assert copy.temperature == 0.7 and copy.metadata == {"team": "rl", "step": "3"}
    assert copy.request_body(PROMPT) == sampler.request_body(PROMPT)


# -- errors ---------------------------------------------------------------------------------------


def test_an_expired_checkpoint_url_names_the_external_weights_bridge(cookbook, client):
    from sail_lite import ResponseFailedError

    sampler = completer(client, tinker_lora_signed_url=URL, adapter_config={"r": 8})
    response = Response.from_dict(
        {
            "id": "resp_1",
            "status": "failed",
            "output": [],
            "error": {"code": "tinker_checkpoint_url_expired", "message": "could not load"},
        }
    )
    with pytest.raises(ResponseFailedError) as info:
        sampler._to_result(response)
    message = str(info.value)
    assert "upload_external_weights" in message and "lora=" in message
    assert "get_tinker_checkpoint_signed_url" not in message  # cannot work on tinker >= 0.36
    assert info.value.response_id == "resp_1"


def test_token_ids_holding_true_say_what_is_wrong(cookbook, client):
    response = Response.from_dict(
        {
            "id": "resp_t",
            "status": "completed",
            "output": [
                {
                    "type": "message",
                    "content": [
                        {"type": "output_text", "token_ids": [5, True, 7], "stop_reason": "stop"}
                    ],
                }
            ],
        }
    )
    with pytest.raises(MalformedResponseError) as info:
        completer(client)._to_result(response)
    message = str(info.value)
    assert "token_ids[1] is True" in message and "no token_ids list" not in message
