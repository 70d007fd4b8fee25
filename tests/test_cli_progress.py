"""Progress output: redrawn in place on a terminal, whole lines on a pipe or in CI."""

from __future__ import annotations

import pytest

from sail_lite._progress import ProgressBar, interactive

from ._streams import Stream


def feed(bar, total, steps):
    for done in range(0, total + 1, total // steps):
        bar(done, total)


def test_a_terminal_gets_one_line_redrawn_in_place():
    stream = Stream(tty=True)
    feed(ProgressBar("uploading", stream), 2_000_000, 200)
    text = stream.getvalue()
    assert text.count("\r") == 101 and text.count("\n") == 1 and text.endswith("100%  2.0/2.0 MB\n")


def test_a_pipe_gets_a_line_per_step_and_no_carriage_return():
    stream = Stream(tty=False)
    feed(ProgressBar("uploading", stream), 2_000_000, 200)
    lines = stream.getvalue().splitlines()
    assert "\r" not in stream.getvalue()
    assert len(lines) == 11  # 0%, 10%, ..., 100%
    assert [line.split("]")[1].split("%")[0].strip() for line in lines] == [
        str(p) for p in range(0, 101, 10)
    ]
    assert all(line.startswith("uploading [") for line in lines) and lines[-1].endswith(
        "2.0/2.0 MB"
    )


def test_items_on_a_pipe_are_a_line_each():
    stream = Stream(tty=False)
    bar = ProgressBar("sampling", stream, in_bytes=False)
    for done in range(1, 5):
        bar(done, 4)
    assert [line.split()[-1] for line in stream.getvalue().splitlines()] == [
        "1/4",
        "2/4",
        "3/4",
        "4/4",
    ]


@pytest.mark.parametrize(
    "tty, environ, expected",
    [
        (True, {}, True),
        (False, {}, False),
        (True, {"CI": "true"}, False),
        (True, {"TERM": "dumb"}, False),
    ],
)
def test_interactive_means_a_tty_outside_ci(tty, environ, expected):
    assert interactive(Stream(tty), environ) is expected


def test_a_stream_without_isatty_is_not_interactive():
    class Bare:
        def write(self, text):
            pass

    assert interactive(Bare()) is False  # type: ignore[arg-type]
