"""A Client given a WebhookReceiver (issue 23): futures complete by webhook, polling is the safety net.

Real HTTP both ways on loopback: the emulator delivers its webhooks to the
receiver, and requests are counted at the emulator. No timed assertions: a
future that completed long before the safety poll (``webhook_interval`` of
30 s here) completed by its webhook, which the request counts confirm.
"""

from __future__ import annotations

import http.client
import json
import os
import random
import threading
import time
from dataclasses import replace

import pytest

from sail_lite import ConfigurationError, PollPolicy
from sail_lite.emulator import EmulatorServer, WebhookFault
from sail_lite.journal import Journal
from sail_lite.webhooks import WebhookReceiver

from .conftest import FAST_POLL, FAST_RETRY

MODEL = "moonshotai/Kimi-K2.6"
CREATE, GET = "POST /v1/responses", "GET /v1/responses/{id}"
#: Far longer than any wait here: a result that comes is a webhook's, not a safety poll's.
PUSHED = replace(FAST_POLL, webhook_interval=30.0)
#: For the tests of lost webhooks: the safety schedule, short.
SAFETY = replace(FAST_POLL, webhook_interval=0.3)
WAIT = 20  # seconds a result may take before the test fails (never reached when all is well)


@pytest.fixture(scope="module")
def server():
    turns = {"asap": 0.0, "balanced": 0.1, "flex": 1.0}
    with EmulatorServer(seed=0, turn_times=turns, webhook_retry_delay=0.05) as server:
        yield server


@pytest.fixture
def emulator(server):
    server.reset()
    yield server


@pytest.fixture
def receiver():
    with WebhookReceiver() as receiver:
        yield receiver


def make_client(server, receiver, poll=PUSHED, **overrides):
    from sail_lite import Client

    options = dict(
        api_key=server.api_key,
        base_url=server.base_url,
        poll=poll,
        retry=FAST_RETRY,
        rng=random.Random(0),
        environ={},
        webhooks=receiver,
    )
    options.update(overrides)
    return Client(**options)


def requests_sent(emulator):
    return {route: n for route, n in emulator.stats()["requests"].items() if n}


def sent_metadata(emulator):
    return [record.params.metadata for record in emulator.state.responses.values()]


def post(receiver, body, token):
    conn = http.client.HTTPConnection("127.0.0.1", receiver.port, timeout=10)
    try:
        headers = {"Content-Type": "application/json", "Authorization": f"Bearer {token}"}
        conn.request("POST", receiver.path, body=json.dumps(body).encode(), headers=headers)
        reply = conn.getresponse()
        reply.read()
        return reply.status
    finally:
        conn.close()


def test_a_sample_completes_by_its_webhook_with_the_create_and_one_confirming_get(
    emulator, receiver
):
    with make_client(emulator, receiver) as client:
        future = client.tokens.submit([1, 2, 3], model=MODEL, max_tokens=4)
        sampled = future.result(timeout=WAIT)
    assert len(sampled.tokens) >= 1
    assert requests_sent(emulator) == {CREATE: 1, GET: 1}
    ((metadata),) = sent_metadata(emulator)
    assert metadata["completion_webhook"] == receiver.public_url
    assert metadata["webhook_token"] == receiver.token
    assert emulator.webhook_deliveries(future.response_id)["succeeded"] == 1
    assert receiver.watching == 0


def test_responses_submit_hands_back_no_token(emulator, receiver):
    with make_client(emulator, receiver) as client:
        response = client.responses.submit(model=MODEL, input="hi", max_output_tokens=4)
        response = response.result(timeout=WAIT)
        assert response.status == "completed"
        assert response.metadata["completion_webhook"] == receiver.public_url
        for shown in (response.metadata, response.raw["metadata"], repr(response)):
            assert "webhook_token" not in shown and receiver.token not in str(shown)
        assert receiver.token not in repr(client.responses.retrieve(response.id))
    assert requests_sent(emulator) == {CREATE: 1, GET: 2}  # the last GET is the retrieve above


def test_background_create_then_wait_completes_by_webhook(emulator, receiver):
    with make_client(emulator, receiver) as client:
        created = client.responses.create(
            model=MODEL, input="hi", max_output_tokens=4, completion_window="flex", background=True
        )
        assert "webhook_token" not in created.metadata
        done = client.responses.wait(created.id)
    assert done.status == "completed" and sent_metadata(emulator)[0]["webhook_token"]
    assert requests_sent(emulator) == {
        CREATE: 1,
        GET: 2,
    }  # the attach's read and the confirming one


def test_trusting_the_body_saves_the_get(emulator):
    with WebhookReceiver(trust_body=True) as receiver, make_client(emulator, receiver) as client:
        futures = [client.tokens.submit([5, i], model=MODEL, max_tokens=4) for i in range(4)]
        results = [f.result(timeout=WAIT) for f in futures]
    assert all(len(r.tokens) >= 1 for r in results)
    assert requests_sent(emulator).get(CREATE) == 4
    assert requests_sent(emulator).get(GET, 0) <= 1  # only a delivery that beat its watch is read


