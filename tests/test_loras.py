"""LoRAs end to end against the emulator: pre-flight, upload, validation, use, isolation."""

from __future__ import annotations

import json

import pytest

from sail_lite.errors import (
    AdapterError,
    ConflictError,
    InvalidRequestError,
    LoRANameError,
    LoRAValidationError,
    NotFoundError,
    SailError,
)
from sail_lite.resources.loras import check_lora_name

from .conftest import make_client

MODEL = "moonshotai/Kimi-K2.6"
PROMPT = [10, 20, 30, 40]


def adapter(tmp_path, name="a", **kwargs):
    from sail_lite.adapters import make_adapter

    return make_adapter(tmp_path / name, **kwargs)


def greedy(client, **kwargs):
    return client.tokens.sample(
        PROMPT, model=MODEL, max_tokens=16, temperature=0.0, **kwargs
    ).tokens


@pytest.mark.parametrize("name", ["ab", "funnier-v1", "a" * 64, "x-1-y", "42"])
def test_good_names(name):
    assert check_lora_name(name) == name


@pytest.mark.parametrize(
    "name", ["a", "a" * 65, "-ab", "ab-", "Funny", "fun_ny", "fun ny", "", None, 5, "é-a"]
)
def test_bad_names_are_refused_locally(name):
    with pytest.raises(LoRANameError, match="2-64 characters"):
        check_lora_name(name)


def test_upload_validate_and_use(client, emulator, tmp_path):
    progress = []
    lora = client.loras.upload(
        adapter(tmp_path, seed=1),
        name="funnier-v1",
        supported_models=[MODEL],
        progress=lambda done, total: progress.append((done, total)),
    )
    assert lora.name == "funnier-v1" and lora.latest_validation(MODEL).status == "succeeded"
    assert progress[-1][0] == progress[-1][1] > 0
    base = greedy(client)
    tuned = greedy(client, lora="funnier-v1")
    by_id = greedy(client, lora=lora.id)
    assert tuned != base and by_id == tuned
    other = client.loras.upload(
        adapter(tmp_path, "b", seed=2), name="other-v1", supported_models=[MODEL]
    )
    assert greedy(client, lora=other.name) not in (base, tuned)
    assert {item.name for item in client.loras.list()} == {"funnier-v1", "other-v1"}
    assert client.loras.retrieve(lora.id).name == "funnier-v1"
    chat = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "hi"}],
        lora="funnier-v1",
        completion_window="balanced",
    )
    assert chat.content


@pytest.mark.parametrize(
    "kwargs, code, words",
    [
        ({"rank": 64}, "rank_exceeds_max", "max rank 32"),
        ({"task_type": "SEQ_CLS"}, "invalid_task_type", "CAUSAL_LM"),
        (
            {"base_model": "meta-llama/Llama-3.1-8B"},
            "base_model_mismatch",
            "meta-llama/Llama-3.1-8B",
        ),
    ],
)
def test_bad_adapters_fail_preflight_then_server_validation(
    client, emulator, tmp_path, kwargs, code, words
):
    folder = adapter(tmp_path, **kwargs)
    with pytest.raises(AdapterError) as info:
        client.loras.upload(folder, name="bad-one", supported_models=[MODEL])
    assert code in [p.code for p in info.value.problems] and words in str(info.value)
    assert "POST /v1/files" not in emulator.stats()["requests"]  # nothing was uploaded
    with pytest.raises(LoRAValidationError) as info:
        client.loras.upload(folder, name="bad-one", supported_models=[MODEL], preflight=False)
    assert info.value.result_code == code and info.value.result_message
    assert info.value.model == MODEL and info.value.lora.name == "bad-one"
    with pytest.raises(SailError) as info:  # a failed validation blocks the LoRA on that model
        greedy(client, lora="bad-one")
    assert info.value.status == 400


def test_preflight_reports_every_problem_at_once(client, tmp_path):
    folder = adapter(tmp_path, rank=64, task_type="SEQ_CLS")
    with pytest.raises(AdapterError) as info:
        client.loras.upload(folder, name="two-problems", supported_models=[MODEL])
    codes = {p.code for p in info.value.problems}
    assert {"rank_exceeds_max", "invalid_task_type"} <= codes


