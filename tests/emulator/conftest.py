"""Raw-HTTP helpers for the emulator's own tests: bare ``requests``, no sail_lite client."""

from __future__ import annotations

import pytest
import requests

MODEL = "moonshotai/Kimi-K2.6"
PLACEHOLDER = "<raw token prompt; ignored when raw_prompt_tokens is set>"


class Api:
    """Speaks to one emulator as one organization, over one keep-alive session."""

    def __init__(self, server, api_key=None):
        self.server = server
        self.session = requests.Session()
        self.session.trust_env = (
            False  # loopback: no proxy settings to read from the environment on every call
        )
        self.session.headers["Authorization"] = "Bearer " + (api_key or server.api_key)

    def __call__(self, method, path, **kwargs):
        kwargs.setdefault("timeout", 30)
        return self.session.request(method, self.server.base_url + path, **kwargs)

    def ok(self, method, path, **kwargs):
        reply = self(method, path, **kwargs)
        assert reply.status_code in (200, 202), (reply.status_code, reply.text)
        return reply.json()

    def wait(self, response_id, timeout=10.0):
        import time

        deadline = time.monotonic() + timeout
        while True:
            body = self.ok("GET", "/responses/" + response_id)
            if body["status"] not in ("queued", "in_progress") or time.monotonic() > deadline:
                return body
            time.sleep(0.01)

    def sample(self, tokens, **fields):
        body = {
            "model": MODEL,
            "input": PLACEHOLDER,
            "raw_prompt_tokens": tokens,
            "max_output_tokens": 16,
            "include": ["message.output_text.logprobs"],
            "metadata": {"completion_window": "asap"},
        }
        body.update(fields)
        return self.ok("POST", "/responses", json=body)

    def close(self):
        self.session.close()


def block(response):
    """The output_text block of a response object (wire.md)."""
    message = [item for item in response["output"] if item["type"] == "message"][0]
    return [b for b in message["content"] if b["type"] == "output_text"][0]


def assert_error_body(reply, status, code=None):
    assert reply.status_code == status, (reply.status_code, reply.text)
    error = reply.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"]
    if code is not None:
        assert error["code"] == code, error
    return error


@pytest.fixture(scope="session")
def emulator_server():
    """The emulator's own tests run against its defaults (today's window catalogue), whatever the
    client tests' session server (tests/conftest.py) is configured with."""
    from sail_lite.emulator import EmulatorServer

    with EmulatorServer(seed=0) as server:
        yield server


@pytest.fixture
def api(emulator):
    client = Api(emulator)
    yield client
    client.close()
