"""Exactly once, nothing hangs, nothing floods memory, nothing leaks: the edges of the request loop."""

from __future__ import annotations

import gzip
import json
import pickle
import random
import threading
import time

import pytest

from sail_lite import Client, RetryPolicy, Timeout
from sail_lite.errors import (
    APIConnectionError,
    APITimeoutError,
    ConfigurationError,
    DeadlineExceededError,
    MalformedResponseError,
    ResponseFailedError,
    ResponseTooLargeError,
    ServerError,
)
from sail_lite.types import Response

from ._scripted import ScriptedServer, respond
from .conftest import FAST_POLL, FAST_RETRY, make_client

MODEL = "moonshotai/Kimi-K2.6"
ASAP_ONLY = "sail-emulator/asap-only"


def Fault(*args, **kwargs):
    from sail_lite.emulator import Fault as EmulatorFault

    return EmulatorFault(*args, **kwargs)


def scripted_client(server, **overrides):
    options = dict(
        base_url=server.base_url, poll=FAST_POLL, retry=FAST_RETRY, rng=random.Random(0), environ={}
    )
    options.update(overrides)
    return Client("sk-test", **options)


def response_json(status, **extra):
    payload = {
        "id": "resp_1",
        "object": "response",
        "status": status,
        "model": MODEL,
        "output": [],
        "metadata": {},
    }
    payload.update(extra)
    return json.dumps(payload).encode()


# --- exactly once ----------------------------------------------------------------------------------


def test_a_keyless_resend_is_never_retried_after_the_server_may_have_acted(emulator):
    with make_client(emulator, sleep=lambda s: None) as client:
        assert client.responses.create(model=ASAP_ONLY, input="hi").status == "completed"
        runs = emulator.stats()["inference_runs"]
        emulator.faults.add(Fault("lose_reply", method="POST", path="/v1/responses", times=1))
        with pytest.raises(APIConnectionError) as info:
            client.responses.create(model=ASAP_ONLY, input="hi again")
        assert info.value.attempts == 1 and info.value.idempotency_key is None
    stats = emulator.stats()
    assert stats["inference_runs"] == runs + 1  # the lost reply's work, and nothing twice
    # The model's asap-only answer was remembered: one rejected POST in all, not one per call.
    assert stats["requests"]["POST /v1/responses"] == 3


def test_a_give_up_carries_the_key_and_resending_with_it_replays(emulator):
    emulator.faults.add(Fault("lose_reply", method="POST", path="/v1/responses", times=3))
    with make_client(emulator, sleep=lambda s: None) as client:
        with pytest.raises(APIConnectionError) as info:
            client.responses.create(model=MODEL, input="hello", background=True)
        key = info.value.idempotency_key
        assert key and key.startswith("sail-lite-") and info.value.attempts == 3
        assert key in str(info.value)
        response = client.responses.create(
            model=MODEL, input="hello", background=True, idempotency_key=key
        )
        assert client.responses.wait(response.id).status == "completed"
    assert emulator.stats()["inference_runs"] == 1


def test_a_sync_create_that_comes_back_unfinished_is_waited_on_and_an_unknown_status_is_logged_once(
    caplog,
):
    polls = []

    def reply(request, connection):
        if request.method == "POST":
            respond(connection, 200, response_json("queued"))
            return
        polls.append(request.path)
        status = "thinking" if len(polls) < 3 else "completed"
        respond(
            connection,
            200,
            response_json(
                status,
                output=[{"type": "message", "content": [{"type": "output_text", "text": "done"}]}],
            ),
        )

    with ScriptedServer(reply) as server, scripted_client(server) as client:
        with caplog.at_level("WARNING", logger="sail_lite"):
            response = client.responses.create(model=MODEL, input="hi")
    assert response.status == "completed" and response.output_text == "done"
    assert len(polls) == 3
    unknown = [r for r in caplog.records if "thinking" in r.getMessage()]
    assert len(unknown) == 1


# --- nothing hangs -----------------------------------------------------------------------------------


def drip(what):
    """A server that sends its reply one byte every 50 ms: headers (``what="headers"``) or body."""
    body = response_json("completed")
    head = (
        f"HTTP/1.1 200 OK\r\nContent-Length: {len(body)}\r\nContent-Type: application/json\r\n\r\n"
    )

    def reply(request, connection):
        slow, fast = (head.encode(), body) if what == "headers" else (b"", head.encode())
        connection.sendall(fast if what == "body" else b"")
        for byte in slow if what == "headers" else body:
            time.sleep(0.05)
            connection.sendall(bytes([byte]))
        if what == "headers":
            connection.sendall(body)

    return reply


