"""Streaming through the client (issue 23): create(stream=True) on the three endpoints, against the emulator.

Each path over loopback: typed events, ``.text_stream`` and the final object; a non-2xx reply and a
failure before the first byte (retried under the same key); a stream cut mid-way (``truncate``), a gap
longer than the read timeout and a deadline, each a typed error and never a retry once events have
flowed (the emulator counts the creates); an ``error`` event; leaving the block early and a real
SIGINT close the connection (the emulator's open connections say so). No timing is asserted:
``wait_for`` only bounds a wait that would otherwise hang a broken build.
"""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import sail_lite
from sail_lite import (
    APIConnectionError,
    APITimeoutError,
    AuthenticationError,
    ChatCompletionChunk,
    DeadlineExceededError,
    InvalidRequestError,
    MessageStreamEvent,
    ResponseStreamEvent,
    ServerError,
    Stream,
)
from sail_lite.emulator import EmulatorServer, Fault

from .conftest import make_client

ROOT = Path(__file__).resolve().parent.parent
MODEL = "moonshotai/Kimi-K2.6"
USER = [{"role": "user", "content": "Say hi"}]
ENDPOINTS = ("responses", "chat", "messages")
ROUTES = {
    "responses": "POST /v1/responses",
    "chat": "POST /v1/chat/completions",
    "messages": "POST /v1/messages",
}
EVENT_TYPES = {
    "responses": ResponseStreamEvent,
    "chat": ChatCompletionChunk,
    "messages": MessageStreamEvent,
}


def create(client, endpoint, tokens=12, **options):
    if endpoint == "responses":
        return client.responses.create(
            model=MODEL, input="Say hi", max_output_tokens=tokens, **options
        )
    if endpoint == "chat":
        return client.chat.completions.create(
            model=MODEL, messages=USER, max_completion_tokens=tokens, **options
        )
    return client.messages.create(model=MODEL, max_tokens=tokens, messages=USER, **options)


def final_text(endpoint, final):
    if endpoint == "responses":
        return final.output_text
    if endpoint == "chat":
        return final.choices[0].content
    return final.text


def wait_for(predicate, what, bound=15.0):
    """Return once ``predicate()`` holds; fail after ``bound`` seconds (a hang guard, not a timing check)."""
    give_up = time.monotonic() + bound
    while not predicate():
        if time.monotonic() > give_up:
            pytest.fail(f"never happened: {what}")
        time.sleep(0.01)


@pytest.fixture(scope="module")
def slow_server():
    # A token every quarter second: a stream lasts long enough to be left, interrupted or timed out.
    with EmulatorServer(seed=0, stream_token_interval=0.25) as server:
        yield server


@pytest.fixture
def slow(slow_server):
    slow_server.reset()
    wait_for(lambda: slow_server.open_connections == 0, "the previous test's connections closed")
    yield slow_server
    slow_server.stream_token_interval = 0.25


# ---------------------------------------------------------------- each path, each endpoint


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_stream_yields_typed_events_text_and_the_final_object(client, emulator, endpoint):
    with create(client, endpoint, stream=True) as stream:
        assert isinstance(stream, Stream)
        first = next(stream)
        assert isinstance(first, EVENT_TYPES[endpoint])
        text = "".join(stream.text_stream)
        final = stream.final()
    assert stream.closed and stream.done
    assert text and final_text(endpoint, final) == text
    assert emulator.stats()["inference_runs"] == 1


def test_sdk_names_for_the_final_object(client):
    with create(client, "responses", stream=True) as stream:
        assert stream.get_final_response().status == "completed"
    with create(client, "chat", stream=True) as stream:
        assert stream.get_final_completion().choices[0].finish_reason == "length"
    with create(client, "messages", stream=True) as stream:
        assert stream.get_final_message().stop_reason in ("max_tokens", "end_turn")


def test_chat_stream_options_are_passed_through(client):
    with create(client, "chat", tokens=6, stream=True, stream_options={"include_usage": True}) as s:
        chunks = list(s)
        final = s.final()
    assert chunks[-1].choices == () and chunks[-1].usage.output_tokens == 6
    assert final.usage is not None and final.usage.output_tokens == 6
    with create(client, "chat", tokens=6, stream=True) as s:
        assert all(chunk.usage is None for chunk in s)


