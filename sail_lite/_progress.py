"""Progress on a text stream, for the CLI and the demo: a redrawn bar on a terminal, lines elsewhere."""

from __future__ import annotations

from typing import IO, Mapping, Optional

__all__ = ["ProgressBar", "interactive"]


def interactive(stream: IO[str], environ: Optional[Mapping[str, str]] = None) -> bool:
    """True when ``stream`` is a terminal that can redraw a line: a TTY, not in CI, not ``TERM=dumb``."""
    try:
        tty = bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False
    env = environ or {}
    return tty and not env.get("CI") and env.get("TERM") != "dumb"


class ProgressBar:
    """``label [#####...]  42%  1.2/2.9 MB`` (kB below a megabyte; ``12/29`` for items).

    Called as ``bar(done, total)``. On a terminal (``tty=True``) the line is
    redrawn in place with ``\\r`` whenever the percentage changes, and ended at
    100%. Elsewhere (a pipe, a log file, CI) there is no ``\\r``: one whole
    line per step, a step being each tenth of the total (so at most eleven
    lines, whatever the size), plus the first call. ``tty=None`` asks the
    stream (:func:`interactive` with no environment).
    """

    def __init__(
        self, label: str, stream: IO[str], *, in_bytes: bool = True, tty: Optional[bool] = None
    ) -> None:
        self._label = label
        self._stream = stream
        self._in_bytes = in_bytes
        self._tty = interactive(stream) if tty is None else tty
        self._shown = -1

    def _amount(self, done: int, total: int) -> str:
        if not self._in_bytes:
            return f"{done}/{total}"
        if total >= 1e6:
            return f"{done / 1e6:.1f}/{total / 1e6:.1f} MB"
        return f"{done / 1e3:.1f}/{total / 1e3:.1f} kB"

    def __call__(self, done: int, total: int) -> None:
        percent = 100 if total <= 0 else max(0, min(100, int(100 * done / total)))
        step = percent if self._tty else percent // 10
        if step == self._shown:
            return
        self._shown = step
        bar = "[{:<30}] {:3d}%  {}".format(
            "#" * (percent * 30 // 100), percent, self._amount(done, total)
        )
        if self._tty:
            self._stream.write(f"\r{self._label} {bar}")
            if percent >= 100:
                self._stream.write("\n")
        else:
            self._stream.write(f"{self._label} {bar}\n")
        self._stream.flush()
