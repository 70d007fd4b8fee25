"""sail_lite.SailTokenCompleter as a drop-in for the official ``sail.tinker.SailTokenCompleter`` (sail 0.17.1).

What the official completer's source does, pinned here: its constructor's
arguments and defaults, its ``completion_window`` rules, its ``stop`` shapes,
``poll_timeout`` bounding the whole wait, and the cookbook 0.6 result fields.
"""

from __future__ import annotations

import asyncio
import dataclasses
import importlib
import inspect
import pickle
import warnings

import pytest

tinker = pytest.importorskip("tinker")
pytest.importorskip("tinker_cookbook")

from tinker_cookbook.completers import TokensWithLogprobs  # noqa: E402

from sail_lite import (
    DeadlineExceededError,
    InvalidRequestError,
    ResponseFailedError,
    SailTokenCompleter,
)
from sail_lite.emulator import EmulatorServer
from sail_lite.tinker import DEFAULT_POLL_TIMEOUT, _with_message

from ..conftest import make_client

MODEL = "moonshotai/Kimi-K2.6"
PROMPT = [72, 101, 108, 108, 111]
SLOW = {"asap": 0, "priority": 30, "standard": 30, "flex": 30}

#: The official completer's constructor (sail 0.17.1, sail/tinker.py), read from its source.
SDK_SIGNATURE = {
    "model": inspect.Parameter.empty,
    "max_tokens": inspect.Parameter.empty,
    "temperature": 1.0,
    "top_p": 1.0,
    "completion_window": "balanced",
    "lora": None,
    "tinker_lora_signed_url": None,
    "adapter_config": None,
    "tinker_lora_name": None,
    "metadata": None,
    "timeout": None,
    "poll_timeout": 1200.0,
    "voyage": None,
    "request_logprobs": True,
}


def completer(client, **kwargs):
    options = dict(model=MODEL, max_tokens=8, temperature=0.0, client=client)
    options.update(kwargs)
    return SailTokenCompleter(**options)


def official_signature():
    try:
        sdk = importlib.import_module("sail.tinker")
    except ImportError:
        return SDK_SIGNATURE
    parameters = inspect.signature(sdk.SailTokenCompleter.__init__).parameters
    return {name: p.default for name, p in parameters.items() if name != "self"}


def test_every_constructor_argument_of_the_official_completer_is_accepted_with_its_default():
    ours = inspect.signature(SailTokenCompleter.__init__).parameters
    theirs = official_signature()
    assert theirs.keys() >= SDK_SIGNATURE.keys()
    for name, default in theirs.items():
        assert name in ours, name
        assert ours[name].kind == inspect.Parameter.KEYWORD_ONLY
        assert ours[name].default == default, name


def test_the_default_window_is_balanced_and_the_sdk_attributes_are_readable(client, emulator):
    sampler = completer(client, metadata={"team": "rl"})
    assert sampler.completion_window == "balanced"
    assert sampler.poll_timeout == DEFAULT_POLL_TIMEOUT == 1200.0
    assert (sampler.model, sampler.max_tokens, sampler.temperature, sampler.top_p) == (
        MODEL,
        8,
        0.0,
        1.0,
    )
    assert (
        sampler.metadata == {"team": "rl"}
        and sampler.request_logprobs is True
        and sampler.voyage is None
    )
    assert (
        sampler.lora is None
        and sampler.tinker_lora_signed_url is None
        and sampler.tinker_lora_name is None
    )
    assert sampler.request_body(PROMPT)["metadata"] == {
        "team": "rl",
        "completion_window": "balanced",
    }
    assert sampler.sample_tokens(PROMPT).tokens
    (record,) = emulator.state.responses.values()
    assert record.params.metadata["completion_window"] == "balanced"


def test_asap_is_refused_naming_the_windows_that_work(client, emulator):
    with pytest.raises(InvalidRequestError) as info:
        completer(client, completion_window="asap")
    message = str(info.value)
    assert "background" in message and "balanced" in message and "flex" in message
    assert emulator.stats()["inference_runs"] == 0


@pytest.mark.parametrize("window", ["priority", "15m"])
def test_a_retired_window_becomes_balanced_with_one_deprecation_warning(client, emulator, window):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        sampler = completer(client, completion_window=window)
    deprecations = [w for w in caught if issubclass(w.category, DeprecationWarning)]
    assert len(deprecations) == 1 and "balanced" in str(deprecations[0].message)
    assert sampler.completion_window == "balanced"
    sampler.sample_tokens(PROMPT)
    (record,) = emulator.state.responses.values()
    assert record.params.metadata["completion_window"] == "balanced"


@pytest.mark.parametrize(
    "stop, wire",
    [
        (None, "absent"),
        (7, [7]),  # a bare int: a one-token stop list
        ("\n\n", "\n\n"),  # a string goes as a string
        ([], []),  # sent, empty
        ((3, 4), [3, 4]),
        (["a", "b"], ["a", "b"]),
        ([5], [5]),
    ],
)
def test_stop_is_sent_as_the_official_completer_sends_it(client, stop, wire):
    body = completer(client).request_body(PROMPT, stop)
    assert body.get("stop", "absent") == wire


@pytest.mark.parametrize("stop", ["", [""], ["a", 1], [True], True, {"a": 1}, -1, 2**31])
def test_bad_stops_are_refused_before_any_request(client, emulator, stop):
    with pytest.raises(InvalidRequestError, match="stop"):
        completer(client).sample_tokens(PROMPT, stop)
    assert emulator.stats()["inference_runs"] == 0


