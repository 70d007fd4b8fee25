"""The client at the edges (issue 20): secrets echoed by a server, odd replies, network failures
in words, a base URL without /v1, and constructor arguments that must fail typed, at the call."""

from __future__ import annotations

import json
import math
import pickle
import socket

import pytest

from sail_lite import Client, RetryPolicy
from sail_lite._redact import redact_url
from sail_lite.errors import (
    APIConnectionError,
    ConfigurationError,
    MalformedResponseError,
    NotFoundError,
    SailError,
    ServerError,
)

from ._scripted import ScriptedServer, respond
from .conftest import FAST_POLL, make_client

KEY = "sk_hostile_SECRET_0123456789"
MODEL = "moonshotai/Kimi-K2.6"


def _client(server, **overrides):
    options = dict(base_url=server.base_url, environ={}, sleep=lambda s: None, poll=FAST_POLL)
    options.update(overrides)
    return Client(KEY, **options)


def _everything_shown(error: SailError) -> str:
    return " ".join([str(error), repr(error), error.message, repr(pickle.dumps(error))])


@pytest.mark.parametrize(
    "status, body",
    [
        (401, {"error": {"message": f"bad key Bearer {KEY}", "code": KEY, "param": KEY}}),
        (403, {"error": {"message": f"key {KEY!r} may not", "type": f"x{KEY}"}}),
        (500, f"<html>upstream said Authorization: Bearer {KEY}</html>"),
        (502, {"error": {"message": "a " + json.dumps(KEY)[1:-1] + " b"}}),
    ],
)
def test_the_api_key_never_shows_even_when_the_server_echoes_it(status, body):
    raw = body.encode() if isinstance(body, str) else json.dumps(body).encode()

    def reply(request, connection):
        respond(connection, status, raw)

    with ScriptedServer(reply) as server, _client(server, retry=RetryPolicy(max_retries=0)) as c:
        with pytest.raises(SailError) as caught:
            c.models.list()
    assert caught.value.status == status
    assert KEY not in _everything_shown(caught.value)
    assert "SECRET" not in _everything_shown(caught.value)


def test_a_non_string_status_is_malformed_at_once_not_polled():
    polls = []

    def reply(request, connection):
        if request.method == "GET":
            polls.append(request.path)
        body = {"id": "resp_1", "object": "response", "status": 5, "model": MODEL, "output": []}
        respond(connection, 200, json.dumps(body).encode())

    with ScriptedServer(reply) as server, _client(server) as c:
        with pytest.raises(MalformedResponseError, match="status"):
            c.responses.create(model=MODEL, input="hi", deadline=2)  # today: polled until then
        with pytest.raises(MalformedResponseError, match="status"):
            c.responses.retrieve("resp_1")
    assert len(polls) == 1  # the retrieve; the create was not polled


@pytest.mark.parametrize(
    "text",
    [
        "Error: (is it a sail_lite journal? run sail-lite jobs status)",
        "what? why? 2+2?",
        "is it done?yes",
    ],
)
def test_redaction_keeps_ordinary_text(text):
    assert redact_url(text) == text


@pytest.mark.parametrize(
    "text, shown",
    [
        (
            "GET https://s.example/a.tar?X-Sig=abc failed",
            "GET https://s.example/a.tar?<redacted> failed",
        ),
        ("GET /v1/models?key=abc reset", "GET /v1/models?<redacted> reset"),
        ("url='http://h/p?sig=1'", "url='http://h/p?<redacted>'"),
    ],
)
def test_redaction_still_hides_url_queries(text, shown):
    assert redact_url(text) == shown


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


INTERNALS = ("NewConnectionError", "HTTPConnection", "MaxRetryError", "urllib3", "object at 0x")


def test_a_refused_connection_says_so_in_words():
    port = _free_port()
    with Client("k", base_url=f"http://127.0.0.1:{port}/v1", environ={}, sleep=lambda s: None) as c:
        with pytest.raises(APIConnectionError) as caught:
            c.models.list()
    text = str(caught.value)
    assert "connection refused" in text and not any(name in text for name in INTERNALS)
    assert "timed out" not in text
    assert caught.value.attempts == 3 and caught.value.request_sent is False  # refused: retried


def test_a_name_that_does_not_resolve_says_so_and_is_not_retried():
    sleeps = []
    with Client(
        "k", base_url="http://no-such-host.invalid/v1", environ={}, sleep=sleeps.append
    ) as c:
        with pytest.raises(APIConnectionError) as caught:
            c.models.list()
    text = str(caught.value)
    assert "cannot resolve host" in text and "no-such-host.invalid" in text
    assert not any(name in text for name in INTERNALS) and "timed out" not in text
    assert caught.value.attempts == 1 and sleeps == []


def test_a_base_url_without_v1_hints_at_it(emulator):
    with make_client(emulator, base_url=emulator.url) as client:
        with pytest.raises(NotFoundError) as caught:
            client.models.list()
    assert "/v1" in str(caught.value) and emulator.url + "/v1" in str(caught.value)


def test_a_404_under_v1_has_no_hint(client):
    with pytest.raises(NotFoundError) as caught:
        client.responses.retrieve("resp_nope")
    assert "did you mean" not in str(caught.value)


def test_a_server_error_under_v1_is_unchanged(emulator):
    from sail_lite.emulator import Fault

    emulator.faults.add(Fault("error", method="GET", path="/v1/models", status=500, times=5))
    with make_client(emulator, sleep=lambda s: None) as client:
        with pytest.raises(ServerError):
            client.models.list()


BAD_ARGUMENTS = [
    dict(timeout=-1),
    dict(timeout=math.nan),
    dict(timeout=math.inf),
    dict(timeout=0),
    dict(timeout="5"),
    dict(timeout=True),
    dict(api_key="sk\x00abc"),
    dict(api_key="sk\ud800abc"),
    dict(base_url="http://127.0.0.1:1/v1\x00"),
    dict(base_url="http://127.0.0.1:1/\ud800/v1"),
    dict(base_url=b"http://127.0.0.1:1/v1"),
    dict(base_url="http://127.0.0.1:abc/v1"),
    dict(base_url="http://[::1/v1"),
    dict(verify="ca\ud800.pem"),
    dict(verify=b"/etc/ssl"),
    dict(proxies={"http": "http://127.0.0.1:1\x00"}),
    dict(proxies={"http": "http://\ud800:1"}),
    dict(proxies={"http": "not a url"}),
    dict(proxies={"ftp": 5}),
    dict(max_workers=0),
    dict(max_workers=2.5),
    dict(max_response_bytes=-1),
    dict(max_response_bytes=math.inf),
    dict(environ={"SAIL_API_KEY": 5}),
    dict(environ={"SAIL_BASE_URL": "http://h/v1\x00"}),
    dict(retry="3"),
    dict(poll=1),
    dict(sleep=None),
    dict(clock="now"),
    dict(rng=3),
]


@pytest.mark.parametrize("options", BAD_ARGUMENTS, ids=[repr(o)[:60] for o in BAD_ARGUMENTS])
def test_bad_constructor_arguments_raise_configuration_error_at_the_call(options):
    options = dict(options)
    key = options.pop("api_key", "sk-test")
    with pytest.raises(ConfigurationError) as caught:
        Client(key, **{"environ": {}, **options})
    assert "\x00" not in str(caught.value) and "sk\ud800" not in str(caught.value)
    str(caught.value).encode("utf-8")  # printable: no lone surrogate in the message
