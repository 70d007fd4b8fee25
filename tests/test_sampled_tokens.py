"""SampledTokens.from_response: every reply shape the official SDK's completer reads, read at least as well.

One table of response shapes. sail_lite's parser must give the expected
tokens, logprobs and stop reason for each; when the official ``sail`` SDK is
installed, its completer's reader (``sail.tinker``) runs on the same shapes
and must agree on tokens and logprobs, so "at least as tolerant" is checked
against the real thing, not a memory of it.
"""

from __future__ import annotations

import importlib

import pytest

from sail_lite.errors import MalformedResponseError
from sail_lite.types import Response, SampledTokens


def reply(blocks=None, *, status="completed", output=None, **top):
    payload = {
        "id": "resp_t",
        "object": "response",
        "status": status,
        "output": output if output is not None else [{"type": "message", "content": blocks or []}],
    }
    payload.update(top)
    return payload


def text_block(**fields):
    block = {"type": "output_text", "text": ""}
    block.update(fields)
    return block


LP = [{"token_id": 5, "logprob": -0.5}, {"token_id": 6, "logprob": -1.0}]

# (id, reply, tokens, logprobs, our stop_reason, the SDK's stop_reason)
SHAPES = [
    (
        "wire shape",
        reply([text_block(token_ids=[5, 6], logprobs=LP, stop_reason="stop")]),
        (5, 6),
        (-0.5, -1.0),
        "stop",
        "stop",
    ),
    (
        "no token_ids: ids from logprobs",
        reply([text_block(logprobs=LP, stop_reason="length")]),
        (5, 6),
        (-0.5, -1.0),
        "length",
        "length",
    ),
    (
        "first message item has no output_text",
        reply(
            output=[
                {"type": "message", "content": [{"type": "refusal", "refusal": "no"}]},
                {"type": "message", "content": [text_block(token_ids=[7], stop_reason="stop")]},
            ]
        ),
        (7,),
        None,
        "stop",
        "stop",
    ),
    (
        "reasoning item first",
        reply(
            output=[
                {"type": "reasoning", "summary": []},
                {"type": "message", "content": [text_block(token_ids=[1, 2])]},
            ]
        ),
        (1, 2),
        None,
        "stop",
        "completed",
    ),
    (
        "response-level stop_reason",
        reply([text_block(token_ids=[3])], stop_reason="length"),
        (3,),
        None,
        "length",
        "length",
    ),
    (
        "response-level finish_reason",
        reply([text_block(token_ids=[3])], finish_reason="length"),
        (3,),
        None,
        "length",
        "length",
    ),
    (
        "block reason wins over the response's",
        reply([text_block(token_ids=[3], stop_reason="stop")], stop_reason="length"),
        (3,),
        None,
        "stop",
        "stop",
    ),
    (
        "unknown stop reason passes through",
        reply([text_block(token_ids=[3], stop_reason="tool_call")]),
        (3,),
        None,
        "tool_call",
        "tool_call",
    ),
    (
        "incomplete, the budget ran out",
        reply(
            [text_block(token_ids=[3, 4])],
            status="incomplete",
            incomplete_details={"reason": "max_output_tokens"},
        ),
        (3, 4),
        None,
        "length",
        "incomplete",
    ),
    (
        "incomplete for another reason",
        reply(
            [text_block(token_ids=[3])],
            status="incomplete",
            incomplete_details={"reason": "content_filter"},
        ),
        (3,),
        None,
        "content_filter",
        "incomplete",
    ),
    (
        "incomplete without a reason",
        reply([text_block(token_ids=[3])], status="incomplete"),
        (3,),
        None,
        "incomplete",
        "incomplete",
    ),
    (
        "null logprobs",
        reply([text_block(token_ids=[3], logprobs=None, stop_reason="stop")]),
        (3,),
        None,
        "stop",
        "stop",
    ),
    (
        "integral logprob",
        reply([text_block(token_ids=[9], logprobs=[{"token_id": 9, "logprob": 0}])]),
        (9,),
        (0.0,),
        "stop",
        "completed",
    ),
    (
        "empty sample",
        reply([text_block(token_ids=[], logprobs=[], stop_reason="length")]),
        (),
        (),
        "length",
        "length",
    ),
]


