"""Shapes people know (issue 21): the openai path on chat choices, the anthropic path on messages."""

from __future__ import annotations

import pickle

import pytest

from sail_lite.errors import MalformedResponseError
from sail_lite.types import ChatCompletion, ChatMessage, ContentBlock, Message, Response, Usage

CHAT = {
    "id": "chatcmpl-1",
    "object": "chat.completion",
    "created": 5,
    "model": "m",
    "choices": [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "hi there"},
            "finish_reason": "stop",
        }
    ],
    "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5},
}

MESSAGE = {
    "id": "msg_1",
    "type": "message",
    "role": "assistant",
    "model": "m",
    "content": [{"type": "text", "text": "hello"}, {"type": "text", "text": " world"}],
    "stop_reason": "end_turn",
    "usage": {"input_tokens": 4, "output_tokens": 2},
}


def test_chat_choice_offers_the_openai_message_path():
    choice = ChatCompletion.from_dict(CHAT).choices[0]
    assert choice.message.content == "hi there" and choice.message.role == "assistant"
    assert isinstance(choice.message, ChatMessage)
    # today's flat names still work
    assert choice.content == "hi there" and choice.role == "assistant"
    assert choice.finish_reason == "stop" and choice.index == 0


def test_chat_choice_message_pickles_and_compares():
    chat = ChatCompletion.from_dict(CHAT)
    again = pickle.loads(pickle.dumps(chat))
    assert again.choices[0].message == chat.choices[0].message


def test_message_offers_the_anthropic_path():
    message = Message.from_dict(MESSAGE)
    block = message.content[0]
    assert block.text == "hello" and block.type == "text"
    assert isinstance(block, ContentBlock)
    assert message.role == "assistant" and message.stop_reason == "end_turn"
    assert message.usage.input_tokens == 4 and message.usage.output_tokens == 2
    assert message.type == "message"
    assert message.text == "hello world"


def test_message_blocks_stay_dicts_for_existing_code():
    message = Message.from_dict(MESSAGE)
    block = message.content[0]
    assert block["text"] == "hello" and block.get("type") == "text"
    assert block == {"type": "text", "text": "hello"}
    assert pickle.loads(pickle.dumps(message)).content[1].text == " world"


def test_content_block_unknown_attribute_is_an_attribute_error():
    block = Message.from_dict(MESSAGE).content[0]
    with pytest.raises(AttributeError):
        block.no_such_field  # noqa: B018
    tool = Message.from_dict({**MESSAGE, "content": [{"type": "tool_use", "name": "f"}]}).content[0]
    assert tool.type == "tool_use" and tool.text is None and tool.name == "f"


@pytest.mark.parametrize("status", [7, None, ["completed"], {"s": 1}, True, 1.5])
def test_response_status_that_is_not_a_string_is_malformed(status):
    with pytest.raises(MalformedResponseError) as caught:
        Response.from_dict({"id": "resp_9", "status": status})
    assert caught.value.response_id == "resp_9" and "status" in str(caught.value)


def test_response_without_status_still_reads():
    assert Response.from_dict({"id": "resp_9"}).status == ""


def test_usage_names_both_conventions():
    usage = ChatCompletion.from_dict(CHAT).usage
    assert usage == Usage(3, 2, 5)
