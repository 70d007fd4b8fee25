"""Threads, forks, pickles and logs: the client in a real pipeline."""

from __future__ import annotations

import logging
import multiprocessing
import os
import pickle
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest

from sail_lite import Client

from ._spawned_client import sample_with_a_pickled_client
from .conftest import make_client

MODEL = "moonshotai/Kimi-K2.6"


def test_64_threads_share_one_client_without_pool_warnings(emulator, caplog):
    caplog.set_level(logging.WARNING, logger="urllib3")
    with make_client(emulator, max_workers=8) as client:

        def work(i):
            return client.responses.create(model=MODEL, input=f"hi {i}", max_output_tokens=4).id

        with ThreadPoolExecutor(
            64
        ) as pool:  # 64 callers, 8 connections: each waits its turn for one
            ids = list(pool.map(work, range(128)))
    assert len(set(ids)) == 128
    assert not [r for r in caplog.records if "pool is full" in r.getMessage()]
    assert emulator.stats()["connections"] <= 8  # keep-alive: the pool, reused


def _child_uses_inherited_client(client, queue):
    try:
        queue.put(("ok", [m.id for m in client.models.list()]))
    except BaseException as exc:  # pragma: no cover - reported to the parent
        queue.put(("error", repr(exc)))


@pytest.mark.skipif(
    sys.platform == "win32" or "fork" not in multiprocessing.get_all_start_methods(),
    reason="needs fork",
)
# Forking a process with live threads is the point of this test (3.12+ warns that it is risky in general).
@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
def test_a_forked_child_rebuilds_its_session(emulator):
    with make_client(emulator) as client:
        client.models.list()  # the parent has a live pooled connection now
        parent_transport = client._requester.transport
        context = multiprocessing.get_context("fork")
        queue = context.Queue()
        child = context.Process(target=_child_uses_inherited_client, args=(client, queue))
        child.start()
        status, payload = queue.get(timeout=30)
        child.join(30)
        assert status == "ok" and MODEL in payload
        assert client._requester.transport is parent_transport  # the parent's session is untouched
        assert [m.id for m in client.models.list()]


def _child_key(client, queue):
    queue.put(client._requester.new_idempotency_key())


@pytest.mark.skipif(
    sys.platform == "win32" or "fork" not in multiprocessing.get_all_start_methods(),
    reason="needs fork",
)
@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
def test_idempotency_keys_are_unique_and_a_forked_child_never_reuses_the_parents(emulator):
    # Keys are read from os.urandom in batches: a child inherits the parent's unread ones, and must drop them.
    with make_client(emulator) as client:
        requester = client._requester
        first = [requester.new_idempotency_key() for _ in range(3 * requester.KEYS_PER_READ)]
        assert len(set(first)) == len(first)
        assert all(
            key.startswith("sail-lite-") and len(key) == len("sail-lite-") + 32 for key in first
        )
        int(first[0][len("sail-lite-") :], 16)
        context = multiprocessing.get_context("fork")
        queue = context.Queue()
        child = context.Process(target=_child_key, args=(client, queue))
        child.start()
        child_key = queue.get(timeout=30)
        child.join(30)
        parent_next = [requester.new_idempotency_key() for _ in range(requester.KEYS_PER_READ)]
        assert child_key not in parent_next and child_key not in first


def test_a_pickled_client_works_in_a_spawned_process(emulator):
    with make_client(emulator) as client:
        expected = client.tokens.sample(
            [1, 2, 3], model=MODEL, max_tokens=3, temperature=0.0
        ).tokens
        context = multiprocessing.get_context("spawn")
        queue = context.Queue()
        process = context.Process(
            target=sample_with_a_pickled_client, args=(pickle.dumps(client), queue, MODEL)
        )
        process.start()
        got = queue.get(timeout=60)
        process.join(30)
    assert tuple(got) == expected


def test_debug_logs_never_show_keys_bodies_or_signed_queries(emulator, caplog, tmp_path):
    from sail_lite.adapters import make_adapter
    from sail_lite.emulator import Fault

    caplog.set_level(logging.DEBUG, logger="sail_lite")
    url = emulator.publish_tinker_checkpoint(make_adapter(tmp_path / "a"), ttl_seconds=60)
    emulator.faults.add(Fault("error", method="POST", path="/v1/responses", status=503, times=1))
    with make_client(emulator, sleep=lambda s: None) as client:
        client.tokens.sample(
            [9, 9, 9],
            model=MODEL,
            max_tokens=4,
            tinker_lora_signed_url=url,
            adapter_config={
                "r": 8,
                "peft_type": "LORA",
                "task_type": "CAUSAL_LM",
                "base_model_name_or_path": MODEL,
            },
        )
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "POST /responses -> 503 (attempt 1" in text
    assert "retry 1/2 in" in text
    assert "GET /responses/resp_" in text
    assert emulator.api_key not in text
    query = url.split("?", 1)[1]
    assert query not in text and "sig=" not in text
    assert "9,9,9" not in text and "[9, 9, 9]" not in text  # no bodies


def test_sail_log_switch_adds_one_stderr_handler():
    logger = logging.getLogger("sail_lite")
    saved_handlers, saved_level = list(logger.handlers), logger.level
    try:
        Client("k", environ={"SAIL_LOG": "debug"})
        Client("k", environ={"SAIL_LOG": "debug"})
        added = [h for h in logger.handlers if h not in saved_handlers]
        assert len(added) == 1 and logger.level == logging.DEBUG
    finally:
        logger.handlers[:] = saved_handlers
        logger.setLevel(saved_level)


def test_library_is_silent_by_default():
    import subprocess

    code = (
        "import sail_lite\n"
        "c = sail_lite.Client('k', base_url='http://127.0.0.1:1/v1', environ={}, sleep=lambda s: None)\n"
        "try:\n    c.models.list()\nexcept sail_lite.APIConnectionError:\n    pass\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "SAIL_LOG"}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert result.returncode == 0 and result.stdout == "" and result.stderr == ""


def test_a_script_that_ends_without_close_does_not_send_its_queued_creates(emulator):
    # The poller's executor threads are joined when the interpreter exits; what is still queued
    # then must be dropped, or a script that ends (or a Ctrl-C) sends every queued create first.
    import subprocess

    from sail_lite.emulator import Fault

    emulator.faults.add(Fault("delay", method="POST", path="/v1/responses", delay=0.3))
    code = (
        "import sail_lite\n"
        f"c = sail_lite.Client({emulator.api_key!r}, base_url={emulator.base_url!r}, environ={{}},"
        " max_workers=2)\n"
        "for i in range(30):\n"
        f"    c.tokens.submit([1, 2, i], model={MODEL!r}, max_tokens=2, completion_window='flex')\n"
    )
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    subprocess.run([sys.executable, "-c", code], cwd=root, timeout=120, check=True)
    sent = emulator.stats()["requests"].get("POST /v1/responses", 0)
    assert sent <= 3, sent  # the one create in flight at exit (one create thread), not 30