def test_a_bare_int_and_a_string_stop_work_end_to_end(client):
    sampler = completer(client, max_tokens=32)
    free = sampler.sample_tokens(PROMPT).tokens
    by_int = asyncio.run(sampler(tinker.ModelInput.from_ints(PROMPT), free[3]))
    assert by_int.stop_reason == "stop" and by_int.tokens == free[: free.index(free[3]) + 1]
    by_text = sampler.sample_tokens(PROMPT, bytes([free[2]]).decode())
    assert by_text.stop_reason == "stop" and len(by_text.tokens) < len(free)
    assert len(sampler.sample_tokens(PROMPT, []).tokens) == len(free)


def test_poll_timeout_bounds_the_whole_wait_with_the_response_id():
    with EmulatorServer(turn_times=SLOW) as server, make_client(server) as client:
        with pytest.raises(DeadlineExceededError) as info:
            completer(client, poll_timeout=0.3).sample_tokens(PROMPT)
        assert info.value.response_id and info.value.response_id.startswith("resp_")
        with pytest.raises(DeadlineExceededError):
            asyncio.run(
                completer(client, poll_timeout=0.3)(tinker.ModelInput.from_ints(PROMPT), [])
            )


def test_poll_timeout_none_is_unbounded_and_bad_values_are_refused(client):
    assert completer(client, poll_timeout=None).poll_timeout is None
    assert (
        completer(client, poll_timeout=5, deadline=2).poll_timeout == 2.0
    )  # sail_lite's older name wins
    for bad in (0, -1, "10"):
        with pytest.raises(InvalidRequestError, match="poll_timeout"):
            completer(client, poll_timeout=bad)


def test_voyage_is_accepted_kept_and_said_to_be_unused(client, emulator):
    voyage = object()
    with pytest.warns(UserWarning, match="no voyages"):
        sampler = completer(client, voyage=voyage)
    assert sampler.voyage is voyage
    assert sampler.sample_tokens(PROMPT).tokens
    assert pickle.loads(pickle.dumps(completer(client, poll_timeout=9))).poll_timeout == 9.0


COOKBOOK_06 = {f.name for f in dataclasses.fields(TokensWithLogprobs)} >= {
    "sequence_id",
    "prompt_cache_hit_tokens",
}


@pytest.mark.skipif(
    not COOKBOOK_06, reason="this tinker-cookbook has no TokensWithLogprobs.sequence_id (< 0.6)"
)
def test_cookbook_06_provenance_and_prompt_cache_fields_are_filled(client, emulator):
    result = completer(client).sample_tokens(PROMPT)
    (record,) = emulator.state.responses.values()
    assert result.sequence_id is None  # Tinker's id, which Sail has not: as the official completer
    assert result.sail_response_id == record.id
    assert (
        result.prompt_cache_hit_tokens == 0
    )  # the emulator reports input_tokens_details.cached_tokens = 0
    from sail_lite import Response

    cached = Response.from_dict(
        {
            "id": "resp_c",
            "status": "completed",
            "usage": {"input_tokens": 5, "input_tokens_details": {"cached_tokens": 4}},
            "output": [
                {
                    "type": "message",
                    "content": [{"type": "output_text", "token_ids": [1], "stop_reason": "stop"}],
                }
            ],
        }
    )
    converted = completer(client)._to_result(cached)
    assert (converted.sequence_id, converted.prompt_cache_hit_tokens) == (None, 4)
    assert converted.sail_response_id == "resp_c"


@pytest.mark.skipif(COOKBOOK_06, reason="this tinker-cookbook has the 0.6 fields")
def test_cookbook_05_results_have_only_its_fields(client):
    result = completer(client).sample_tokens(PROMPT)
    assert not hasattr(result, "sequence_id") and result.tokens


@pytest.mark.parametrize(
    "code, message, hinted",
    [
        (
            "tinker_checkpoint_url_expired",
            "could not load the adapter",
            True,
        ),  # the code says so: hint
        ("checkpoint_url_expired", "", True),
        (
            "lora_load_failed",
            "the URL of the upload expired, re-check",
            False,
        ),  # text alone is not enough
        (None, "url expired", False),
    ],
)
def test_the_expired_url_hint_follows_the_error_code_not_the_text(client, code, message, hinted):
    from sail_lite import Response

    sampler = completer(
        client, tinker_lora_signed_url="https://x/a.tar?sig=1", adapter_config={"r": 8}
    )
    response = Response.from_dict(
        {
            "id": "resp_1",
            "status": "failed",
            "output": [],
            "error": {"code": code, "message": message},
        }
    )
    with pytest.raises(ResponseFailedError) as info:
        sampler._to_result(response)
    assert ("upload_external_weights" in str(info.value)) is hinted
    assert info.value.response_id == "resp_1" and info.value.code == code


def test_a_rebuilt_error_keeps_every_field():
    original = ResponseFailedError(
        "failed",
        response="R",
        status=200,
        code="tinker_checkpoint_url_expired",
        type="t",
        param="p",
        request_id="req_1",
        response_id="resp_1",
        attempts=3,
        retry_after=2.5,
    )
    rebuilt = _with_message(original, "failed; hint")
    assert type(rebuilt) is ResponseFailedError and rebuilt.message == "failed; hint"
    for name in (
        "response",
        "status",
        "code",
        "type",
        "param",
        "request_id",
        "response_id",
        "attempts",
        "retry_after",
    ):
        assert getattr(rebuilt, name) == getattr(original, name), name
    assert "attempts 3" in str(rebuilt) and pickle.loads(pickle.dumps(rebuilt)).attempts == 3
