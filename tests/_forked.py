"""Run a test worker's ``main(argv)`` in its own process, forked from a warm single-threaded server.

A fresh ``python -m tests._journal_worker`` costs about 0.3 s of CPU (interpreter start-up and the
imports), and the crash tests start about twenty. A multiprocessing forkserver imports the worker
modules once and forks each child from that single-threaded process (forking the threaded pytest
process itself would not be safe). The child is still a process of its own: a SIGKILL kills it
alone, and its exit status is what the worker's ``main`` returned (130 after Ctrl-C), as with
``python -m``.
"""

from __future__ import annotations

import importlib
import multiprocessing
import os
import signal
import sys
from typing import List, NamedTuple

PRELOAD = ["tests._journal_worker", "tests._journal_submit_worker"]


class Finished(NamedTuple):
    """What the tests read of a ``subprocess.CompletedProcess``."""

    returncode: int
    stderr: str


def _child(module: str, argv: List[str], output_path: str) -> None:
    # Ctrl-C raises KeyboardInterrupt, as in a program started from a terminal: an xdist worker (and so
    # the forkserver it starts, and its children) inherits SIGINT ignored.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    fd = os.open(output_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    sys.exit(importlib.import_module(module).main(argv))


def start(module: str, argv: List[str], output_path) -> multiprocessing.process.BaseProcess:
    """Start ``module.main(argv)`` in a forked child; its stdout and stderr go to ``output_path``."""
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(PRELOAD)  # read once, when the server starts
    process = context.Process(
        target=_child, args=(module, [str(a) for a in argv], str(output_path))
    )
    process.start()
    return process


def run(module: str, argv: List[str], output_path, timeout: float = 120) -> Finished:
    """``start`` and wait; a child still running after ``timeout`` is killed and fails the test."""
    process = start(module, argv, output_path)
    process.join(timeout)
    if process.exitcode is None:
        process.kill()
        process.join()
        raise AssertionError(f"{module} {argv} did not finish within {timeout} s")
    with open(str(output_path)) as handle:
        return Finished(process.exitcode, handle.read())
