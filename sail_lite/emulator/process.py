"""The emulator in a child process, for code that must not share a process (a GIL, a SIGKILL) with it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any, Dict, List, Mapping, Optional, Sequence

__all__ = ["EmulatorProcess"]

# The directory holding the sail_lite package this module belongs to: the child imports the same code.
_PACKAGE_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class EmulatorProcess:
    """``python -m sail_lite.emulator --port 0`` in a child process, ready when :meth:`start` returns.

    ::

        with EmulatorProcess("--seed", "3", turn_times={"balanced": 0.1}) as emulator:
            client = Client(emulator.api_key, base_url=emulator.base_url)

    ``options`` are more command-line options of ``python -m
    sail_lite.emulator``; ``turn_times`` becomes ``--turn-times``.
    ``command`` replaces the whole command line (another script that
    prints the same banner, e.g. through
    ``sail_lite.emulator.__main__.announce_and_serve``). The child finds
    this copy of ``sail_lite`` first on its ``PYTHONPATH``. After
    :meth:`start`: ``url`` (the server root), ``base_url``, ``api_key``,
    ``admin_token`` and ``banner`` (every line it printed, stripped).
    :meth:`stop` terminates it (then kills it after ``stop_timeout``).
    """

    def __init__(
        self,
        *options: str,
        turn_times: Optional[Mapping[str, float]] = None,
        command: Optional[Sequence[str]] = None,
        stop_timeout: float = 10.0,
    ) -> None:
        args = (
            list(command)
            if command is not None
            else [sys.executable, "-m", "sail_lite.emulator", "--port", "0"]
        )
        args += options
        if turn_times is not None:
            args += ["--turn-times", json.dumps(dict(turn_times))]
        self.args = args
        self.stop_timeout = stop_timeout
        self.process: Optional[subprocess.Popen[str]] = None
        self.url = self.base_url = self.api_key = self.admin_token = ""
        self.banner: List[str] = []

    def start(self) -> EmulatorProcess:
        """Start the child and read its banner; ``RuntimeError`` if it exits before it is ready."""
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [_PACKAGE_ROOT, env.get("PYTHONPATH")]))
        self.process = process = subprocess.Popen(
            self.args, stdout=subprocess.PIPE, text=True, env=env
        )
        assert process.stdout is not None
        for line in process.stdout:
            line = line.strip()
            self.banner.append(line)
            # The banner of sail_lite.emulator.__main__.announce_and_serve.
            if line.startswith("Sail emulator listening on "):
                self.url = line.rsplit(" ", 1)[1]
            elif line.startswith("export SAIL_BASE_URL="):
                self.base_url = line.split("=", 1)[1]
            elif line.startswith("export SAIL_API_KEY="):
                self.api_key = line.split("=", 1)[1]
            elif line.startswith("admin token"):
                self.admin_token = line.rsplit(" ", 1)[1]
            elif line.startswith("Press Ctrl-C"):
                return self
        process.stdout.close()
        self.process = None
        raise RuntimeError(
            f"the emulator exited before it was ready (exit status {process.wait()})"
        )

    def stop(self) -> None:
        """Terminate the child and wait for it (kill it if it outlives ``stop_timeout``)."""
        process, self.process = self.process, None
        if process is None:
            return
        process.terminate()
        try:
            process.wait(timeout=self.stop_timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if process.stdout is not None:
            process.stdout.close()

    def __enter__(self) -> EmulatorProcess:
        return self.start()

    def __exit__(self, *exc_info: Any) -> None:
        self.stop()

    def __repr__(self) -> str:
        return "EmulatorProcess({})".format(self.url if self.process is not None else "stopped")

    def stats(self) -> Dict[str, Any]:
        """The child's counters (``GET /_emulator/stats``, as :meth:`EmulatorServer.stats`)."""
        return self._admin("GET", "/_emulator/stats")

    def reset(self) -> None:
        """Forget every object, counter and fault in the child (``POST /_emulator/reset``)."""
        self._admin("POST", "/_emulator/reset")

    def _admin(self, method: str, path: str) -> Any:
        import urllib.request  # here: it imports ssl, which nothing else in the emulator needs

        request = urllib.request.Request(
            self.url + path,
            data=b"" if method == "POST" else None,
            method=method,
            headers={"Authorization": "Bearer " + self.admin_token},
        )
        with urllib.request.urlopen(request, timeout=30) as reply:
            return json.loads(reply.read().decode("utf-8"))
