"""Streaming (issue 23): the SSE decoder, typed events, and Stream against hostile loopback servers."""

from __future__ import annotations

import gc
import json
import sys
import threading
import time
import tracemalloc

import pytest

from sail_lite.errors import (
    APIConnectionError,
    APITimeoutError,
    AuthenticationError,
    BadRequestError,
    DeadlineExceededError,
    IdempotencyError,
    InvalidRequestError,
    MalformedResponseError,
    OverloadedError,
    RateLimitError,
    ResponseFailedError,
    ResponseTooLargeError,
    ServerError,
)
from sail_lite.streaming import (
    ChatCompletionChunk,
    MessageStreamEvent,
    ResponseStreamEvent,
    ServerSentEvent,
    SSEDecoder,
    Stream,
    stream_error,
    stream_from_requests,
)
from sail_lite.types import ChatCompletion, Message, Response

from ._sse_servers import ScriptedServer


def sse(payload, event=None) -> bytes:
    data = payload if isinstance(payload, str) else json.dumps(payload)
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {data}\n\n".encode()


RESPONSE = {"id": "resp_1", "object": "response", "status": "in_progress", "model": "m"}


def responses_body(words, status="completed"):
    yield sse({"type": "response.created", "sequence_number": 0, "response": RESPONSE})
    for n, word in enumerate(words):
        yield sse(
            {
                "type": "response.output_text.delta",
                "sequence_number": n + 1,
                "delta": word,
                "item_id": "msg_1",
                "output_index": 0,
                "content_index": 0,
                "unknown_key": [1, 2],
            },
            event="response.output_text.delta",
        )
    text = "".join(words)
    final = dict(
        RESPONSE,
        status=status,
        output=[{"type": "message", "content": [{"type": "output_text", "text": text}]}],
        usage={"input_tokens": 2, "output_tokens": len(words)},
        error={"code": "server_error", "message": "boom"} if status == "failed" else None,
    )
    end = "response.failed" if status == "failed" else f"response.{status}"
    yield sse({"type": end, "sequence_number": len(words) + 1, "response": final})


def chat_body(words, usage=True):
    head = {"object": "chat.completion.chunk", "id": "chatcmpl-1", "created": 3, "model": "m"}
    yield sse(dict(head, choices=[{"index": 0, "delta": {"role": "assistant"}}]))
    for word in words:
        yield sse(dict(head, choices=[{"index": 0, "delta": {"content": word}}]))
    yield sse(dict(head, choices=[{"index": 0, "delta": {}, "finish_reason": "stop"}]))
    if usage:
        yield sse(dict(head, choices=[], usage={"prompt_tokens": 2, "completion_tokens": 3}))
    yield b"data: [DONE]\n\n"


def messages_body(words):
    start = {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "model": "m",
        "content": [],
        "stop_reason": None,
        "usage": {"input_tokens": 5, "output_tokens": 1},
    }
    yield sse({"type": "message_start", "message": start}, event="message_start")
    yield sse({"type": "ping"}, event="ping")
    block = {
        "type": "content_block_start",
        "index": 0,
        "content_block": {"type": "text", "text": ""},
    }
    yield sse(block, event="content_block_start")
    for word in words:
        delta = {
            "type": "content_block_delta",
            "index": 0,
            "delta": {"type": "text_delta", "text": word},
        }
        yield sse(delta, event="content_block_delta")
    yield sse({"type": "content_block_stop", "index": 0}, event="content_block_stop")
    delta = {
        "type": "message_delta",
        "delta": {"stop_reason": "end_turn"},
        "usage": {"output_tokens": 7},
    }
    yield sse(delta, event="message_delta")
    yield sse({"type": "message_stop"}, event="message_stop")


WORDS = ["Hel", "lo", ", ", "wor", "ld"]


# ---------------------------------------------------------------- the decoder


def decode(chunks, **bounds):
    decoder = SSEDecoder(**bounds)
    frames = []
    for chunk in chunks:
        frames.extend(decoder.feed(chunk))
    return frames


