"""Run ``python -m sail_lite.emulator`` in its own process, so it never shares a GIL with what is measured."""
from __future__ import annotations

import json
import subprocess
import sys
from typing import Any, Dict, Optional


class EmulatorProcess:
    """``with EmulatorProcess(turn_times={...}) as emu: emu.base_url, emu.api_key``."""

    def __init__(self, turn_times: Optional[Dict[str, float]] = None, *extra_args: str) -> None:
        self.args = [sys.executable, "-m", "sail_lite.emulator", "--port", "0", *extra_args]
        if turn_times is not None:
            self.args += ["--turn-times", json.dumps(turn_times)]
        self.process: Any = None
        self.base_url = self.api_key = self.url = ""

    def __enter__(self) -> "EmulatorProcess":
        self.process = subprocess.Popen(self.args, stdout=subprocess.PIPE, text=True)
        for line in self.process.stdout:
            line = line.strip()
            if line.startswith("Sail emulator listening on "):
                self.url = line.rsplit(" ", 1)[1]
            elif line.startswith("export SAIL_BASE_URL="):
                self.base_url = line.split("=", 1)[1]
            elif line.startswith("export SAIL_API_KEY="):
                self.api_key = line.split("=", 1)[1]
            elif line.startswith("Press Ctrl-C"):
                return self
        raise SystemExit("the emulator exited before it was ready: {}".format(self.process.wait()))

    def __exit__(self, *exc_info: Any) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)
        self.process.stdout.close()
