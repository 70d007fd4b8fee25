"""Every ``sail-lite`` command line of README.rst, run as written (only placeholders filled in)."""

from __future__ import annotations

import io
import os
import shlex
import socket

from sail_lite.cli import main
from sail_lite.emulator import EmulatorServer

README = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "README.rst")


def readme_commands():
    """The literal block after "The command line", one command a line."""
    with open(README, encoding="utf-8") as handle:
        text = handle.read()
    block = text[text.index("The command line (") :].split("::\n\n", 1)[1]
    commands = []
    for line in block.splitlines():
        if not line.startswith("    "):
            break
        commands.append(shlex.split(line.strip()))
    return commands


COMMANDS = readme_commands()


def test_the_readme_lists_every_command():
    assert [c[1] for c in COMMANDS] == [
        "demo",
        "sample",
        "loras",
        "loras",
        "loras",
        "responses",
        "models",
        "jobs",
        "emulator",
    ]
    assert all(c[0] == "sail-lite" for c in COMMANDS)


def test_the_readme_api_command_lines_run_as_written(emulator, tmp_path, monkeypatch):
    from sail_lite import Client, Journal
    from sail_lite.adapters import make_adapter

    monkeypatch.chdir(tmp_path)
    make_adapter(tmp_path / "my-adapter")  # the README's `my-adapter/`, in the working directory
    environ = {"SAIL_API_KEY": emulator.api_key, "SAIL_BASE_URL": emulator.base_url}
    with Client(emulator.api_key, base_url=emulator.base_url, environ={}) as client, Journal(
        "eval.db"
    ) as journal:
        list(
            client.tokens.map(
                [[1, 2]], model="moonshotai/Kimi-K2.6", max_tokens=2, journal=journal, job="eval"
            )
        )
    last_response = None
    for argv in COMMANDS:
        if argv[1] in ("demo", "emulator"):
            continue  # tests/test_cli_demo.py runs `sail-lite demo`; the emulator line is below
        argv = [last_response if arg == "resp_..." else arg for arg in argv[1:]]
        out, err = io.StringIO(), io.StringIO()
        assert main(argv, out=out, err=err, environ=environ) == 0, (argv, err.getvalue())
        assert "Traceback" not in err.getvalue()
        for line in out.getvalue().splitlines():
            if line.startswith("response: "):
                last_response = line.split()[1]
    assert last_response is not None
    requests = emulator.stats()["requests"]
    assert requests["POST /v1/loras"] == 1 and requests["POST /v1/files"] == 2


def test_the_readme_emulator_line_runs_as_written(monkeypatch):
    argv = [a for a in COMMANDS if a[1] == "emulator"][0][1:]
    assert argv == ["emulator", "--port", "8080"]
    served = []

    def serve_once(self):  # start, answer one call, stop: instead of serving until Ctrl-C
        self.start()
        try:
            out = io.StringIO()
            served.append(
                main(
                    ["models", "list", "--api-key", self.api_key, "--base-url", self.base_url],
                    out=out,
                )
            )
        finally:
            self.stop()

    monkeypatch.setattr(EmulatorServer, "serve_forever", serve_once)
    with (
        socket.socket()
    ) as probe:  # 8080 may be taken on a shared machine: then the refusal is what we test
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", 8080))
            free = True
        except OSError:
            free = False
    out, err = io.StringIO(), io.StringIO()
    code = main(argv, out=out, err=err)
    if free and code == 0:
        assert (
            served == [0] and "Sail emulator listening on http://127.0.0.1:8080" in out.getvalue()
        )
    else:
        assert code == 2 and served == []
        assert err.getvalue() == (
            "sail-lite: error: cannot listen on 127.0.0.1:8080: port 8080 is already in use; "
            "stop what holds it, or pick another with --port (--port 0 picks a free one)\n"
        )
