"""``sail-lite emulator``: every option of ``python -m sail_lite.emulator``, and failures as one line, exit 2."""

from __future__ import annotations

import io
import json
import os
import signal
import socket
import subprocess
import sys

import pytest

from sail_lite.cli import main
from sail_lite.emulator import EmulatorServer

MODEL = "moonshotai/Kimi-K2.6"


@pytest.fixture
def served(monkeypatch):
    """Run `sail-lite emulator ...` in-process: serve_forever starts it, checks it answers, and stops it."""
    seen = []

    def serve_once(self):
        self.start()
        try:
            out = io.StringIO()
            assert (
                main(
                    ["--api-key", self.api_key, "--base-url", self.base_url, "models", "list"],
                    out=out,
                )
                == 0
            )
            seen.append({"server": self, "url": self.url, "models": out.getvalue().split()})
        finally:
            self.stop()

    monkeypatch.setattr(EmulatorServer, "serve_forever", serve_once)
    return seen


def run(argv):
    out, err = io.StringIO(), io.StringIO()
    code = main(argv, out=out, err=err)
    return code, out.getvalue(), err.getvalue()


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_every_emulator_option_reaches_the_server(served):
    port = free_port()
    code, out, err = run(
        [
            "emulator",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--api-key",
            "sk-local-test",
            "--admin-token",
            "adm-test",
            "--seed",
            "3",
            "--preset",
            "fast",
            "--turn-times",
            '{"standard": 0.02}',
            "--max-file-bytes",
            "1000",
        ]
    )
    assert (code, err) == (0, "")
    [seen] = served
    server = seen["server"]
    assert seen["url"] == f"http://127.0.0.1:{port}" and MODEL in seen["models"]
    assert (server.api_key, server.admin_token, server.max_file_bytes) == (
        "sk-local-test",
        "adm-test",
        1000,
    )
    assert server.state.turn_times["balanced"] == 0.02  # standard is an alias of balanced
    assert f"export SAIL_BASE_URL=http://127.0.0.1:{port}/v1" in out and "sk-local-test" in out


def test_the_api_key_before_the_command_is_the_key_it_serves(served):
    assert run(["--api-key", "sk-before", "emulator", "--port", "0"])[0] == 0
    assert served[0]["server"].api_key == "sk-before"
    assert (
        run(["--api-key", "sk-before", "emulator", "--port", "0", "--api-key", "sk-after"])[0] == 0
    )
    assert served[1]["server"].api_key == "sk-after"


def test_a_port_in_use_is_one_line_and_exit_2(served):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        code, out, err = run(["emulator", "--port", str(port)])
    assert code == 2 and out == "" and served == []
    assert err == (
        f"sail-lite: error: cannot listen on 127.0.0.1:{port}: port {port} is already in use; stop what holds "
        "it, or pick another with --port (--port 0 picks a free one)\n"
    )


def test_an_address_not_of_this_machine_is_one_line_and_exit_2(served):
    code, out, err = run(
        ["emulator", "--host", "192.0.2.1", "--port", "0"]
    )  # TEST-NET-1, never assigned
    assert code == 2 and served == [] and err.count("\n") == 1
    assert "cannot listen on 192.0.2.1:0: 192.0.2.1 is not an address of this machine" in err


@pytest.mark.parametrize(
    "argv, words",
    [
        (["--turn-times", "{not json"], "--turn-times must be a JSON object of window: seconds"),
        (["--turn-times", "[1, 2]"], "--turn-times must be a JSON object"),
        (["--turn-times", '{"bogus": 1}'], "unknown completion window 'bogus'"),
        (["--turn-times", '{"standard": -1}'], "standard must be a number of seconds >= 0, got -1"),
        (["--turn-times", '{"standard": "fast"}'], "standard must be a number of seconds"),
        (["--port", "70000"], "--port must be 0-65535"),
    ],
)
def test_bad_options_are_one_line_and_exit_2(served, argv, words):
    code, out, err = run(["emulator", "--port", "0"] + argv)
    assert code == 2 and served == [] and out == ""
    assert err.startswith("sail-lite: error: ") and err.count("\n") == 1 and words in err


def test_base_url_does_not_apply_to_the_emulator(served):
    code, _, err = run(["--base-url", "http://127.0.0.1:1/v1", "emulator"])
    assert code == 2 and "use --host and --port" in err and served == []


def _ctrl_c_as_in_a_terminal() -> None:
    # A suite started in the background (`cmd &` from a script) runs with SIGINT ignored, and a Python
    # started so keeps ignoring it: give the child the default disposition a terminal would.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_the_console_script_serves_until_ctrl_c():
    script = os.path.join(os.path.dirname(sys.executable), "sail-lite")
    command = [script] if os.path.exists(script) else [sys.executable, "-m", "sail_lite.cli"]
    process = subprocess.Popen(
        command
        + [
            "emulator",
            "--port",
            "0",
            "--api-key",
            "sk-sub-test",
            "--turn-times",
            '{"standard": 0.01}',
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=_ctrl_c_as_in_a_terminal,
    )
    try:
        banner = process.stdout.readline()
        assert banner.startswith("Sail emulator listening on http://127.0.0.1:"), (
            process.stderr.read()
        )
        url = banner.split()[-1]
        out = io.StringIO()
        assert (
            main(
                ["--api-key", "sk-sub-test", "--base-url", url + "/v1", "models", "list", "--json"],
                out=out,
            )
            == 0
        )
        assert MODEL in [item["id"] for item in json.loads(out.getvalue())]
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 0 and "Traceback" not in err
