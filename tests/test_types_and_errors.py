"""Wire-object parsing is tolerant; errors are data and pickle."""

from __future__ import annotations

import pickle

import pytest

import sail_lite
from sail_lite.errors import (
    AdapterError,
    APIStatusError,
    AuthenticationError,
    BadRequestError,
    ConflictError,
    IdempotencyError,
    MalformedResponseError,
    NotFoundError,
    OverloadedError,
    PermissionDeniedError,
    RateLimitError,
    RequestTimeoutError,
    RequestTooLargeError,
    ResponseFailedError,
    SailError,
    ServerError,
    UnprocessableEntityError,
    status_error,
)
from sail_lite.types import Batch, ChatCompletion, LoRA, Message, Response, SampledTokens, Usage


def raw_response(**overrides):
    payload = {
        "id": "resp_1",
        "object": "response",
        "status": "completed",
        "model": "m",
        "created_at": 1,
        "metadata": {"completion_window": "priority"},
        "output": [
            {"type": "reasoning"},
            {
                "type": "message",
                "content": [
                    {"type": "refusal"},
                    {
                        "type": "output_text",
                        "text": "hi",
                        "token_ids": [104, 105],
                        "logprobs": [
                            {"token_id": 104, "logprob": -0.5},
                            {"token_id": 105, "logprob": -1},
                        ],
                        "stop_reason": "length",
                    },
                ],
            },
        ],
        "usage": {"input_tokens": 3, "output_tokens": 2, "total_tokens": 5},
        "error": None,
        "unknown_future_field": {"x": 1},
    }
    payload.update(overrides)
    return payload


def test_response_from_dict_reads_the_first_output_text_block():
    response = Response.from_dict(raw_response())
    assert response.output_text == "hi"
    assert response.usage == Usage(3, 2, 5)
    assert response.raw["unknown_future_field"] == {"x": 1}
    assert response.is_terminal and response.has_result
    sampled = SampledTokens.from_response(response)
    assert sampled.tokens == (104, 105)
    assert sampled.logprobs == (-0.5, -1.0)
    assert sampled.stop_reason == "length"
    assert sampled.response_id == "resp_1"


@pytest.mark.parametrize(
    "status, terminal, result",
    [
        ("queued", False, False),
        ("in_progress", False, False),
        ("some_new_status", False, False),
        ("completed", True, True),
        ("incomplete", True, True),
        ("failed", True, False),
        ("cancelled", True, False),
        ("canceled", True, False),
        ("expired", True, False),
    ],
)
def test_status_classification(status, terminal, result):
    response = Response.from_dict(raw_response(status=status))
    assert response.is_terminal is terminal
    assert response.has_result is result


@pytest.mark.parametrize(
    "payload",
    [None, [], "text", 3, {}, {"id": ""}, {"id": 5}],
)
def test_malformed_payloads_raise_typed_errors(payload):
    for cls in (Response, ChatCompletion, Message, LoRA, Batch):
        with pytest.raises(MalformedResponseError):
            cls.from_dict(payload)


def test_wrong_field_types_fall_back_to_defaults():
    response = Response.from_dict(
        {
            "id": "resp_2",
            "usage": "lots",
            "output": "nope",
            "metadata": [],
            "created_at": True,
        }
    )
    assert response.status == "" and response.usage == Usage() and response.output == ()
    assert response.metadata == {} and response.created_at is None
    assert response.output_text == ""


@pytest.mark.parametrize("status", [7, None, ["completed"], {"s": 1}, True])
def test_a_status_that_is_not_a_string_is_malformed(status):
    # Polling on it would wait for a status that can never come (issue 20): malformed at once.
    with pytest.raises(MalformedResponseError, match="status"):
        Response.from_dict({"id": "resp_2", "status": status})


@pytest.mark.parametrize(
    "block, message",
    [
        ({"type": "output_text", "text": "x"}, "token_ids"),
        ({"type": "output_text", "token_ids": [1, "2"]}, "token_ids"),
        (
            {"type": "output_text", "token_ids": [1, 2], "logprobs": [{"logprob": -1}]},
            "1 logprobs for 2 tokens",
        ),
        (
            {"type": "output_text", "token_ids": [1], "logprobs": [{"logprob": "x"}]},
            "malformed logprob",
        ),
    ],
)
def test_sampled_tokens_rejects_malformed_blocks(block, message):
    response = Response.from_dict(raw_response(output=[{"type": "message", "content": [block]}]))
    with pytest.raises(MalformedResponseError, match=message) as info:
        SampledTokens.from_response(response)
    assert info.value.response_id == "resp_1"


def test_sampled_tokens_null_logprobs_and_default_stop_reason():
    block = {"type": "output_text", "token_ids": [1, 2], "logprobs": None}
    response = Response.from_dict(
        raw_response(
            status="incomplete",
            output=[{"type": "message", "content": [block]}],
            incomplete_details={"reason": "max_output_tokens"},
        )
    )
    sampled = SampledTokens.from_response(response)
    assert (
        sampled.logprobs is None and sampled.stop_reason == "length"
    )  # the reason says the budget ran out


def test_chat_message_lora_batch_parse():
    chat = ChatCompletion.from_dict(
        {
            "id": "c",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": "yo"},
                    "finish_reason": "stop",
                }
            ],
            "usage": {"prompt_tokens": 4, "completion_tokens": 2},
        }
    )
    assert chat.content == "yo" and chat.usage == Usage(4, 2, 6)
    message = Message.from_dict(
        {"id": "m", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}
    )
    assert message.text == "ab"
    lora = LoRA.from_dict(
        {
            "id": "u",
            "name": "n",
            "supported_models": ["a", 3],
            "validations": [
                {"model": "a", "status": "failed"},
                {"model": "b", "status": "running"},
                {"model": "a", "status": "succeeded"},
                "junk",
            ],
        }
    )
    assert lora.supported_models == ("a",)
    assert lora.latest_validation("a").status == "succeeded"
    assert lora.latest_validation("zzz") is None
    batch = Batch.from_dict(
        {"id": "b", "request_status": {"x": {"status": "COMPLETED"}, "y": {"status": "FAILED"}}}
    )
    assert batch.is_done and batch.request_status == {"x": "COMPLETED", "y": "FAILED"}


