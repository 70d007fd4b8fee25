"""Run the emulator in its own process, so it never shares a GIL (or a CPU account) with what is measured."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any, Dict, Optional

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


class EmulatorProcess:
    """``with EmulatorProcess(turn_times={...}) as emu: emu.base_url, emu.api_key``.

    ``hooks=True`` runs ``bench/_server.py`` instead of ``python -m
    sail_lite.emulator``: per-request turns from ``metadata.bench_turn`` /
    ``bench_spread`` and ``_bench_end_at`` / ``_bench_polls`` on every
    response object (see that module); ``turn`` is then every window's turn.
    """

    def __init__(self, turn_times: Optional[Dict[str, float]] = None, *extra_args: str,
                 hooks: bool = False, turn: float = 0.0) -> None:
        if hooks:
            self.args = [sys.executable, os.path.join(HERE, "_server.py"), "--turn", repr(turn), *extra_args]
        else:
            self.args = [sys.executable, "-m", "sail_lite.emulator", "--port", "0", *extra_args]
            if turn_times is not None:
                self.args += ["--turn-times", json.dumps(turn_times)]
        self.process: Any = None
        self.base_url = self.api_key = self.url = self.admin_token = ""
        self.windows: list = []
        self.hooks: Dict[str, bool] = {}

    def __enter__(self) -> "EmulatorProcess":
        env = dict(os.environ)
        env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
        self.process = subprocess.Popen(self.args, stdout=subprocess.PIPE, text=True, env=env)
        for line in self.process.stdout:
            line = line.strip()
            if line.startswith("Sail emulator listening on "):
                self.url = line.rsplit(" ", 1)[1]
            elif line.startswith("export SAIL_BASE_URL="):
                self.base_url = line.split("=", 1)[1]
            elif line.startswith("export SAIL_API_KEY="):
                self.api_key = line.split("=", 1)[1]
            elif line.startswith("admin token"):
                self.admin_token = line.rsplit(" ", 1)[1]
            elif line.startswith("windows: "):
                self.windows = json.loads(line.split(": ", 1)[1])
            elif line.startswith("bench hooks: "):
                self.hooks = json.loads(line.split(": ", 1)[1])
            elif line.startswith("Press Ctrl-C"):
                return self
        raise SystemExit("the emulator exited before it was ready: {}".format(self.process.wait()))

    def stats(self) -> Dict[str, Any]:
        """The emulator's ``/_emulator/stats`` (needs the admin token it printed)."""
        import requests

        reply = requests.get(self.url + "/_emulator/stats", headers={"Authorization": "Bearer " + self.admin_token},
                             timeout=30)
        reply.raise_for_status()
        return reply.json()

    def __exit__(self, *exc_info: Any) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)
        self.process.stdout.close()
