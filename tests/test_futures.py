"""Futures know their idempotency key at once and their response id as soon as the create is accepted."""

from __future__ import annotations

import threading

import pytest

from sail_lite import ResponseFuture, SampledTokens
from sail_lite.errors import AuthenticationError

from .conftest import make_client

MODEL = "moonshotai/Kimi-K2.6"
PROMPT = [72, 101, 108, 108, 111]


def test_submit_exposes_the_key_at_once_and_the_response_id_before_the_result():
    from sail_lite.emulator import EmulatorServer

    accepted = threading.Event()
    seen = []
    with EmulatorServer(turn_times={"flex": 0.5}) as server, make_client(server) as client:
        future = client.tokens.submit(PROMPT, model=MODEL, max_tokens=4, completion_window="flex")
        assert isinstance(future, ResponseFuture)
        assert future.idempotency_key and future.idempotency_key.startswith("sail-lite-")

        def on_accepted(f):
            seen.append((f.response_id, f.done()))
            accepted.set()

        future.add_accepted_callback(on_accepted)
        assert accepted.wait(5)
        response_id, was_done = seen[0]
        assert response_id and response_id.startswith("resp_") and not was_done
        assert future.response_id == response_id
        assert future.result(10).response_id == response_id
        late = []
        future.add_accepted_callback(
            lambda f: late.append(f.response_id)
        )  # already accepted: runs at once
        assert late == [response_id]


def test_a_given_key_is_the_one_sent_and_a_resend_replays(emulator):
    with make_client(emulator) as client:
        first = client.tokens.submit(PROMPT, model=MODEL, max_tokens=4, idempotency_key="job-1")
        assert first.idempotency_key == "job-1"
        again = client.tokens.submit(PROMPT, model=MODEL, max_tokens=4, idempotency_key="job-1")
        assert first.result(10) == again.result(10)
        assert first.response_id == again.response_id
    assert emulator.stats()["inference_runs"] == 1


def test_attach_resumes_a_sample_by_id_from_another_client(emulator):
    with make_client(emulator) as client:
        future = client.tokens.submit(PROMPT, model=MODEL, max_tokens=4)
        expected = future.result(10)
    with make_client(emulator) as other:
        resumed = other.tokens.attach(future.response_id)
        assert isinstance(resumed, ResponseFuture) and resumed.response_id == future.response_id
        assert resumed.result(10) == expected
        assert other.responses.attach(future.response_id).result(10).id == future.response_id
    assert isinstance(expected, SampledTokens)
    assert emulator.stats()["inference_runs"] == 1


def test_accepted_callbacks_never_run_when_the_create_fails(emulator):
    calls = []
    with make_client(emulator, api_key="sk-wrong") as client:
        future = client.tokens.submit(PROMPT, model=MODEL, max_tokens=4)
        future.add_accepted_callback(calls.append)
        with pytest.raises(AuthenticationError):
            future.result(10)
    assert future.response_id is None and calls == []


def test_a_raising_accepted_callback_is_logged_and_harmless(emulator, caplog):
    with make_client(emulator) as client:
        future = client.tokens.submit(PROMPT, model=MODEL, max_tokens=4)
        future.add_accepted_callback(lambda f: 1 / 0)
        assert future.result(10).tokens


def test_a_cancel_right_before_close_still_reaches_the_server():
    from sail_lite.emulator import EmulatorServer

    with EmulatorServer(turn_times={"flex": 30.0}) as server:
        client = make_client(server)
        future = client.tokens.submit(PROMPT, model=MODEL, max_tokens=4, completion_window="flex")
        accepted = threading.Event()
        future.add_accepted_callback(lambda f: accepted.set())
        assert accepted.wait(10)
        assert future.cancel()
        client.close()  # the queued server-side cancel runs before the connections close
        assert server.stats()["cancellations"] == 1


def test_accepted_callbacks_run_exactly_once_when_adding_races_with_acceptance():
    for _ in range(200):
        future = ResponseFuture(idempotency_key="k")
        calls = []
        start = threading.Barrier(3)

        def add(tag, future=future, calls=calls, start=start):
            start.wait()
            for i in range(20):
                future.add_accepted_callback(lambda f, i=i: calls.append((tag, i)))

        adders = [threading.Thread(target=add, args=(tag,)) for tag in "ab"]
        for thread in adders:
            thread.start()
        start.wait()
        future.set_accepted("resp_1")
        for thread in adders:
            thread.join()
        assert sorted(calls) == sorted((tag, i) for tag in "ab" for i in range(20))


def test_response_future_uses_no_private_name_of_concurrent_futures():
    # Issue 22: no reach into CPython's Future._condition (or any other internal): every
    # self._name the module reads must be one it defines itself.
    import ast
    import inspect

    from sail_lite import _future

    tree = ast.parse(inspect.getsource(_future))
    defined = {
        node.attr
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store)
    }
    defined |= {n.name for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)}
    defined |= {
        t.id
        for n in ast.walk(tree)
        if isinstance(n, ast.Assign)
        for t in n.targets
        if isinstance(t, ast.Name)
    }
    used = {
        node.attr
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute)
        and node.attr.startswith("_")
        and not node.attr.startswith("__")
    }
    assert used <= defined, used - defined