def test_frozen_objects_hash_and_compare():
    a = Response.from_dict(raw_response())
    b = Response.from_dict(raw_response())
    assert a == b
    with pytest.raises(Exception):  # noqa: B017
        a.status = "x"


@pytest.mark.parametrize(
    "status, code, cls",
    [
        (400, None, BadRequestError),
        (400, "idempotency_error", IdempotencyError),
        (401, None, AuthenticationError),
        (403, None, PermissionDeniedError),
        (404, None, NotFoundError),
        (408, None, RequestTimeoutError),
        (409, "request_in_progress", ConflictError),
        (413, None, RequestTooLargeError),
        (422, None, UnprocessableEntityError),
        (429, None, RateLimitError),
        (500, None, ServerError),
        (502, None, ServerError),
        (503, "model_capacity_unavailable", OverloadedError),
        (504, None, ServerError),
        (529, None, OverloadedError),
        (418, None, APIStatusError),
    ],
)
def test_status_error_classes(status, code, cls):
    error = status_error(
        status,
        {"error": {"message": "boom", "type": "t", "code": code, "param": "p"}},
        request_id="req_1",
        retry_after=2.0,
        attempts=3,
    )
    assert type(error) is cls
    assert (error.status, error.code, error.type, error.param, error.request_id) == (
        status,
        code,
        "t",
        "p",
        "req_1",
    )
    assert "boom" in str(error) and "req_1" in str(error) and "attempts 3" in str(error)


@pytest.mark.parametrize(
    "payload", [None, "<html><body>Bad gateway</body></html>", {"error": "flat"}, [1]]
)
def test_status_error_from_non_wire_bodies(payload):
    error = status_error(502, payload)
    assert isinstance(error, ServerError)
    assert "HTTP 502" in error.message


@pytest.mark.parametrize(
    "error",
    [
        status_error(
            429,
            {"error": {"message": "slow down", "code": "rate"}},
            request_id="r",
            retry_after=1.5,
        ),
        ResponseFailedError("failed", response={"id": "resp_x"}, response_id="resp_x", code="c"),
        AdapterError("bad", problems=("p",)),
        SailError("plain"),
    ],
)
def test_errors_pickle_with_their_data(error):
    clone = pickle.loads(pickle.dumps(error))
    assert type(clone) is type(error)
    assert clone.__dict__ == error.__dict__
    assert str(clone) == str(error)


def test_public_names_are_exactly_all_and_all_are_documented():
    import pathlib
    import types

    lazy = set(sail_lite._LAZY_TINKER) | set(sail_lite._LAZY)
    defined = {
        name
        for name, value in vars(sail_lite).items()
        if not name.startswith("_") and not isinstance(value, types.ModuleType) and name not in lazy
    }
    assert defined | lazy == set(sail_lite.__all__) - {"__version__"}, (
        "a public name leaks or is missing"
    )
    assert len(set(sail_lite.__all__)) == len(sail_lite.__all__)
    streaming = {"Stream", "ResponseStreamEvent", "ChatCompletionChunk", "MessageStreamEvent"}
    assert streaming <= set(sail_lite.__all__) and streaming <= set(sail_lite._LAZY)
    for name in set(sail_lite.__all__) - lazy:
        assert getattr(sail_lite, name) is not None
    readme = (pathlib.Path(__file__).resolve().parent.parent / "README.rst").read_text()
    undocumented = sorted(name for name in sail_lite.__all__ if f"``{name}``" not in readme)
    assert not undocumented, f"public names the README does not mention: {undocumented}"


def test_import_defers_what_one_sample_does_not_need_and_a_client_loads_a_resource_on_first_use():
    import subprocess
    import sys

    code = (
        "import sys, sail_lite.emulator\n"  # the emulator runs without the HTTP client (nor requests)
        "print([m for m in ('sail_lite.client', 'requests', 'urllib3') if m in sys.modules])\n"
        "import sail_lite\n"
        "print([m for m in ('sail_lite.types', 'sail_lite.streaming', 'concurrent.futures') if m in sys.modules])\n"  # deferred too
        "import sail_lite.client, sail_lite.resources\n"  # (and not the emulator: test_tinker_optional.py)
        "bad = [m for m in sys.modules if m.startswith(('sail_lite.tinker', 'tinker', 'torch'))]\n"
        "print(bad)\n"
        "from sail_lite import Response, Usage\n"
        "import sail_lite.types as t\n"
        "assert Response is t.Response and Usage is t.Usage and sail_lite.Model is t.Model and sail_lite.types is t\n"
        "loaded = lambda: sorted(m[len('sail_lite.resources.'):] for m in sys.modules\n"
        "                        if m.startswith('sail_lite.resources.') and m != 'sail_lite.resources._common')\n"
        "client = sail_lite.Client('sk-test', base_url='http://127.0.0.1:9/v1', environ={})\n"
        "print(loaded())\n"
        "assert client.tokens is client.tokens and client.tokens._responses is client.responses\n"
        "print(loaded())\n"
        "assert client.loras._files is client.files\n"
        "print(loaded())\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.splitlines() == [
        "[]",
        "[]",
        "[]",
        "[]",
        "['responses', 'tokens']",
        "['files', 'loras', 'responses', 'tokens']",
    ], result.stdout
