"""The sail-lite command, in-process and as the installed console script."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys

import pytest

from sail_lite.cli import main

from ._streams import Stream

MODEL = "moonshotai/Kimi-K2.6"


@pytest.fixture
def base(emulator):
    return ["--api-key", emulator.api_key, "--base-url", emulator.base_url]


def test_sample_json(base, capsys):
    assert (
        main(
            base
            + [
                "sample",
                "--model",
                MODEL,
                "--tokens",
                "1,2,3",
                "--max-tokens",
                "4",
                "--temperature",
                "0",
                "--json",
            ]
        )
        == 0
    )
    result = json.loads(capsys.readouterr().out)
    assert len(result["tokens"]) == len(result["logprobs"]) <= 4
    assert result["stop_reason"] in ("stop", "length")


def test_sample_text_and_responses_commands(base, capsys):
    assert (
        main(
            base
            + [
                "sample",
                "--model",
                MODEL,
                "--tokens",
                "5,6",
                "--max-tokens",
                "3",
                "--stop-token",
                "256",
            ]
        )
        == 0
    )
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
        (
            ["sample", "--model", MODEL, "--tokens", "1,x", "--max-tokens", "3"],
            2,
            "comma-separated token ids",
        ),
        (
            ["sample", "--model", MODEL, "--tokens", "1", "--max-tokens", "0"],
            1,
            "max_tokens must be",
        ),
        (
            [
                "sample",
                "--model",
                MODEL,
                "--tokens",
                "1",
                "--max-tokens",
                "2",
                "--stop",
                "a",
                "--stop-token",
                "3",
            ],
            2,
            "not both",
        ),
        (
            [
                "sample",
                "--model",
                MODEL,
                "--tokens",
                "1",
                "--max-tokens",
                "2",
                "--lora",
                "x",
                "--window",
                "asap",
            ],
            1,
            "asap",
        ),
        (["responses", "get", "resp_missing"], 1, "404"),
        (
            ["loras", "upload", "/no/such/dir", "--name", "ok-name", "--model", MODEL],
            1,
            "folder not found: /no/such/dir",
        ),
        (
            ["loras", "upload", __file__, "--name", "ok-name", "--model", MODEL],
            1,
            "is not a folder",
        ),
        (
            ["sample", "--model", MODEL, "--tokens", "1", "--max-tokens", "2", "--window", "15min"],
            2,
            "use one of asap, balanced, flex, standard",
        ),
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


def test_missing_key_says_how_to_set_it(capsys):
    assert main(["models", "list"], environ={}) == 1
    err = capsys.readouterr().err
    assert "--api-key" in err and "SAIL_API_KEY" in err and err.count("\n") == 1


def test_api_errors_are_one_line_with_status_code_and_request_id(base, capsys):
    assert main(base + ["responses", "wait", "resp_missing"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("sail-lite: error: ") and err.count("\n") == 1 and "Traceback" not in err
    assert "status 404" in err and "code response_not_found" in err and "request req_" in err
    assert main(["--api-key", "wrong-key", "--base-url", base[3], "models", "list"]) == 1
    err = capsys.readouterr().err
    assert "status 401" in err and "request req_" in err and "wrong-key" not in err


def test_connection_options_go_before_or_after_the_command(emulator, capsys):
    assert (
        main(["models", "list", "--api-key", emulator.api_key, "--base-url", emulator.base_url])
        == 0
    )
    assert MODEL in capsys.readouterr().out.split()
    # after the command wins over before it
    assert (
        main(
            [
                "--api-key",
                "wrong",
                "models",
                "list",
                "--api-key",
                emulator.api_key,
                "--base-url",
                emulator.base_url,
            ]
        )
        == 0
    )
    assert (
        main(
            ["models", "list"],
            environ={"SAIL_API_KEY": emulator.api_key, "SAIL_BASE_URL": emulator.base_url},
        )
        == 0
    )


def _window_of(base, capsys, *window):
    assert (
        main(
            base
            + [
                "sample",
                "--model",
                MODEL,
                "--tokens",
                "1,2",
                "--max-tokens",
                "2",
                "--json",
                *window,
            ]
        )
        == 0
    )
    response_id = json.loads(capsys.readouterr().out)["response_id"]
    assert main(base + ["responses", "get", response_id, "--json"]) == 0
    return json.loads(capsys.readouterr().out)["metadata"]["completion_window"]


def test_window_defaults_to_balanced_and_retired_names_warn_once(base, capsys):
    assert _window_of(base, capsys) == "balanced"
    assert (
        main(
            base
            + [
                "sample",
                "--model",
                MODEL,
                "--tokens",
                "1,2",
                "--max-tokens",
                "2",
                "--json",
                "--window",
                "priority",
            ]
        )
        == 0
    )
    captured = capsys.readouterr()
    assert (
        captured.err.count("warning") == 1
        and "'priority' completion window is retired" in captured.err
    )
    assert main(base + ["responses", "get", json.loads(captured.out)["response_id"], "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["metadata"]["completion_window"] == "balanced"


@pytest.mark.parametrize(
    "argv, words",
    [
        (
            [],
            [
                "exit status:",
                "0    success",
                "130",
                "SAIL_API_KEY",
                "demo",
                "emulator",
                "sample",
                "loras",
            ],
        ),
        (
            ["demo"],
            [
                "--api-key",
                "--base-url",
                "--max-tokens",
                "--temperature",
                "--offline",
                "--window",
                "{balanced,flex,standard}",
                "exit status:",
            ],
        ),
        (
            ["emulator"],
            [
                "--host",
                "--port",
                "--api-key",
                "--turn-times",
                "--seed",
                "--preset",
                "--admin-token",
                "--max-file-bytes",
                "exit status:",
            ],
        ),
        (
            ["sample"],
            [
                "--model",
                "--tokens",
                "--max-tokens",
                "--temperature",
                "--top-p",
                "--stop",
                "--stop-token",
                "--lora",
                "--window",
                "{asap,balanced,flex,standard}",
                "--json",
                "--api-key",
            ],
        ),
        (
            ["loras", "upload"],
            [
                "DIR",
                "--name",
                "--model",
                "--display-name",
                "--description",
                "--no-wait",
                "--skip-preflight",
                "before any byte is sent",
            ],
        ),
        (["loras", "list"], ["--json", "--api-key"]),
        (["loras", "get"], ["NAME", "--json"]),
        (["responses", "get"], ["ID", "--json"]),
        (["responses", "wait"], ["ID", "--deadline", "--json"]),
        (["responses", "cancel"], ["ID"]),
        (["models", "list"], ["--json", "--base-url"]),
    ],
)
def test_every_command_has_real_help(capsys, argv, words):
    assert main(argv + ["--help"]) == 0
    out = capsys.readouterr().out
    assert "rest" not in out.split()
    for word in words:
        assert word in out


def test_console_script_runs(emulator):
    script = os.path.join(os.path.dirname(sys.executable), "sail-lite")
    command = [script] if os.path.exists(script) else [sys.executable, "-m", "sail_lite.cli"]
    env = dict(os.environ, SAIL_API_KEY=emulator.api_key, SAIL_BASE_URL=emulator.base_url)
    result = subprocess.run(
        command + ["models", "list", "--json"], capture_output=True, text=True, env=env, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert MODEL in [item["id"] for item in json.loads(result.stdout)]
    assert emulator.api_key not in result.stdout + result.stderr


def test_upload_of_a_taken_name_sends_nothing_and_is_one_line(emulator, base, tmp_path):
    from sail_lite.adapters import make_adapter

    folder = str(make_adapter(tmp_path / "adapter"))
    argv = base + ["loras", "upload", folder, "--name", "taken-v1", "--model", MODEL, "--no-wait"]
    err = Stream(tty=True)
    assert main(argv, out=io.StringIO(), err=err, environ={}) == 0
    assert "\ruploading taken-v1 [" in err.getvalue()  # a terminal: redrawn in place
    err = Stream(tty=False)
    assert main(argv, out=io.StringIO(), err=err, environ={}) == 1
    assert emulator.stats()["requests"]["POST /v1/files"] == 2  # the second run uploaded nothing
    text = err.getvalue()
    assert (
        text.startswith("sail-lite: error: a LoRA named 'taken-v1' already exists")
        and text.count("\n") == 1
    )
    assert (
        "nothing was uploaded" in text and "status 409" in text and "code lora_name_taken" in text
    )
    assert "uploading" not in text


def test_upload_progress_in_ci_is_a_line_per_step(emulator, base, tmp_path):
    from sail_lite.adapters import make_adapter

    folder = str(make_adapter(tmp_path / "adapter", hidden_size=512))
    err = Stream(tty=True)  # a terminal, but CI says so: no redraws
    assert (
        main(
            base + ["loras", "upload", folder, "--name", "ci-v1", "--model", MODEL, "--no-wait"],
            out=io.StringIO(),
            err=err,
            environ={"CI": "true"},
        )
        == 0
    )
    lines = err.getvalue().splitlines()
    assert "\r" not in err.getvalue() and 2 <= len(lines) <= 11
    assert all(line.startswith("uploading ci-v1 [") for line in lines) and lines[-1].split("]")[
        1
    ].startswith(" 100%")