@pytest.mark.parametrize("what", ["headers", "body"])
def test_a_dripping_server_cannot_hold_an_attempt_past_its_time_bound(what):
    timeout = Timeout(connect=1.0, read=0.4)
    with ScriptedServer(drip(what)) as server, scripted_client(
        server, timeout=timeout, retry=RetryPolicy(max_retries=0)
    ) as client:
        # Without the bound the drip ends in a complete reply (~10 s): no error at all, so raising proves it.
        with pytest.raises(APITimeoutError) as info:
            client.responses.retrieve("resp_1")
    assert "time bound" in str(info.value)


def test_a_deadline_stops_a_dripping_body_too():
    with ScriptedServer(drip("body")) as server, scripted_client(server) as client:
        with pytest.raises(
            (DeadlineExceededError, APITimeoutError)
        ):  # the drip alone would succeed
            client.responses.retrieve("resp_1", deadline=0.3)


# --- nothing floods memory ---------------------------------------------------------------------------


def test_a_gzip_bomb_is_refused_after_max_response_bytes_decoded():
    bomb = gzip.compress(b"[" + b"0," * (8 * 1024 * 1024) + b"0]", 9)  # ~16 MiB of JSON in ~16 kB
    assert len(bomb) < 100 * 1024

    def reply(request, connection):
        respond(connection, 200, bomb, {"Content-Encoding": "gzip"})

    with ScriptedServer(reply) as server, scripted_client(
        server, max_response_bytes=1024 * 1024
    ) as client:
        with pytest.raises(ResponseTooLargeError) as info:
            client.models.list()
    assert "max_response_bytes=1048576" in str(info.value) and isinstance(
        info.value, MalformedResponseError
    )


@pytest.mark.parametrize("status", [200, 500])
def test_deeply_nested_json_is_a_typed_error(status):
    nested = b"[" * 100000 + b"]" * 100000

    def reply(request, connection):
        respond(connection, status, nested)

    with ScriptedServer(reply) as server, scripted_client(
        server, retry=RetryPolicy(max_retries=0)
    ) as client:
        with pytest.raises(MalformedResponseError if status == 200 else ServerError) as info:
            client.models.list()
    assert info.value.status == status
    if status == 200:
        assert "nested too deeply" in str(info.value)


# --- secrets -----------------------------------------------------------------------------------------

SIGNED = "https://store.example/ckpt.tar?X-Signature=topsecret&Expires=1"


def test_signed_url_queries_never_show_in_a_repr_a_pickle_or_an_error_pickle():
    response = Response.from_dict(
        {
            "id": "resp_9",
            "status": "failed",
            "metadata": {"lora": SIGNED},
            "error": {"message": "could not download " + SIGNED, "code": "lora_load_failed"},
        }
    )
    assert response.metadata["lora"] == SIGNED  # the value stays reachable for code that needs it
    assert "topsecret" not in repr(response) and "topsecret" not in str(response)
    clone = pickle.loads(pickle.dumps(response))
    assert "topsecret" not in json.dumps(clone.raw) and clone.metadata["lora"].startswith(
        "https://store.example/"
    )
    assert "topsecret" not in json.dumps(response.redacted())
    from sail_lite.resources.responses import check_result

    with pytest.raises(ResponseFailedError) as info:
        check_result(response)
    assert "topsecret" not in str(info.value)
    assert b"topsecret" not in pickle.dumps(info.value)


def test_an_api_key_that_cannot_be_a_header_is_refused_without_echoing_it():
    with pytest.raises(ConfigurationError) as info:
        Client("sk_abc\nInjected: yes", environ={})
    assert "sk_abc" not in str(info.value) and "header" in str(info.value)
    with pytest.raises(ConfigurationError):
        Client("sk_ключ", environ={})
    with pytest.raises(ConfigurationError):
        Client(5, environ={})  # type: ignore[arg-type]


def test_a_call_starts_no_thread_and_none_outlives_the_client():
    # The wall-clock bound needs no watchdog thread: the reads themselves are bounded.
    def reply(request, connection):
        respond(connection, 200, b'{"object": "list", "data": []}')

    def client_threads():  # the scripted server's own thread per connection runs _serve
        return {t for t in threading.enumerate() if "_serve" not in t.name}

    with ScriptedServer(reply) as server:
        before = client_threads()
        with scripted_client(server) as client:
            assert client.models.list() == []
            assert client_threads() - before == set()
    assert client_threads() - before == set()


@pytest.mark.parametrize(
    "command",
    [
        ["responses", "get", "resp_1"],
        ["responses", "wait", "resp_1"],
        ["responses", "cancel", "resp_1"],
    ],
)
def test_the_cli_json_output_redacts_signed_urls(command, capsys):
    from sail_lite.cli import main

    def reply(request, connection):
        respond(connection, 200, response_json("completed", metadata={"lora": SIGNED}))

    with ScriptedServer(reply) as server:
        code = main(["--api-key", "sk-test", "--base-url", server.base_url] + command + ["--json"])
    out = capsys.readouterr().out
    assert code == 0 and "store.example/ckpt.tar?<redacted>" in out and "topsecret" not in out
