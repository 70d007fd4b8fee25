"""EmulatorProcess: the emulator in a child process, ready when started, stopped on exit."""

from __future__ import annotations

import pytest

from sail_lite import Client
from sail_lite.emulator import EmulatorProcess

from .conftest import MODEL


def test_a_client_samples_from_the_child_and_its_admin_routes_answer():
    with EmulatorProcess("--seed", "3", turn_times={"balanced": 0.01}) as emulator:
        assert emulator.base_url == emulator.url + "/v1" and emulator.admin_token
        assert emulator.api_key not in repr(emulator)
        with Client(emulator.api_key, base_url=emulator.base_url, environ={}) as client:
            assert client.tokens.sample([1, 2, 3], model=MODEL, max_tokens=2).tokens
        assert emulator.stats()["inference_runs"] == 1
        emulator.reset()
        assert emulator.stats()["inference_runs"] == 0
        process = emulator.process
    assert process.poll() is not None and emulator.process is None
    assert repr(emulator) == "EmulatorProcess(stopped)"


def test_a_child_that_exits_before_its_banner_is_a_runtime_error():
    with pytest.raises(RuntimeError, match="exited before it was ready"):
        EmulatorProcess("--port", "70000").start()