@pytest.mark.parametrize(
    "body, expected",
    [
        (b"data: a\n\n", [ServerSentEvent(None, "a")]),
        (b"data: a\ndata: b\n\n", [ServerSentEvent(None, "a\nb")]),
        (b"event: x\ndata: a\n\n", [ServerSentEvent("x", "a")]),
        (b"data:a\r\n\r\ndata: b\r\rdata: c\n\n", [ServerSentEvent(None, x) for x in "abc"]),
        (b": keep-alive\n\n: ping\ndata: a\n\n", [ServerSentEvent(None, "a")]),
        (b"event: x\n\ndata: a\n\n", [ServerSentEvent(None, "a")]),  # no data: dropped, name reset
        (b"id: 7\nretry: 10\nfoo: bar\ndata: a\n\n", [ServerSentEvent(None, "a", "7")]),
        (b"\xef\xbb\xbfdata: a\n\n", [ServerSentEvent(None, "a")]),
        (b"data\n\n", [ServerSentEvent(None, "")]),
        (b"data:  two spaces\n\n", [ServerSentEvent(None, " two spaces")]),
        (b"data: [DONE]\n\n", [ServerSentEvent(None, "[DONE]")]),
        (b"data: a\n", []),  # not dispatched until the blank line
        ("data: é ☃\n\n".encode(), [ServerSentEvent(None, "é ☃")]),
    ],
)
def test_decoder_frames(body, expected):
    assert decode([body]) == expected
    # byte by byte, every line end split across chunks, the same frames
    assert decode([body[i : i + 1] for i in range(len(body))]) == expected


def test_decoder_counts_comments_and_frames_as_progress():
    decoder = SSEDecoder()
    decoder.feed(b": one\n: two\n")
    assert decoder.progress == 2
    decoder.feed(b"data: x\n\n")
    assert decoder.progress == 3


def test_decoder_bounds_a_line_without_end():
    decoder = SSEDecoder(max_line_bytes=100)
    with pytest.raises(ResponseTooLargeError, match="max_line_bytes=100"):
        for _ in range(10):
            decoder.feed(b"data: " + b"x" * 30)


def test_decoder_bounds_a_long_line_in_one_chunk():
    with pytest.raises(ResponseTooLargeError):
        decode([b"data: " + b"x" * 200 + b"\n\n"], max_line_bytes=100)


def test_decoder_bounds_an_event_of_many_lines():
    with pytest.raises(ResponseTooLargeError, match="max_event_bytes=1000"):
        decode([b"data: " + b"x" * 90 + b"\n"] * 20, max_event_bytes=1000)


def test_decoder_refuses_data_that_is_not_utf8():
    with pytest.raises(MalformedResponseError, match="UTF-8"):
        decode([b"data: \xff\xfe\n\n"])


# ---------------------------------------------------------------- typed events and errors


def test_typed_events_ignore_unknown_keys():
    event = ResponseStreamEvent.from_dict(
        {"type": "response.output_text.delta", "delta": "x", "sequence_number": 4, "new": {}}
    )
    assert (event.type, event.delta, event.sequence_number, event.response) == (
        "response.output_text.delta",
        "x",
        4,
        None,
    )
    chunk = ChatCompletionChunk.from_dict(
        {"id": "c", "choices": [{"delta": {"content": "hi", "tool": 1}, "x": 2}], "what": 1}
    )
    assert chunk.choices[0].delta.content == "hi" and chunk.choices[0].index == 0
    assert chunk.usage is None and chunk.object == "chat.completion.chunk"
    event = MessageStreamEvent.from_dict(
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "t"}}
    )
    assert event.delta.text == "t" and event.delta.type == "text_delta" and event.index == 0


@pytest.mark.parametrize(
    "payload, cls, code",
    [
        (
            {"type": "error", "code": "model_capacity_unavailable", "message": "m"},
            OverloadedError,
            "model_capacity_unavailable",
        ),
        (
            {"type": "error", "code": "rate_limit_exceeded", "message": "m"},
            RateLimitError,
            "rate_limit_exceeded",
        ),
        (
            {"type": "error", "code": "idempotency_error", "message": "m"},
            IdempotencyError,
            "idempotency_error",
        ),
        (
            {"type": "error", "error": {"type": "overloaded_error", "message": "m"}},
            OverloadedError,
            None,
        ),
        (
            {"type": "error", "error": {"type": "authentication_error", "message": "m"}},
            AuthenticationError,
            None,
        ),
        (
            {"type": "error", "error": {"type": "invalid_request_error", "message": "m"}},
            BadRequestError,
            None,
        ),
        ({"error": {"type": "server_error", "message": "m"}}, ServerError, None),
        ({"type": "error", "code": "never_heard_of_it"}, ServerError, "never_heard_of_it"),
        ({"type": "error"}, ServerError, None),
    ],
)
def test_error_events_map_through_the_error_tree(payload, cls, code):
    error = stream_error(payload, request_id="req_1")
    assert type(error) is cls and error.code == code and error.request_id == "req_1"
    assert str(error).startswith("stream error")