def test_duplicate_name_is_a_conflict_naming_the_lora(client, tmp_path):
    folder = adapter(tmp_path)
    client.loras.upload(folder, name="dup-name", supported_models=[MODEL], wait=False)
    with pytest.raises(ConflictError, match="dup-name") as info:
        client.loras.upload(folder, name="dup-name", supported_models=[MODEL], wait=False)
    assert info.value.status == 409


def test_a_taken_name_is_refused_before_any_byte_is_uploaded(client, emulator, tmp_path):
    folder = adapter(tmp_path)
    client.loras.upload(folder, name="taken-name", supported_models=[MODEL], wait=False)
    uploads = emulator.stats()["requests"].get("POST /v1/files")
    progress = []
    with pytest.raises(ConflictError) as info:
        client.loras.upload(
            folder,
            name="taken-name",
            supported_models=[MODEL],
            wait=False,
            progress=lambda done, total: progress.append(done),
            preflight=False,
        )
    assert (
        emulator.stats()["requests"].get("POST /v1/files") == uploads == 2
    )  # nothing sent the second time
    assert progress == [] and emulator.stats()["requests"]["POST /v1/loras"] == 1
    error = info.value
    assert error.status == 409 and error.code == "lora_name_taken"
    assert "'taken-name' already exists" in str(error) and "pick another name" in str(error)
    assert "client.loras.update" in str(error)


def test_a_lost_create_reply_still_returns_our_lora(emulator, tmp_path):
    from sail_lite.emulator import Fault

    emulator.faults.add(Fault("lose_reply", method="POST", path="/v1/loras", times=1))
    with make_client(emulator, sleep=lambda s: None) as client:
        lora = client.loras.upload(adapter(tmp_path), name="lost-reply", supported_models=[MODEL])
    assert lora.name == "lost-reply"


def test_another_organization_cannot_see_or_use_it(client, emulator, tmp_path):
    client.loras.upload(adapter(tmp_path), name="private-v1", supported_models=[MODEL])
    other_key = emulator.add_organization()
    with make_client(emulator, api_key=other_key) as other:
        with pytest.raises(NotFoundError):
            other.loras.retrieve("private-v1")
        assert other.loras.list() == []
        with pytest.raises(SailError) as info:
            greedy(other, lora="private-v1")
        assert info.value.status in (400, 404)


def test_update_adds_models_and_wait_checks_membership(client, tmp_path):
    client.loras.upload(adapter(tmp_path), name="patch-me", supported_models=[MODEL])
    with pytest.raises(InvalidRequestError, match="supported_models"):
        client.loras.wait_for_validation("patch-me", "Qwen/Qwen3-8B")
    with pytest.raises(InvalidRequestError):
        client.loras.update("patch-me")
    updated = client.loras.update("patch-me", description="now described")
    assert updated.description == "now described"


def test_cli_json_output_roundtrip(emulator, tmp_path, capsys):
    from sail_lite.cli import main

    folder = adapter(tmp_path)
    base = ["--api-key", emulator.api_key, "--base-url", emulator.base_url]
    assert (
        main(
            base
            + ["loras", "upload", str(folder), "--name", "cli-lora", "--model", MODEL, "--json"]
        )
        == 0
    )
    captured = capsys.readouterr()
    assert json.loads(captured.out)["name"] == "cli-lora"
    assert "uploading cli-lora" in captured.err and "100%" in captured.err
    assert main(base + ["loras", "get", "cli-lora"]) == 0
    assert "cli-lora" in capsys.readouterr().out
    assert main(base + ["loras", "list", "--json"]) == 0
    assert [item["name"] for item in json.loads(capsys.readouterr().out)] == ["cli-lora"]
    assert main(base + ["loras", "get", "no-such"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("sail-lite: error: ") and err.count("\n") == 1
    assert emulator.api_key not in err