@pytest.mark.parametrize(
    "options, message",
    [
        ({"background": True, "stream": True}, "background request cannot stream"),
        ({"stream": "yes"}, "stream must be True or False"),
        ({"extra_body": {"stream": True}}, "not in extra_body"),
    ],
)
def test_bad_stream_requests_are_refused_before_sending(client, emulator, options, message):
    with pytest.raises(InvalidRequestError, match=message):
        create(client, "responses", **options)
    assert emulator.stats()["requests"] == {}


def test_stream_options_without_stream_are_refused(client, emulator):
    with pytest.raises(InvalidRequestError, match="only with stream=True"):
        create(client, "chat", stream_options={"include_usage": True})
    with pytest.raises(InvalidRequestError, match="must be a mapping"):
        create(client, "chat", stream=True, stream_options=["include_usage"])
    assert emulator.stats()["requests"] == {}


# ---------------------------------------------------------------- before the first byte


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_failure_before_the_first_byte_is_retried_under_the_same_key(client, emulator, endpoint):
    route = ROUTES[endpoint]
    emulator.faults.add(Fault("error", method="POST", path=route.split()[1], status=503, times=1))
    emulator.faults.add(Fault("drop", method="POST", path=route.split()[1], times=1))
    with create(client, endpoint, stream=True) as stream:
        text = "".join(stream.text_stream)
    stats = emulator.stats()
    assert text and stats["requests"][route] == 3
    assert stats["inference_runs"] == 1
    assert list(stats["inference_runs_by_idempotency_key"].values()) == [1]


def test_caller_key_is_sent_on_a_streamed_create(client, emulator):
    emulator.faults.add(Fault("error", method="POST", path="/v1/messages", status=529, times=1))
    with create(client, "messages", stream=True, idempotency_key="my-key-1") as stream:
        stream.until_done()
    assert emulator.stats()["inference_runs_by_idempotency_key"] == {"my-key-1": 1}


def test_non_2xx_reply_is_the_usual_typed_error(emulator):
    with make_client(emulator, api_key="sk-wrong") as client:
        with pytest.raises(AuthenticationError) as caught:
            create(client, "responses", stream=True)
    assert caught.value.status == 401
    emulator.faults.add(Fault("error", method="POST", path="/v1/chat/completions", status=503))
    with make_client(emulator) as client:
        with pytest.raises(ServerError) as caught:
            create(client, "chat", stream=True)
    assert caught.value.attempts == client.retry.max_attempts and caught.value.idempotency_key


# ---------------------------------------------------------------- after the first byte: never retried


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_stream_cut_midway_is_a_typed_error_and_not_retried(client, emulator, endpoint):
    route = ROUTES[endpoint]
    emulator.faults.add(Fault("truncate", method="POST", path=route.split()[1], times=3))
    stream = create(client, endpoint, tokens=40, stream=True)
    seen = []
    with pytest.raises(APIConnectionError, match="stream"):
        with stream:
            for event in stream:
                seen.append(event)
    assert seen and stream.closed
    stats = emulator.stats()
    assert stats["requests"][route] == 1 and stats["inference_runs"] == 1


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_gap_longer_than_the_read_timeout_is_a_timeout_and_not_retried(slow, endpoint):
    slow.stream_token_interval = 3.0  # seconds between two tokens; the read timeout is 0.5
    with make_client(slow) as client:
        stream = create(client, endpoint, tokens=40, stream=True, timeout=0.5)
        with pytest.raises(APITimeoutError, match="read timeout"):
            with stream:
                for _ in stream:
                    pass
        assert stream.closed
    assert slow.stats()["requests"][ROUTES[endpoint]] == 1


def test_deadline_ends_a_long_stream(slow):
    with make_client(slow) as client:
        stream = create(client, "chat", tokens=400, stream=True, deadline=2.0)
        with pytest.raises(DeadlineExceededError, match="deadline"):
            with stream:
                for _ in stream:
                    pass
    assert slow.stats()["requests"][ROUTES["chat"]] == 1


def test_error_event_becomes_a_typed_error():
    server = EmulatorServer(seed=0, stream_token_interval=0.25).start()
    try:
        with make_client(server) as client:
            stream = create(client, "messages", tokens=400, stream=True)
            with pytest.raises(ServerError) as caught:
                with stream:
                    for event in stream:
                        if event.type == "content_block_delta":
                            threading.Thread(target=server.stop).start()
    finally:
        server.stop()
    assert "the emulator is stopping" in str(caught.value) and stream.closed