def test_with_a_tenth_of_the_webhooks_dropped_nothing_is_lost(emulator, receiver):
    emulator.add_webhook_fault(WebhookFault("drop", rate=0.1, seed=7))
    n = 40
    with make_client(emulator, receiver, poll=SAFETY) as client:
        futures = [client.tokens.submit([7, i], model=MODEL, max_tokens=4) for i in range(n)]
        results = [f.result(timeout=WAIT) for f in futures]
    assert all(len(r.tokens) >= 1 for r in results) and emulator.stats()["inference_runs"] == n
    dropped = [
        f.response_id for f in futures if emulator.webhook_deliveries(f.response_id)["dropped"]
    ]
    assert 1 <= len(dropped) < n // 2  # the seed drops a few: each was found by a safety poll
    assert requests_sent(emulator)[GET] >= n
    assert receiver.watching == 0


def test_repeated_deliveries_are_harmless(emulator, receiver):
    emulator.add_webhook_fault(WebhookFault("duplicate"))
    n = 8
    with make_client(emulator, receiver) as client:
        futures = [client.tokens.submit([9, i], model=MODEL, max_tokens=4) for i in range(n)]
        results = [f.result(timeout=WAIT) for f in futures]
    assert len({tuple(r.tokens) for r in results}) >= 1 and emulator.stats()["inference_runs"] == n
    assert requests_sent(emulator) == {CREATE: n, GET: n}
    assert all(emulator.webhook_deliveries(f.response_id)["duplicated"] == 1 for f in futures)


def test_a_delivery_with_a_wrong_token_is_refused_and_changes_nothing(emulator, receiver):
    with make_client(emulator, receiver) as client:
        future = client.tokens.submit([1, 1], model=MODEL, max_tokens=4, completion_window="flex")
        accepted = threading.Event()
        future.add_accepted_callback(lambda _f: accepted.set())
        assert accepted.wait(WAIT)
        forged = {
            "id": future.response_id,
            "object": "response",
            "status": "completed",
            "output": [],
        }
        assert post(receiver, forged, "not-the-token") == 401
        assert not future.done() and receiver.counts()["rejected"] == 1
        assert requests_sent(emulator) == {CREATE: 1}  # refused: no read was triggered
        assert len(future.result(timeout=WAIT).tokens) >= 1  # then the real webhook, 1 s turn
    assert requests_sent(emulator) == {CREATE: 1, GET: 1}


def test_the_callers_own_webhook_wins_and_that_response_is_polled(emulator, receiver):
    own = "http://127.0.0.1:9/elsewhere"  # loopback and closed: its deliveries fail
    with make_client(emulator, receiver, poll=FAST_POLL) as client:
        future = client.tokens.submit(
            [2, 2], model=MODEL, max_tokens=4, metadata={"completion_webhook": own}
        )
        assert len(future.result(timeout=WAIT).tokens) >= 1
    ((metadata),) = sent_metadata(emulator)
    assert metadata["completion_webhook"] == own and "webhook_token" not in metadata


def test_our_url_with_another_token_is_polled_as_usual(emulator, receiver):
    with make_client(emulator, receiver, poll=FAST_POLL) as client:
        metadata = {"completion_webhook": receiver.public_url, "webhook_token": "another"}
        future = client.tokens.submit([3, 3], model=MODEL, max_tokens=4, metadata=metadata)
        assert len(future.result(timeout=WAIT).tokens) >= 1
    assert receiver.counts()["delivered"] == 0


def test_map_with_a_receiver(emulator, receiver):
    prompts = [[4, i] for i in range(10)]
    with make_client(emulator, receiver) as client:
        results = list(client.tokens.map(prompts, model=MODEL, max_tokens=4, max_in_flight=4))
    assert len(results) == 10 and all(len(r.tokens) >= 1 for r in results)
    assert requests_sent(emulator) == {CREATE: 10, GET: 10}


def test_journaled_submit_and_map_record_no_token_and_resume_with_another_receiver(
    emulator, receiver, tmp_path
):
    path = str(tmp_path / "jobs.sqlite")
    prompts = [[6, i] for i in range(5)]
    with make_client(emulator, receiver) as client:
        with Journal(path) as journal:
            one = client.tokens.submit([6, 99], model=MODEL, max_tokens=4, journal=journal, job="a")
            mapped = list(
                client.tokens.map(prompts, model=MODEL, max_tokens=4, journal=journal, job="b")
            )
            assert len(one.result(timeout=WAIT).tokens) >= 1 and len(mapped) == 5
    assert requests_sent(emulator) == {CREATE: 6, GET: 6}
    for name in os.listdir(tmp_path):
        with open(tmp_path / name, "rb") as handle:
            assert receiver.token.encode() not in handle.read()
    # A re-run with another receiver (another URL and token): the same keys, nothing sent again.
    with WebhookReceiver() as other, make_client(emulator, other) as client:
        with Journal(path) as journal:
            again = client.tokens.submit(
                [6, 99], model=MODEL, max_tokens=4, journal=journal, job="a"
            )
            remapped = list(
                client.tokens.map(prompts, model=MODEL, max_tokens=4, journal=journal, job="b")
            )
            assert again.result(timeout=WAIT).tokens == one.result().tokens
            assert [r.tokens for r in remapped] == [r.tokens for r in mapped]
    assert requests_sent(emulator) == {CREATE: 6, GET: 6}