# ---------------------------------------------------------------- Stream, in memory


def test_responses_stream_events_text_and_final():
    with Stream(responses_body(WORDS), kind="responses") as stream:
        events = list(stream)
        final = stream.final()
    assert [e.type for e in events][:2] == ["response.created", "response.output_text.delta"]
    assert events[-1].type == "response.completed"
    assert isinstance(final, Response) and final.output_text == "Hello, world"
    assert stream.closed


def test_text_stream_yields_deltas_then_final():
    closed = []
    stream = Stream(chat_body(WORDS), kind="chat.completions", close=lambda: closed.append(1))
    with stream:
        assert list(stream.text_stream) == WORDS
        completion = stream.get_final_completion()
    assert isinstance(completion, ChatCompletion)
    assert completion.choices[0].message.content == "Hello, world"
    assert completion.choices[0].finish_reason == "stop" and completion.id == "chatcmpl-1"
    assert completion.usage.output_tokens == 3 and closed == [1]


def test_messages_stream_assembles_the_message():
    with Stream(messages_body(WORDS), kind="messages") as stream:
        assert "".join(stream.text_stream) == "Hello, world"
        message = stream.get_final_message()
    assert isinstance(message, Message)
    assert message.content[0].text == "Hello, world" and message.stop_reason == "end_turn"
    assert message.usage.input_tokens == 5 and message.usage.output_tokens == 7


def test_final_without_iterating_reads_to_the_end():
    stream = Stream(messages_body(WORDS), kind="messages")
    assert stream.final().text == "Hello, world" and stream.closed


def test_accumulate_false_keeps_no_text_and_says_so():
    with Stream(chat_body(WORDS), kind="chat.completions", accumulate=False) as stream:
        assert "".join(stream.text_stream) == "Hello, world"
        with pytest.raises(InvalidRequestError, match="accumulate=True"):
            stream.final()
    # responses need nothing kept: the last event carries the response
    with Stream(responses_body(WORDS), kind="responses", accumulate=False) as stream:
        assert stream.final().output_text == "Hello, world"


def test_failed_response_raises_after_its_event():
    stream = Stream(responses_body(WORDS, status="failed"), kind="responses")
    seen = []
    with pytest.raises(ResponseFailedError, match="boom") as caught:
        for event in stream:
            seen.append(event.type)
    assert seen[-1] == "response.failed" and caught.value.response_id == "resp_1"


def test_incomplete_response_is_a_result():
    with Stream(responses_body(WORDS, status="incomplete"), kind="responses") as stream:
        assert stream.final().status == "incomplete"


def test_error_event_raises_its_typed_error_and_closes():
    def body():
        yield from list(messages_body(WORDS))[:3]
        yield sse(
            {"type": "error", "error": {"type": "overloaded_error", "message": "busy"}}, "error"
        )

    closed = []
    stream = Stream(body(), kind="messages", close=lambda: closed.append(1))
    with pytest.raises(OverloadedError, match="busy"):
        list(stream)
    assert closed == [1] and stream.closed


def test_body_ending_before_the_last_event_is_a_connection_error():
    body = list(chat_body(WORDS))[:-1]  # no [DONE]
    with pytest.raises(APIConnectionError, match="ended before its last event"):
        list(Stream(iter(body), kind="chat.completions"))


def test_keyboard_interrupt_while_reading_closes_the_stream():
    def body():
        yield from list(responses_body(WORDS))[:2]
        raise KeyboardInterrupt

    closed = []
    stream = Stream(body(), kind="responses", close=lambda: closed.append(1))
    with pytest.raises(KeyboardInterrupt):
        for _ in stream:
            pass
    assert closed == [1]


