"""The official ``sail`` SDK (sail-sdk on PyPI) against the emulator via ``SAIL_API_URL``."""
from __future__ import annotations

import uuid

import pytest

from .conftest import poll, require

MODEL = "moonshotai/Kimi-K2.6"
PLACEHOLDER = "<raw token prompt; ignored when raw_prompt_tokens is set>"


@pytest.fixture
def sail(emulator, monkeypatch):
    module = require("sail", "sail-sdk")
    monkeypatch.setenv("SAIL_API_KEY", emulator.api_key)
    monkeypatch.setenv("SAIL_API_URL", emulator.url)
    module.reset_transports()  # the SDK resolves its configuration once per process
    yield module
    monkeypatch.undo()
    module.reset_transports()


def test_background_response_create_and_retrieve(sail, emulator):
    created = sail.inference.responses.create(
        model=MODEL, input="What is 2+3?", background=True, max_output_tokens=10,
        metadata={"completion_window": "priority"},
    )
    assert isinstance(created, dict)
    assert created["status"] in ("queued", "in_progress")
    done = poll(sail.inference.responses.retrieve, created["id"])
    assert done["status"] == "completed"
    message = [item for item in done["output"] if item["type"] == "message"][0]
    assert message["content"][0]["type"] == "output_text"
    assert 1 <= done["usage"]["output_tokens"] <= 10
    assert emulator.stats()["inference_runs"] == 1


def test_raw_token_sampling_returns_token_ids_and_logprobs(sail):
    created = sail.inference.responses.create(
        model=MODEL, input=PLACEHOLDER, raw_prompt_tokens=[72, 105, 33], max_output_tokens=6, background=True,
        include=["message.output_text.logprobs"], metadata={"completion_window": "priority"},
    )
    done = poll(sail.inference.responses.retrieve, created["id"])
    block = [item for item in done["output"] if item["type"] == "message"][0]["content"][0]
    assert len(block["token_ids"]) == len(block["logprobs"]) >= 1
    assert all(entry["logprob"] <= 0.0 for entry in block["logprobs"])
    assert done["usage"]["input_tokens"] == 3


def test_idempotency_key_replays_instead_of_running_again(sail, emulator):
    key = str(uuid.uuid4())
    body = dict(model=MODEL, input="once", background=True, metadata={"completion_window": "priority"})
    first = sail.inference.responses.create(headers={"Idempotency-Key": key}, **body)
    second = sail.inference.responses.create(headers={"Idempotency-Key": key}, **body)
    assert first["id"] == second["id"]
    assert emulator.stats()["inference_runs"] == 1


def test_http_errors_are_the_sdks_typed_errors(sail, emulator, monkeypatch):
    with pytest.raises(sail.InferenceHTTPError) as missing:
        sail.inference.responses.retrieve("resp_missing")
    assert missing.value.status_code == 404
    with pytest.raises(sail.InferenceHTTPError) as bad:
        sail.inference.responses.create(model=MODEL, input="x", metadata={"completion_window": "flex"})
    assert bad.value.status_code == 400 and "background" in str(bad.value)
    monkeypatch.setenv("SAIL_API_KEY", "sk-wrong")
    sail.reset_transports()
    with pytest.raises(sail.InferenceHTTPError) as denied:
        sail.inference.responses.retrieve("resp_missing")
    assert denied.value.status_code == 401
