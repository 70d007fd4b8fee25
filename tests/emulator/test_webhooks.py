"""Completion webhooks: delivered when the turn ends, with the bearer token, retried, faults injected."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from sail_lite.emulator import EmulatorServer, WebhookFault

from .conftest import MODEL, Api


class Receiver:
    """A loopback HTTP server recording each POST; answers ``statuses`` in turn, then 200."""

    def __init__(self, statuses=()):
        self.statuses = list(statuses)
        self.received = []
        self.lock = threading.Lock()
        outer = self

        class Handle(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                with outer.lock:
                    outer.received.append((self.path, dict(self.headers), json.loads(body)))
                    status = outer.statuses.pop(0) if outer.statuses else 200
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handle)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.close()


def wait_for(predicate, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.01)


def create(api, url, token=None, **fields):
    metadata = {"completion_window": "balanced", "completion_webhook": url}
    if token:
        metadata["webhook_token"] = token
    body = {"model": MODEL, "input": "x", "max_output_tokens": 3, "background": True}
    body.update(metadata=metadata, **fields)
    return api.ok("POST", "/responses", json=body)


def test_a_finished_background_response_is_posted_with_its_token(api, emulator, receiver):
    created = create(api, receiver.url, token="tok_123")
    wait_for(lambda: emulator.webhook_deliveries(created["id"])["succeeded"] == 1)
    path, headers, body = receiver.received[0]
    assert path == "/hook" and headers["Authorization"] == "Bearer tok_123"
    assert headers["Content-Type"] == "application/json"
    assert body == api.ok("GET", "/responses/" + created["id"]) and body["status"] == "completed"
    assert emulator.stats()["webhooks"]["attempted"] == 1


def test_no_token_no_authorization_and_chat_and_messages_deliver_too(api, emulator, receiver):
    metadata = {"completion_webhook": receiver.url}
    api.ok(
        "POST",
        "/chat/completions",
        json={"model": MODEL, "messages": [{"role": "user", "content": "x"}], "metadata": metadata},
    )
    api.ok(
        "POST",
        "/messages",
        json={
            "model": MODEL,
            "max_tokens": 2,
            "messages": [{"role": "user", "content": "x"}],
            "metadata": metadata,
        },
    )
    wait_for(lambda: len(receiver.received) == 2)
    assert all("Authorization" not in headers for _, headers, _ in receiver.received)
    assert {body["object"] for _, _, body in receiver.received} == {"response"}


@pytest.mark.parametrize(
    "url", ["ftp://127.0.0.1/x", "http://example.com/hook", "not a url", "http://10.0.0.1/x"]
)
def test_invalid_or_non_loopback_urls_get_no_delivery(api, emulator, url):
    created = create(api, url)
    api.wait(created["id"])
    time.sleep(0.05)
    assert emulator.webhook_deliveries(created["id"])["attempted"] == 0


def test_non_2xx_is_retried_up_to_3_times_then_given_up():
    receiver = Receiver(statuses=[500, 503, 404, 500, 500])
    try:
        with EmulatorServer(webhook_retry_delay=0.01) as server:
            api = Api(server)
            created = create(api, receiver.url)
            wait_for(lambda: server.webhook_deliveries(created["id"])["gave_up"] == 1)
            counts = server.webhook_deliveries(created["id"])
            assert counts["attempted"] == 4 and counts["failed"] == 4 and counts["succeeded"] == 0
            api.close()
    finally:
        receiver.close()


def test_a_retry_after_a_failure_delivers():
    receiver = Receiver(statuses=[502])
    try:
        with EmulatorServer(webhook_retry_delay=0.01) as server:
            api = Api(server)
            created = create(api, receiver.url)
            wait_for(lambda: server.webhook_deliveries(created["id"])["succeeded"] == 1)
            assert server.webhook_deliveries(created["id"])["attempted"] == 2
            api.close()
    finally:
        receiver.close()


def test_a_network_error_is_retried():
    with EmulatorServer(webhook_retry_delay=0.01, webhook_timeout=1) as server:
        api = Api(server)
        created = create(api, "http://127.0.0.1:9/nothing-listens")
        wait_for(lambda: server.webhook_deliveries(created["id"])["gave_up"] == 1)
        assert server.webhook_deliveries(created["id"])["attempted"] == 4
        api.close()


def test_faults_drop_and_duplicate(api, emulator, receiver):
    emulator.add_webhook_fault(WebhookFault("drop", times=1))
    dropped = create(api, receiver.url)
    wait_for(lambda: emulator.webhook_deliveries(dropped["id"])["dropped"] == 1)
    emulator.add_webhook_fault(WebhookFault("duplicate", times=1))
    doubled = create(api, receiver.url)
    wait_for(lambda: emulator.webhook_deliveries(doubled["id"])["succeeded"] == 1)
    wait_for(lambda: len(receiver.received) == 2)
    assert [body["id"] for _, _, body in receiver.received] == [doubled["id"]] * 2
    assert emulator.webhook_deliveries(dropped["id"])["succeeded"] == 0


def test_a_delay_fault_delays_the_delivery(api, emulator, receiver):
    emulator.add_webhook_fault(WebhookFault("delay", times=1, delay=0.2))
    created = create(api, receiver.url)
    wait_for(lambda: emulator.webhook_deliveries(created["id"])["succeeded"] == 1)
    assert len(receiver.received) == 1
