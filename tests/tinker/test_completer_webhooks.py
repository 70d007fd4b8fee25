"""SailTokenCompleter on a client with a WebhookReceiver (issue 23): sync, async, map and journal paths.

Runs in every test run (the ``cookbook`` fixture stands in for tinker-cookbook
when it is not installed). The safety poll is 30 s away, so a result that
comes completed by its webhook; the emulator's request counts confirm it.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace

import pytest

from sail_lite import SailTokenCompleter
from sail_lite.journal import Journal
from sail_lite.webhooks import WebhookReceiver

from ..conftest import FAST_POLL, make_client

MODEL = "moonshotai/Kimi-K2.6"
PUSHED = replace(FAST_POLL, webhook_interval=30.0)
CREATE, GET = "POST /v1/responses", "GET /v1/responses/{id}"


@pytest.fixture
def pushed_client(emulator):
    with WebhookReceiver() as receiver, make_client(
        emulator, poll=PUSHED, webhooks=receiver
    ) as client:
        yield client


def sent(emulator):
    return {route: n for route, n in emulator.stats()["requests"].items() if n}


def test_the_completer_completes_by_webhook(cookbook, pushed_client, emulator):
    sampler = SailTokenCompleter(model=MODEL, max_tokens=4, client=pushed_client)
    blocking = sampler.sample_tokens([1, 2, 3], stop=[])
    awaited = asyncio.run(sampler([1, 2, 4], []))
    mapped = list(sampler.map([[1, 2, 5], [1, 2, 6]], max_in_flight=2))
    assert all(isinstance(r, cookbook.TokensWithLogprobs) for r in [blocking, awaited, *mapped])
    assert sent(emulator) == {CREATE: 4, GET: 4}
    metadata = [r.params.metadata for r in emulator.state.responses.values()]
    assert all(m["completion_webhook"] == pushed_client.webhooks.public_url for m in metadata)


def test_the_journaled_completer_completes_by_webhook(cookbook, pushed_client, emulator, tmp_path):
    sampler = SailTokenCompleter(model=MODEL, max_tokens=4, client=pushed_client)
    with Journal(str(tmp_path / "j.sqlite")) as journal:
        future = sampler.submit([3, 2, 1], [], journal=journal, job="rollouts")
        assert isinstance(future.result(timeout=20), cookbook.TokensWithLogprobs)
    assert sent(emulator) == {CREATE: 1, GET: 1}
