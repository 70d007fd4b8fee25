"""Run the emulator in its own process, so it never shares a GIL (or a CPU account) with what is measured.

``sail_lite.emulator.EmulatorProcess`` with the benchmarks' argument order and ``bench/_server.py``'s hooks.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Dict, Optional

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE = os.path.dirname(HERE)
if (
    SOURCE not in sys.path
):  # this checkout's sail_lite, for the emulator and for what is measured, not an installed one
    sys.path.insert(1, SOURCE)

from sail_lite.emulator import EmulatorProcess as _EmulatorProcess  # noqa: E402


class EmulatorProcess(_EmulatorProcess):
    """``with EmulatorProcess(turn_times={...}) as emu: emu.base_url, emu.api_key``.

    ``hooks=True`` runs ``bench/_server.py`` instead of ``python -m
    sail_lite.emulator``: per-request turns from ``metadata.bench_turn`` /
    ``bench_spread`` and ``_bench_end_at`` / ``_bench_polls`` on every
    response object (see that module); ``turn`` is then every window's turn.
    """

    def __init__(
        self,
        turn_times: Optional[Dict[str, float]] = None,
        *extra_args: str,
        hooks: bool = False,
        turn: float = 0.0,
    ) -> None:
        if hooks:
            super().__init__(
                *extra_args,
                command=[sys.executable, os.path.join(HERE, "_server.py"), "--turn", repr(turn)],
            )
        else:
            super().__init__(*extra_args, turn_times=turn_times)
        self.windows: list = []
        self.hooks: Dict[str, bool] = {}

    def start(self) -> EmulatorProcess:
        super().start()
        for line in self.banner:  # the lines bench/_server.py adds
            if line.startswith("windows: "):
                self.windows = json.loads(line.split(": ", 1)[1])
            elif line.startswith("bench hooks: "):
                self.hooks = json.loads(line.split(": ", 1)[1])
        return self
