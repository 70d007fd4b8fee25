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
        model=MODEL,
        input="What is 2+3?",
        background=True,
        max_output_tokens=10,
        metadata={"completion_window": "balanced"},
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
        model=MODEL,
        input=PLACEHOLDER,
        raw_prompt_tokens=[72, 105, 33],
        max_output_tokens=6,
        background=True,
        include=["message.output_text.logprobs"],
        metadata={"completion_window": "balanced"},
    )
    done = poll(sail.inference.responses.retrieve, created["id"])
    block = [item for item in done["output"] if item["type"] == "message"][0]["content"][0]
    assert len(block["token_ids"]) == len(block["logprobs"]) >= 1
    assert all(entry["logprob"] <= 0.0 for entry in block["logprobs"])
    assert done["usage"]["input_tokens"] == 3


def test_idempotency_key_replays_instead_of_running_again(sail, emulator):
    key = str(uuid.uuid4())
    body = dict(
        model=MODEL, input="once", background=True, metadata={"completion_window": "balanced"}
    )
    first = sail.inference.responses.create(headers={"Idempotency-Key": key}, **body)
    second = sail.inference.responses.create(headers={"Idempotency-Key": key}, **body)
    assert first["id"] == second["id"]
    assert emulator.stats()["inference_runs"] == 1


def test_http_errors_are_the_sdks_typed_errors(sail, emulator, monkeypatch):
    with pytest.raises(sail.InferenceHTTPError) as missing:
        sail.inference.responses.retrieve("resp_missing")
    assert missing.value.status_code == 404
    with pytest.raises(sail.InferenceHTTPError) as bad:
        sail.inference.responses.create(
            model=MODEL, input="x", metadata={"completion_window": "flex"}
        )
    assert bad.value.status_code == 400 and "background" in str(bad.value)
    monkeypatch.setenv("SAIL_API_KEY", "sk-wrong")
    sail.reset_transports()
    with pytest.raises(sail.InferenceHTTPError) as denied:
        sail.inference.responses.retrieve("resp_missing")
    assert denied.value.status_code == 401


# -- the official completer and sail_lite's, constructed alike, send the same request ---------------------

COMPLETER_CASES = [
    ("defaults", dict(), None),
    (
        "options",
        dict(temperature=0.5, top_p=0.9, completion_window="flex", metadata={"team": "rl"}),
        [3, 4],
    ),
    ("no logprobs, int stop", dict(request_logprobs=False, timeout=30.0, poll_timeout=60.0), 7),
    ("string stop", dict(completion_window="standard"), "\n\n"),
    ("empty stop", dict(), []),
    (
        "tinker checkpoint",
        dict(adapter_config={"r": 8, "peft_type": "LORA"}, tinker_lora_name="rl-step-3"),
        ["a"],
    ),
]


@pytest.mark.parametrize(
    "kwargs, stop", [c[1:] for c in COMPLETER_CASES], ids=[c[0] for c in COMPLETER_CASES]
)
def test_both_completers_send_the_same_request(kwargs, stop, monkeypatch, tmp_path):
    """The same keyword arguments to sail.tinker.SailTokenCompleter and sail_lite's: the same body arrives."""
    import asyncio
    import json

    # tinker-cookbook is the Tinker tier's (CI runs this test there, with SAIL_REQUIRE_FIDELITY=1).
    tinker = pytest.importorskip("tinker")
    pytest.importorskip("tinker_cookbook")
    sdk = require("sail.tinker", "sail-sdk")
    from sail_lite import SailTokenCompleter
    from sail_lite.adapters import make_adapter
    from sail_lite.emulator import EmulatorServer

    from ..conftest import make_client

    instant = {
        "asap": 0,
        "priority": 0,
        "standard": 0,
        "flex": 0,
    }  # the SDK polls every 20 s: be done at once
    with EmulatorServer(turn_times=instant) as server, make_client(server) as client:
        monkeypatch.setenv("SAIL_API_KEY", server.api_key)
        monkeypatch.setenv("SAIL_API_URL", server.url)
        sdk_module = require("sail", "sail-sdk")
        sdk_module.reset_transports()
        try:
            options = dict(model=MODEL, max_tokens=6, **kwargs)
            if "adapter_config" in options:
                folder = make_adapter(tmp_path / "ckpt", rank=8)
                options["tinker_lora_signed_url"] = server.publish_tinker_checkpoint(folder)
                with open(folder + "/adapter_config.json") as handle:
                    options["adapter_config"] = json.load(handle)
            prompt = tinker.ModelInput.from_ints([72, 105, 33])
            theirs = asyncio.run(sdk.SailTokenCompleter(**options)(prompt, stop))
            ours = asyncio.run(SailTokenCompleter(client=client, **options)(prompt, stop))
        finally:
            sdk_module.reset_transports()
        first, second = sorted(server.state.responses.values(), key=lambda r: r.created_at)
        # The emulator's fingerprint is a digest of the canonical JSON of the whole body.
        assert first.params == second.params
        assert first.params.fingerprint == second.params.fingerprint
        assert list(theirs.tokens) == list(ours.tokens)
        assert (theirs.maybe_logprobs is None) == (ours.maybe_logprobs is None)
        assert theirs.maybe_logprobs is None or theirs.maybe_logprobs == pytest.approx(
            ours.maybe_logprobs
        )
        assert theirs.stop_reason == ours.stop_reason
