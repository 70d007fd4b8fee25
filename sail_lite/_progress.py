"""A one-line progress bar on a text stream, for the CLI and the demo."""
from __future__ import annotations

from typing import IO

__all__ = ["ProgressBar"]


class ProgressBar:
    """``label [#####...]  42%  1.2/2.9 MB`` (kB below a megabyte; ``12/29`` for items), redrawn in place.

    Called as ``bar(done, total)``; redraws only when the percentage changes
    and ends the line at 100%.
    """

    def __init__(self, label: str, stream: IO[str], *, in_bytes: bool = True) -> None:
        self._label = label
        self._stream = stream
        self._in_bytes = in_bytes
        self._shown = -1

    def __call__(self, done: int, total: int) -> None:
        percent = 100 if total <= 0 else int(100 * done / total)
        if percent == self._shown:
            return
        self._shown = percent
        if not self._in_bytes:
            amount = "{}/{}".format(done, total)
        elif total >= 1e6:
            amount = "{:.1f}/{:.1f} MB".format(done / 1e6, total / 1e6)
        else:
            amount = "{:.1f}/{:.1f} kB".format(done / 1e3, total / 1e3)
        self._stream.write("\r{} [{:<30}] {:3d}%  {}".format(self._label, "#" * (percent * 30 // 100), percent, amount))
        if percent >= 100:
            self._stream.write("\n")
        self._stream.flush()