def test_leaving_the_block_early_closes_once():
    closed = []
    with Stream(responses_body(WORDS), kind="responses", close=lambda: closed.append(1)) as stream:
        next(iter(stream))
    assert closed == [1] and stream.closed
    stream.close()
    assert closed == [1] and list(stream) == []
    with pytest.raises(InvalidRequestError, match="closed before its last event"):
        stream.final()


def test_unknown_kind_is_refused():
    with pytest.raises(InvalidRequestError, match="kind must be one of"):
        Stream(iter(()), kind="completions")


# ---------------------------------------------------------------- hostile loopback servers


def writes(parts, pause=0.0):
    def script(write):
        for part in parts:
            write(part)
            if pause:
                time.sleep(pause)

    return script


@pytest.mark.parametrize("chunked", [False, True])
def test_loopback_stream_reads_events_as_they_come(chunked):
    with ScriptedServer(writes(list(chat_body(WORDS)), pause=0.01), chunked=chunked) as server:
        with stream_from_requests(server.get(), kind="chat.completions", read_timeout=10) as stream:
            assert list(stream.text_stream) == WORDS
            assert stream.final().content == "Hello, world"
            assert stream.request_id == "req_sse"


def test_server_that_stops_mid_event():
    parts = list(responses_body(WORDS))[:3] + [b'data: {"type": "response.output_te']
    with ScriptedServer(writes(parts)) as server:
        stream = stream_from_requests(server.get(), kind="responses", read_timeout=10)
        with pytest.raises(APIConnectionError, match="ended before its last event"):
            list(stream)


def test_server_that_sends_malformed_frames():
    parts = list(responses_body(WORDS))[:2] + [b"data: {not json\n\n"]
    with ScriptedServer(writes(parts + [b": keep-alive\n"] * 1000, pause=0.01)) as server:
        with stream_from_requests(server.get(), kind="responses", read_timeout=10) as stream:
            with pytest.raises(MalformedResponseError, match="not JSON"):
                list(stream)
        assert stream.closed
        assert server.gone.wait(10)  # the server saw the connection go


def test_server_that_sends_a_json_array_frame():
    with ScriptedServer(writes([b"data: [1, 2]\n\n"])) as server:
        with pytest.raises(MalformedResponseError, match="not an object"):
            list(stream_from_requests(server.get(), kind="messages", read_timeout=10))


def test_server_that_drips_bytes_times_out_on_the_gap():
    # a byte every 20 ms: each socket read succeeds, so only the gap bound can end this
    drip = writes([b"data: " + b"x" * 10_000], pause=0)

    def script(write):
        for part in list(responses_body(WORDS))[:1]:
            write(part)
        while True:
            write(b"x")
            time.sleep(0.02)

    del drip
    with ScriptedServer(script) as server:
        stream = stream_from_requests(
            server.get(read_timeout=30), kind="responses", read_timeout=0.3
        )
        with pytest.raises(APITimeoutError, match="read timeout"):
            list(stream)
        assert stream.closed and server.gone.wait(10)


def test_silent_server_times_out_on_the_gap():
    def script(write):
        write(b": hello\n\n")
        time.sleep(30)

    with ScriptedServer(script) as server:
        stream = stream_from_requests(
            server.get(read_timeout=30), kind="chat.completions", read_timeout=0.3
        )
        with pytest.raises(APITimeoutError):
            list(stream)
        assert stream.closed


def test_server_that_never_ends_hits_the_deadline():
    def script(write):
        first = list(chat_body(WORDS))[:2]
        for part in first:
            write(part)
        while True:
            write(b": keep-alive\n\n")
            time.sleep(0.02)

    with ScriptedServer(script) as server:
        stream = stream_from_requests(
            server.get(),
            kind="chat.completions",
            read_timeout=5,
            deadline_at=time.monotonic() + 0.5,
        )
        with pytest.raises(DeadlineExceededError, match="deadline"):
            list(stream)
        assert stream.closed and server.gone.wait(10)


def test_slow_consumer_is_not_a_server_gap():
    with ScriptedServer(writes(list(messages_body(WORDS)))) as server:
        with stream_from_requests(server.get(), kind="messages", read_timeout=0.2) as stream:
            for _ in stream:
                time.sleep(0.05)  # 8 events: more than the gap bound in all
            assert stream.final().text == "Hello, world"


