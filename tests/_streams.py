"""A text stream that says whether it is a terminal: what the CLI's output and progress decide by."""

import io

__all__ = ["Stream"]


class Stream(io.StringIO):
    def __init__(self, tty: bool) -> None:
        super().__init__()
        self.tty = tty

    def isatty(self) -> bool:
        return self.tty
