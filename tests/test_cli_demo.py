"""``sail-lite demo``: offline by default, against the given server with --api-key/--base-url, readable output."""

from __future__ import annotations

import io
import re

import pytest

from sail_lite.cli import main

from ._streams import Stream


def run(argv, environ, err=None):
    out, err = io.StringIO(), err if err is not None else Stream(tty=False)
    code = main(argv, out=out, err=err, environ=environ)
    return code, out.getvalue(), err.getvalue()


def check_output(out):
    name = re.search(r"Uploading LoRA '(sail-lite-demo-[0-9a-f]{8})'", out).group(1)
    assert "at temperature 1, balanced window, logprobs on" in out
    assert f"LoRA {name!r} (id " in out and "validation succeeded on moonshotai/Kimi-K2.6" in out
    assert "Greedy decoding (temperature 0)" in out and f"with LoRA {name!r}" in out
    assert f"LoRA {name!r} changed 4 of 4 greedy continuations" in out
    logprobs = re.findall(r"logprobs ((?:-?\d+\.\d\d ?)+)(?:\.\.\. )?\(mean (-?\d+\.\d\d)\)", out)
    assert len(logprobs) == 4 and all(float(v) < 0 for row, _ in logprobs for v in row.split())
    assert not re.search(r"\d\.\d{3,}", out)  # no raw floats anywhere
    assert "is succeeded" not in out


def test_the_readme_command_runs_offline_with_no_key(emulator):
    code, out, err = run(["demo"], environ={})  # no SAIL_API_KEY: an emulator of its own
    assert code == 0, err
    assert out.startswith("sail-lite demo against the offline emulator at http://127.0.0.1:")
    assert "no API key: started an offline emulator" in err
    check_output(out)
    assert emulator.stats()["inference_runs"] == 0  # the shared test emulator was not used
    assert "\r" not in err and "   sampling [" in err and err.count("   sampling [") == 4 + 8


def test_api_key_and_base_url_are_honoured_greedy_is_said_and_a_retired_window_warns_once(emulator):
    argv = [
        "--api-key",
        emulator.api_key,
        "--base-url",
        emulator.base_url,
        "demo",
        "--temperature",
        "0",
        "--max-tokens",
        "4",
        "--window",
        "priority",
    ]
    code, out, err = run(argv, environ={}, err=Stream(tty=True))
    assert code == 0, err
    assert out.startswith(f"sail-lite demo against {emulator.base_url}\n")
    assert "started an offline emulator" not in err and "\r   sampling [" in err
    assert "greedily (temperature 0: the most likely token each step), balanced window" in out
    assert err.count("the 'priority' completion window is retired; using 'balanced'") == 1
    assert "validation succeeded on moonshotai/Kimi-K2.6" in out and "changed 4 of 4 greedy" in out
    stats = emulator.stats()
    assert stats["inference_runs"] == 12 and stats["requests"]["POST /v1/loras"] == 1
    assert emulator.api_key not in out + err


@pytest.mark.parametrize(
    "argv, words",
    [
        (
            ["--base-url", "http://127.0.0.1:1/v1", "demo"],
            "needs an API key too: pass --api-key KEY or set SAIL_API_KEY",
        ),
        (["demo", "--offline", "--api-key", "k"], "--offline runs against an in-process emulator"),
        (["demo", "--max-tokens", "0"], "--max-tokens must be >= 1"),
    ],
)
def test_contradictions_are_usage_errors(argv, words):
    code, out, err = run(argv, environ={})
    assert code == 2 and out == "" and err.count("\n") == 1 and words in err


def test_asap_is_not_offered():
    code, _, err = run(["demo", "--window", "asap"], environ={})
    assert code == 2 and "use one of balanced, flex, standard" in err


def test_the_environment_is_honoured_and_a_server_error_is_one_line(emulator):
    code, out, err = run(
        ["demo"], environ={"SAIL_API_KEY": "sk-wrong", "SAIL_BASE_URL": emulator.base_url}
    )
    assert code == 1 and err.startswith("sail-lite: error: ") and err.count("\n") == 1
    assert "status 401" in err and "request req_" in err and "sk-wrong" not in err