def test_leaving_the_block_closes_a_live_connection():
    def script(write):
        for part in responses_body(WORDS):
            write(part)
        while True:
            write(b": keep-alive\n\n")
            time.sleep(0.01)

    with ScriptedServer(script) as server:
        with stream_from_requests(server.get(), kind="responses", read_timeout=10) as stream:
            next(iter(stream))
        assert server.gone.wait(10)


def test_close_from_another_thread_wakes_a_blocked_read():
    def script(write):
        write(list(responses_body(WORDS))[0])
        time.sleep(30)

    with ScriptedServer(script) as server:
        stream = stream_from_requests(server.get(), kind="responses", read_timeout=None)
        next(stream)
        threading.Timer(0.2, stream.close).start()
        with pytest.raises(APIConnectionError):
            list(stream)


def test_error_event_over_loopback():
    parts = list(responses_body(WORDS))[:2]
    parts.append(sse({"type": "error", "code": "model_capacity_unavailable", "message": "full"}))
    with ScriptedServer(writes(parts)) as server:
        with pytest.raises(OverloadedError, match="full"):
            list(stream_from_requests(server.get(), kind="responses", read_timeout=10))


def test_reply_that_is_not_an_event_stream_is_refused():
    import requests

    with ScriptedServer(writes([])) as server:
        reply = requests.get(server.url.replace("/stream", "/x"), stream=True, timeout=5)
        reply.headers["content-type"] = "application/json"
        with pytest.raises(MalformedResponseError, match="text/event-stream"):
            stream_from_requests(reply, kind="responses")


# ---------------------------------------------------------------- memory


EVENTS = 100_000


def delta_frame(n):
    payload = {
        "type": "response.output_text.delta",
        "sequence_number": n,
        "delta": "tok ",
        "item_id": "msg_1",
        "output_index": 0,
        "content_index": 0,
    }
    return sse(payload, event="response.output_text.delta")


def consume(stream, keep=None):
    """Read ``stream``, sampling the interpreter's allocated blocks every 1000 events.

    Returns (events, most blocks held above the level after the first 1000 events).
    """
    count, base, most = 0, None, 0
    for event in stream:
        count += 1
        if keep is not None:
            keep.append(event)
        if count % 1000 == 0:
            blocks = sys.getallocatedblocks()
            if base is None:
                base = blocks
            most = max(most, blocks - base)
    return count, most


def big_responses_script(events):
    batch = delta_frame(1) * 1000

    def script(write):
        write(list(responses_body([]))[0])
        for _ in range(events // 1000):
            write(batch)
        final = dict(RESPONSE, status="completed", output=[])
        write(sse({"type": "response.completed", "response": final}))

    return script


def test_100k_event_stream_in_constant_memory():
    with ScriptedServer(big_responses_script(EVENTS)) as server:
        gc.collect()
        with stream_from_requests(server.get(), kind="responses", read_timeout=30) as stream:
            count, growth = consume(stream)
            final = stream.final()
    assert count == EVENTS + 2 and final.status == "completed"
    # ~17 MB went by; keeping the events would hold about a million blocks (see the control)
    assert growth < 5_000, f"{growth} blocks more after {count} events"


def test_the_memory_measure_sees_kept_events():
    with ScriptedServer(big_responses_script(10_000)) as server:
        with stream_from_requests(server.get(), kind="responses", read_timeout=30) as stream:
            _, growth = consume(stream, keep=[])
    assert growth > 50_000


def test_stream_peak_bytes_stay_flat():
    head = {"object": "chat.completion.chunk", "id": "c", "model": "m"}
    frame = sse(dict(head, choices=[{"index": 0, "delta": {"content": "tok "}}]))
    events = 10_000

    def body():
        for _ in range(events // 100):
            yield frame * 100
        yield b"data: [DONE]\n\n"

    gc.collect()
    tracemalloc.start()
    try:
        with Stream(body(), kind="chat.completions", accumulate=False) as stream:
            count = sum(1 for _ in stream.text_stream)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert count == events
    # the stream is 1.3 MB; the peak is a few copies of one 13 KB chunk, its frames and one event
    assert len(frame) * events > 1_000_000 and peak < 200_000, f"peak {peak} bytes"