def test_a_closed_receiver_is_refused_at_the_call(emulator):
    receiver = WebhookReceiver()
    receiver.close()
    with make_client(emulator, receiver) as client:
        with pytest.raises(ConfigurationError, match="closed"):
            client.tokens.submit([1], model=MODEL, max_tokens=4)
    assert requests_sent(emulator) == {}


def test_webhooks_must_be_a_receiver(emulator):
    with pytest.raises(ConfigurationError, match="WebhookReceiver"):
        make_client(emulator, "http://127.0.0.1:1/hook")


def test_a_receiver_closed_mid_flight_costs_latency_only(emulator):
    receiver = WebhookReceiver()
    with make_client(emulator, receiver, poll=SAFETY) as client:
        future = client.tokens.submit([8, 8], model=MODEL, max_tokens=4, completion_window="flex")
        receiver.close()  # its deliveries now fail: the safety schedule finds the result
        assert len(future.result(timeout=WAIT).tokens) >= 1
    assert requests_sent(emulator)[GET] >= 1


def test_the_client_never_closes_a_receiver_it_was_given(emulator, receiver):
    with make_client(emulator, receiver) as client:
        client.tokens.submit([1, 5], model=MODEL, max_tokens=4).result(timeout=WAIT)
    with make_client(emulator, receiver) as client:  # the same receiver serves a second client
        client.tokens.submit([1, 6], model=MODEL, max_tokens=4).result(timeout=WAIT)
    assert requests_sent(emulator) == {CREATE: 2, GET: 2}


def test_a_delivery_that_beats_its_watcher_is_remembered():
    with WebhookReceiver(remember=2) as receiver:
        body = {"id": "resp_early", "object": "response", "status": "completed", "output": []}
        assert post(receiver, body, receiver.token) == 200
        for other in ("resp_x", "resp_y", "resp_z"):  # the oldest beyond `remember` is forgotten
            assert post(receiver, dict(body, id=other), receiver.token) == 200
        calls = []
        receiver.watch("resp_z", lambda rid, response: calls.append((rid, response)))
        assert calls == [("resp_z", None)] and receiver.watching == 0
        receiver.watch("resp_early", lambda rid, response: calls.append((rid, response)))
        assert len(calls) == 1 and receiver.watching == 1


def test_webhook_interval_is_checked():
    with pytest.raises(ConfigurationError, match="webhook_interval"):
        PollPolicy(webhook_interval=0)


def watched_by_a_poller(fetch):
    from concurrent.futures import Future

    from sail_lite.polling import Poller
    from sail_lite.types import Response

    poller = Poller(
        fetch,
        lambda response_id: None,
        policy=PUSHED,
        max_workers=2,
        clock=time.monotonic,
        rng=random.Random(0),
    )
    future = Future()
    nudge = poller.watch(
        Response(id="resp_1", status="queued"),
        future,
        window="balanced",
        deadline_at=None,
        transform=lambda response: response.status,
        pushed=True,
    )
    return poller, future, nudge


def test_a_webhook_during_a_poll_in_flight_polls_once_more_at_once():
    from sail_lite.types import Response

    entered, gate, calls = threading.Event(), threading.Event(), []

    def fetch(response_id, deadline_at, read_timeout):
        calls.append(response_id)
        if len(calls) == 1:  # this poll left before the response ended
            entered.set()
            gate.wait(WAIT)
            return Response(id=response_id, status="in_progress")
        return Response(id=response_id, status="completed")

    poller, future, nudge = watched_by_a_poller(fetch)
    try:
        nudge(None)
        assert entered.wait(WAIT)
        nudge(None)  # a delivery while that poll is in flight
        gate.set()
        assert future.result(timeout=WAIT) == "completed" and len(calls) == 2
        assert poller.in_flight == 0
    finally:
        poller.close()


def test_a_trusted_body_settles_without_a_read_and_a_settled_watch_ignores_nudges():
    from sail_lite.types import Response

    calls = []
    poller, future, nudge = watched_by_a_poller(lambda *args: calls.append(args))
    try:
        nudge(Response(id="resp_1", status="completed"))
        assert future.result(timeout=WAIT) == "completed"
        nudge(None)
        assert calls == [] and poller.in_flight == 0 and poller.next_due() is None
    finally:
        poller.close()