# ---------------------------------------------------------------- closing


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_leaving_the_block_early_closes_the_connection(slow, endpoint):
    with make_client(slow) as client:
        with create(client, endpoint, tokens=400, stream=True) as stream:
            text = next(iter(stream.text_stream))
        assert text and stream.closed
        wait_for(lambda: slow.open_connections == 0, "the emulator saw the stream's connection go")
        # the client goes on working after a stream it left
        assert final_text("responses", create(client, "responses", tokens=3))


@pytest.mark.skipif(os.name != "posix", reason="SIGINT to a child process")
def test_ctrl_c_while_iterating_closes_the_stream(slow):
    process = subprocess.Popen(
        [sys.executable, "-m", "tests._stream_interrupt_worker", slow.base_url, slow.api_key],
        cwd=str(ROOT),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        lines = [process.stdout.readline() for _ in range(2)]
        assert all(line.startswith("delta") for line in lines), process.stderr.read()
        process.send_signal(signal.SIGINT)
        assert process.stdout.readline().strip() == "interrupted closed=True"
        # the process is still alive (waiting on stdin): the connection was closed by the stream
        wait_for(lambda: slow.open_connections == 0, "the emulator saw the stream's connection go")
        assert process.poll() is None
        _, err = process.communicate("\n", timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == -signal.SIGINT and "KeyboardInterrupt" in err


def test_stream_names_are_public():
    names = {"Stream", "ResponseStreamEvent", "ChatCompletionChunk", "MessageStreamEvent"}
    assert names <= set(sail_lite.__all__)
    from sail_lite import streaming

    assert all(getattr(sail_lite, name) is getattr(streaming, name) for name in names)


# ---------------------------------------------------------------- sail-lite chat --stream


class Recorder(io.StringIO):
    """A terminal stand-in: what was written between two flushes."""

    def __init__(self) -> None:
        super().__init__()
        self.flushed = []
        self._mark = 0

    def flush(self) -> None:
        text = self.getvalue()
        self.flushed.append(text[self._mark :])
        self._mark = len(text)


def test_cli_chat_stream_flushes_each_delta(emulator):
    from sail_lite.cli import main

    base = ["--api-key", emulator.api_key, "--base-url", emulator.base_url, "chat"]
    out, err = Recorder(), io.StringIO()
    argv = base + ["--model", MODEL, "--max-tokens", "9", "--window", "asap", "--stream", "hi"]
    assert main(argv, out=out, err=err, environ={}) == 0, err.getvalue()
    assert out.getvalue() == "".join(out.flushed) + "\n"  # nothing was left unflushed
    assert len(out.flushed) == 9 and all(out.flushed)  # one flush per delta, each a delta
    assert emulator.stats()["requests"]["POST /v1/chat/completions"] == 1


def test_cli_chat_without_stream_and_stream_json(emulator):
    from sail_lite.cli import main

    base = [
        "--api-key",
        emulator.api_key,
        "--base-url",
        emulator.base_url,
        "chat",
        "--model",
        MODEL,
    ]
    out = io.StringIO()
    assert main(base + ["--max-tokens", "5", "hi"], out=out, err=io.StringIO(), environ={}) == 0
    assert out.getvalue().endswith("\n") and len(out.getvalue()) > 1
    out = io.StringIO()
    argv = base + ["--max-tokens", "5", "--stream", "--json", "hi"]
    assert main(argv, out=out, err=io.StringIO(), environ={}) == 0
    chunks = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [c["object"] for c in chunks] == ["chat.completion.chunk"] * len(chunks)
    assert len(chunks) == 1 + 5 + 1  # the role chunk, one per token, the finish chunk


def test_headers_that_never_come_are_bounded_by_the_read_timeout_and_retried(emulator):
    emulator.faults.add(Fault("delay", method="POST", path="/v1/messages", delay=3.0, times=2))
    retry = sail_lite.RetryPolicy(max_retries=1, initial_delay=0.01, max_delay=0.01)
    with make_client(emulator, retry=retry) as client:
        with pytest.raises(APITimeoutError) as caught:
            create(client, "messages", stream=True, timeout=0.5)
    assert caught.value.attempts == 2 and caught.value.idempotency_key
