"""The official ``openai`` SDK against the emulator, unmodified: base_url and api_key only."""

from __future__ import annotations

import io

import pytest

from sail_lite.emulator.faults import Fault

from .conftest import poll, require

MODEL = "moonshotai/Kimi-K2.6"


@pytest.fixture(scope="module")
def openai():
    return require("openai", "openai")


@pytest.fixture(scope="module")
def module_sdk(openai, emulator_server):
    # One client for the module, as an application holds one: each new one builds a TLS context (about
    # 40 ms of CPU) that no test here uses.
    client = openai.OpenAI(
        api_key=emulator_server.api_key, base_url=emulator_server.base_url, max_retries=2
    )
    yield client
    client.close()


@pytest.fixture
def sdk(module_sdk, emulator):
    return module_sdk


def test_background_response_is_created_then_retrieved_to_completion(sdk, emulator):
    created = sdk.responses.create(
        model=MODEL,
        input="What is 2+3?",
        background=True,
        max_output_tokens=12,
        metadata={"completion_window": "balanced"},
    )
    assert created.status in ("queued", "in_progress")
    assert created.id.startswith("resp_")
    done = poll(sdk.responses.retrieve, created.id)
    assert done.status == "completed"
    assert done.output_text and all(ch.isprintable() or ch == "\n" for ch in done.output_text)
    assert 1 <= done.usage.output_tokens <= 12
    assert done.usage.total_tokens == done.usage.input_tokens + done.usage.output_tokens
    assert emulator.stats()["inference_runs"] == 1


def test_foreground_response_on_asap_is_complete_in_one_call(sdk):
    response = sdk.responses.create(
        model=MODEL, input="Say hi", max_output_tokens=5, metadata={"completion_window": "asap"}
    )
    assert response.status in ("completed", "incomplete")
    assert len(response.output_text) >= 1


def test_cancelling_a_background_response(openai):
    from sail_lite.emulator import EmulatorServer

    with EmulatorServer(
        turn_times={"asap": 0, "priority": 30, "standard": 30, "flex": 30}
    ) as server:
        sdk = openai.OpenAI(api_key=server.api_key, base_url=server.base_url)
        created = sdk.responses.create(
            model=MODEL, input="slow", background=True, metadata={"completion_window": "flex"}
        )
        cancelled = sdk.responses.cancel(created.id)
        assert cancelled.status == "cancelled"
        assert sdk.responses.retrieve(created.id).status == "cancelled"
        assert server.stats()["cancellations"] == 1
        sdk.close()


def test_chat_completion_has_exact_usage_and_a_finish_reason(sdk):
    completion = sdk.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "2+2?"}],
        max_completion_tokens=8,
        temperature=0,
    )
    choice = completion.choices[0]
    assert choice.message.role == "assistant"
    assert choice.finish_reason in ("stop", "length")
    assert 1 <= completion.usage.completion_tokens <= 8
    assert (
        completion.usage.total_tokens
        == completion.usage.prompt_tokens + completion.usage.completion_tokens
    )


def test_chat_is_deterministic_at_temperature_zero(sdk):
    def ask():
        return (
            sdk.chat.completions.create(
                model=MODEL,
                messages=[{"role": "user", "content": "Name a colour"}],
                max_completion_tokens=10,
                temperature=0,
            )
            .choices[0]
            .message.content
        )

    assert ask() == ask()


def test_files_create_streams_a_multipart_upload(sdk, emulator):
    data = b'{"peft_type": "LORA"}' + b" " * 10000
    uploaded = sdk.files.create(file=("adapter_config.json", io.BytesIO(data)), purpose="lora")
    assert uploaded.id.startswith("file-")
    assert uploaded.bytes == len(data)
    assert uploaded.filename == "adapter_config.json"
    assert uploaded.purpose == "lora"
    assert emulator.stats()["files"] == 1


def test_models_list(sdk):
    ids = [model.id for model in sdk.models.list()]
    assert MODEL in ids


def test_typed_errors_carry_status_and_message(openai, sdk, emulator):
    with pytest.raises(openai.NotFoundError) as missing:
        sdk.responses.retrieve("resp_does_not_exist")
    assert missing.value.status_code == 404
    with pytest.raises(openai.BadRequestError) as flex:
        sdk.responses.create(model=MODEL, input="x", metadata={"completion_window": "flex"})
    assert "background" in str(flex.value)
    wrong = openai.OpenAI(api_key="sk-wrong", base_url=emulator.base_url, max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        wrong.models.list()


def test_sdk_retry_after_a_lost_reply_does_not_run_inference_twice(sdk, emulator):
    # The openai SDK sends no Idempotency-Key of its own, but resends the caller's on each
    # retry of a dropped connection: the emulator must replay the stored response.
    emulator.faults.add(Fault("lose_reply", method="POST", path="/v1/responses", times=1))
    response = sdk.responses.create(
        model=MODEL,
        input="once",
        max_output_tokens=4,
        metadata={"completion_window": "asap"},
        extra_headers={"Idempotency-Key": "fidelity-lost-reply"},
    )
    assert response.status in ("completed", "incomplete")
    stats = emulator.stats()
    assert stats["faults_fired"] == 1
    assert stats["inference_runs"] == 1
    assert stats["inference_runs_by_idempotency_key"] == {"fidelity-lost-reply": 1}


def test_sdk_honours_retry_after_on_429(sdk, emulator):
    emulator.faults.add(
        Fault("error", method="GET", path="/v1/models", times=1, status=429, retry_after=0.05)
    )
    assert [m.id for m in sdk.models.list()]
    assert emulator.stats()["faults_fired"] == 1
