"""The openai and anthropic SDKs stream from the emulator, unmodified: base_url and api_key only."""

from __future__ import annotations

import pytest

from .conftest import require

MODEL = "moonshotai/Kimi-K2.6"


@pytest.fixture(scope="module")
def openai_sdk(emulator_server):
    openai = require("openai", "openai")
    client = openai.OpenAI(api_key=emulator_server.api_key, base_url=emulator_server.base_url)
    yield client
    client.close()


@pytest.fixture(scope="module")
def anthropic_sdk(emulator_server):
    anthropic = require("anthropic", "anthropic")
    client = anthropic.Anthropic(api_key=emulator_server.api_key, base_url=emulator_server.url)
    yield client
    client.close()


def test_openai_responses_stream(openai_sdk, emulator):
    with openai_sdk.responses.stream(model=MODEL, input="Say hi", max_output_tokens=10) as stream:
        deltas = [e.delta for e in stream if e.type == "response.output_text.delta"]
        final = stream.get_final_response()
    assert final.status == "completed" and "".join(deltas) == final.output_text
    assert final.usage.output_tokens == len(deltas)
    assert emulator.stats()["inference_runs"] == 1


def test_openai_responses_create_stream_true(openai_sdk):
    events = list(
        openai_sdk.responses.create(model=MODEL, input="x", max_output_tokens=4, stream=True)
    )
    assert events[0].type == "response.created" and events[-1].type == "response.completed"
    assert [e.sequence_number for e in events] == list(range(len(events)))


def test_openai_chat_stream_with_usage(openai_sdk):
    chunks = list(
        openai_sdk.chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": "hi"}],
            max_completion_tokens=6,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == len(text)
    assert any(c.choices and c.choices[0].finish_reason for c in chunks)


def test_anthropic_messages_stream(anthropic_sdk):
    with anthropic_sdk.messages.stream(
        model=MODEL, max_tokens=8, messages=[{"role": "user", "content": "hi"}]
    ) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert final.content[0].text == text and final.usage.output_tokens == len(text)
    assert final.stop_reason in ("end_turn", "max_tokens")


def test_anthropic_messages_create_stream_true(anthropic_sdk):
    events = list(
        anthropic_sdk.messages.create(
            model=MODEL, max_tokens=4, messages=[{"role": "user", "content": "x"}], stream=True
        )
    )
    assert events[0].type == "message_start" and events[-1].type == "message_stop"