@pytest.mark.parametrize(
    "payload, tokens, logprobs, reason", [s[1:5] for s in SHAPES], ids=[s[0] for s in SHAPES]
)
def test_sail_lite_reads_every_shape(payload, tokens, logprobs, reason):
    sampled = SampledTokens.from_response(Response.from_dict(payload))
    assert sampled.tokens == tokens
    assert sampled.logprobs == logprobs
    assert sampled.stop_reason == reason
    assert sampled.response_id == "resp_t"


def sdk_reader():
    try:
        return importlib.import_module("sail.tinker")
    except ImportError as exc:
        pytest.skip(f"the official sail SDK is not installed ({exc}): pip install sail-sdk")


@pytest.mark.parametrize(
    "payload, tokens, logprobs, sdk_reason",
    [s[1:4] + (s[5],) for s in SHAPES],
    ids=[s[0] for s in SHAPES],
)
def test_the_official_sdk_reads_the_same_shapes_alike(payload, tokens, logprobs, sdk_reason):
    sdk = sdk_reader()
    if not tokens:
        # The SDK cannot read token ids from an empty logprobs list; sail_lite reads the empty token_ids.
        pytest.skip("the SDK's fallback needs at least one logprob entry")
    sdk_tokens, sdk_logprobs = sdk._tokens_and_logprobs_from_response(payload)
    assert tuple(sdk_tokens) == tokens
    assert (tuple(sdk_logprobs) if sdk_logprobs is not None else None) == logprobs
    # Where the reasons differ (a block without one), sail_lite says "stop"/"length" from the
    # status and incomplete_details where the SDK repeats the status; everything given passes through.
    assert sdk._stop_reason_from_response(payload) == sdk_reason


@pytest.mark.parametrize(
    "usage, cached",
    [
        ({"input_tokens": 9, "output_tokens": 1, "input_tokens_details": {"cached_tokens": 4}}, 4),
        (
            {
                "prompt_tokens": 9,
                "completion_tokens": 1,
                "prompt_tokens_details": {"cached_tokens": 2},
            },
            2,
        ),
        ({"input_tokens": 9, "cache_read_input_tokens": 3}, 3),
        ({"input_tokens": 9}, 0),
        ({"input_tokens_details": {"cached_tokens": "x"}}, 0),
        (None, 0),
    ],
)
def test_cached_prompt_tokens_from_the_usage(usage, cached):
    payload = reply([text_block(token_ids=[1])], usage=usage)
    assert SampledTokens.from_response(Response.from_dict(payload)).cached_prompt_tokens == cached


@pytest.mark.parametrize(
    "payload, words",
    [
        (reply([]), "no output_text"),
        (reply(output=[{"type": "reasoning"}]), "no output_text"),
        (reply([text_block(text="hi")]), "token_ids"),
        (
            reply([text_block(logprobs=[{"logprob": -1.0}])]),
            "token_ids",
        ),  # no ids in the logprobs either
        (reply([text_block(text="hi")]), "has no token_ids list"),
        # ids that are there but wrong say what is wrong, not that there are none:
        (reply([text_block(token_ids=[1, True])]), r"token_ids\[1\] is True, not a token id"),
        (reply([text_block(token_ids=[1, 2, "3"])]), r"token_ids\[2\] is '3', not a token id"),
        (reply([text_block(token_ids=[1, 2], logprobs=LP[:1])]), "1 logprobs for 2 tokens"),
        (reply([text_block(token_ids=[1], logprobs=[{"token_id": 1}])]), "malformed logprob"),
    ],
)
def test_malformed_blocks_raise_with_the_response_id(payload, words):
    with pytest.raises(MalformedResponseError, match=words) as info:
        SampledTokens.from_response(Response.from_dict(payload))
    assert info.value.response_id == "resp_t"
