"""The sail-lite command, in-process and as the installed console script."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from sail_lite.cli import main

MODEL = "moonshotai/Kimi-K2.6"


@pytest.fixture
def base(emulator):
    return ["--api-key", emulator.api_key, "--base-url", emulator.base_url]


def test_sample_json(base, capsys):
    assert main(base + ["sample", "--model", MODEL, "--tokens", "1,2,3", "--max-tokens", "4",
                        "--temperature", "0", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert len(result["tokens"]) == len(result["logprobs"]) <= 4
    assert result["stop_reason"] in ("stop", "length")


def test_sample_text_and_responses_commands(base, capsys):
    assert main(base + ["sample", "--model", MODEL, "--tokens", "5,6", "--max-tokens", "3",
                        "--stop-token", "256"]) == 0
    out = capsys.readouterr().out
    response_id = [line.split()[1] for line in out.splitlines() if line.startswith("response:")][0]
    for action in ("get", "wait", "cancel"):
        assert main(base + ["responses", action, response_id]) == 0
        assert response_id in capsys.readouterr().out


def test_models_list(base, capsys):
    assert main(base + ["models", "list"]) == 0
    assert MODEL in capsys.readouterr().out.split()


@pytest.mark.parametrize(
    "argv, code, words",
    [
        (["sample", "--model", MODEL, "--tokens", "1,x", "--max-tokens", "3"], 2, "comma-separated token ids"),
        (["sample", "--model", MODEL, "--tokens", "1", "--max-tokens", "0"], 1, "max_tokens must be"),
        (["sample", "--model", MODEL, "--tokens", "1", "--max-tokens", "2", "--stop", "a", "--stop-token", "3"],
         2, "not both"),
        (["sample", "--model", MODEL, "--tokens", "1", "--max-tokens", "2", "--lora", "x", "--window", "asap"],
         1, "asap"),
        (["responses", "get", "resp_missing"], 1, "404"),
        (["loras", "upload", "/no/such/dir", "--name", "ok-name", "--model", MODEL], 1, "folder not found"),
        (["loras", "upload", "/tmp", "--name", "Bad_Name", "--model", MODEL], 1, "2-64 characters"),
        (["models"], 2, ""),
    ],
)
def test_failures_are_one_line_with_an_exit_code(base, capsys, argv, code, words):
    assert main(base + argv) == code
    err = capsys.readouterr().err
    assert words in err
    if code == 1:
        assert err.startswith("sail-lite: error: ") and err.count("\n") == 1


def test_missing_key_says_how_to_set_it(capsys, monkeypatch):
    monkeypatch.delenv("SAIL_API_KEY", raising=False)
    assert main(["models", "list"]) == 1
    assert "SAIL_API_KEY" in capsys.readouterr().err


def test_console_script_runs(emulator):
    script = os.path.join(os.path.dirname(sys.executable), "sail-lite")
    command = [script] if os.path.exists(script) else [sys.executable, "-m", "sail_lite.cli"]
    env = dict(os.environ, SAIL_API_KEY=emulator.api_key, SAIL_BASE_URL=emulator.base_url)
    result = subprocess.run(command + ["models", "list", "--json"], capture_output=True, text=True, env=env,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    assert MODEL in [item["id"] for item in json.loads(result.stdout)]
    assert emulator.api_key not in result.stdout + result.stderr
