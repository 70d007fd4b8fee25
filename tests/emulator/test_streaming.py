"""Server-sent events for stream: true on /v1/responses, /v1/chat/completions and /v1/messages."""

from __future__ import annotations

import json
import threading

import pytest
import requests

from sail_lite.emulator import EmulatorServer, Fault

from .conftest import MODEL, Api, assert_error_body


def events(reply):
    """(event name, data) pairs of an SSE reply, comments as ("comment", text)."""
    assert reply.status_code == 200, reply.text
    assert reply.headers["Content-Type"].startswith("text/event-stream")
    out, name, data = [], None, []
    for line in reply.iter_lines(decode_unicode=True):
        if line.startswith(":"):
            out.append(("comment", line[1:].strip()))
        elif line.startswith("event:"):
            name = line[6:].strip()
        elif line.startswith("data:"):
            data.append(line[5:].strip())
        elif line == "" and data:
            text = "\n".join(data)
            out.append((name, text if text == "[DONE]" else json.loads(text)))
            name, data = None, []
    return out


def post(api, path, body, **kwargs):
    return api("POST", path, json=body, stream=True, **kwargs)


def test_responses_stream_token_by_token_and_end_with_the_whole_object(api, emulator):
    body = {"model": MODEL, "input": "hello", "max_output_tokens": 12, "stream": True}
    got = events(post(api, "/responses", body))
    kinds = [data["type"] for _, data in got]
    assert kinds[:4] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
    ]
    assert kinds[-4:] == [
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert [data["sequence_number"] for _, data in got] == list(range(len(got)))
    deltas = [data["delta"] for _, data in got if data["type"] == "response.output_text.delta"]
    final = got[-1][1]["response"]
    assert final["status"] == "completed"
    text = final["output"][0]["content"][0]["text"]
    assert "".join(deltas) == text and len(deltas) == len(text)
    # the same request without stream gives the same object, as GET does
    assert api.ok("GET", "/responses/" + final["id"])["output"] == final["output"]
    assert emulator.stats()["inference_runs"] == 1


def test_chat_stream_ends_with_done_and_a_usage_chunk_when_asked(api):
    body = {
        "model": MODEL,
        "messages": [{"role": "user", "content": "hi"}],
        "max_completion_tokens": 8,
        "temperature": 0,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    got = events(post(api, "/chat/completions", body))
    assert got[-1] == (None, "[DONE]")
    usage = got[-2][1]
    assert usage["choices"] == [] and usage["usage"]["completion_tokens"] >= 1
    chunks = [data for _, data in got[:-2]]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert chunks[-1]["choices"][0]["finish_reason"] in ("stop", "length")
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks)
    plain = dict(body, stream=False)
    del plain["stream_options"]
    assert (
        text == api.ok("POST", "/chat/completions", json=plain)["choices"][0]["message"]["content"]
    )


def test_messages_stream_has_anthropic_events_in_order(api):
    body = {
        "model": MODEL,
        "max_tokens": 8,
        "messages": [{"role": "user", "content": "hi"}],
        "temperature": 0,
        "stream": True,
    }
    got = events(post(api, "/messages", body))
    names = [name for name, _ in got]
    assert names[0] == "message_start" and names[-1] == "message_stop"
    assert names[1] == "content_block_start" and names[-3:-1] == [
        "content_block_stop",
        "message_delta",
    ]
    assert all(name == data["type"] for name, data in got)
    assert got[0][1]["message"]["content"] == []
    text = "".join(d["delta"]["text"] for n, d in got if n == "content_block_delta")
    assert text == api.ok("POST", "/messages", json=dict(body, stream=False))["content"][0]["text"]


def test_long_turns_are_kept_alive_with_pings():
    with EmulatorServer(turn_times={"balanced": 0.5}, stream_ping_interval=0.05) as server:
        api = Api(server)
        try:
            body = {"model": MODEL, "max_tokens": 4, "messages": [{"role": "user", "content": "x"}]}
            body.update(stream=True, metadata={"completion_window": "balanced"})
            got = events(post(api, "/messages", body))
            assert ("ping", {"type": "ping"}) in got and got[-1][0] == "message_stop"
            body = {"model": MODEL, "input": "x", "stream": True, "max_output_tokens": 2}
            body["metadata"] = {"completion_window": "balanced"}
            got = events(post(api, "/responses", body))
            assert ("comment", "ping") in got and got[-1][1]["type"] == "response.completed"
        finally:
            api.close()


@pytest.mark.parametrize("path", ["/responses"])
def test_stream_with_background_is_400(api, path):
    body = {"model": MODEL, "input": "x", "stream": True, "background": True}
    body["metadata"] = {"completion_window": "balanced"}
    assert_error_body(api("POST", path, json=body), 400)


def test_the_connection_is_kept_after_a_stream(api, emulator):
    body = {"model": MODEL, "input": "x", "max_output_tokens": 3, "stream": True}
    for _ in range(3):
        events(post(api, "/responses", body))
    assert api.ok("GET", "/models")["object"] == "list"
    assert emulator.stats()["connections"] == 1


def test_a_stopping_server_ends_a_stream_with_an_error_event():
    server = EmulatorServer(turn_times={"balanced": 30}, stream_ping_interval=0.05).start()
    api = Api(server)
    got = []

    def run():
        body = {"model": MODEL, "input": "x", "stream": True}
        body["metadata"] = {"completion_window": "balanced"}
        try:
            got.extend(events(post(api, "/responses", body)))
        except requests.RequestException as exc:
            got.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    try:
        import time

        deadline = time.monotonic() + 10
        while not server.stats()["inference_runs"] and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        server.stop()
        thread.join(10)
        api.close()
    assert got and got[-1][1]["type"] == "error" and got[-1][1]["code"] == "server_stopping"


def test_a_truncate_fault_cuts_a_stream_halfway(api, emulator):
    emulator.faults.add(Fault("truncate", path="/v1/chat/completions", times=1))
    body = {"model": MODEL, "messages": [{"role": "user", "content": "x"}], "stream": True}
    with pytest.raises(requests.exceptions.ChunkedEncodingError):
        events(post(api, "/chat/completions", body))
