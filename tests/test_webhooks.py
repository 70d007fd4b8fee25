"""WebhookReceiver (issue 23): real HTTP posts on loopback."""

from __future__ import annotations

import http.client
import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from sail_lite.errors import ConfigurationError
from sail_lite.webhooks import WebhookReceiver


def response_body(response_id="resp_1", status="completed", **extra):
    return {"id": response_id, "object": "response", "status": status, "output": [], **extra}


def post(receiver, body, *, token=None, path=None, headers=None, method="POST"):
    """One delivery on a fresh connection: (status, decoded body)."""
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    conn = http.client.HTTPConnection("127.0.0.1", receiver.port, timeout=10)
    try:
        sent = {"Content-Type": "application/json"}
        if token is not False:
            sent["Authorization"] = f"Bearer {receiver.token if token is None else token}"
        sent.update(headers or {})
        conn.request(method, path or receiver.path, body=data, headers=sent)
        reply = conn.getresponse()
        return reply.status, reply.read()
    finally:
        conn.close()


@pytest.fixture
def receiver():
    with WebhookReceiver() as receiver:
        yield receiver


class Calls:
    def __init__(self):
        self.calls = []
        self.lock = threading.Lock()
        self.event = threading.Event()

    def __call__(self, response_id, response):
        with self.lock:
            self.calls.append((response_id, response))
        self.event.set()

    def wait(self, count):
        """The calls once there are ``count`` (watchers run just after the reply is sent)."""
        deadline = time.monotonic() + 10
        while len(self.calls) < count and time.monotonic() < deadline:
            time.sleep(0.005)
        return self.calls


def test_delivery_signals_the_watcher_once(receiver):
    calls = Calls()
    receiver.watch("resp_1", calls)
    assert post(receiver, response_body())[0] == 200
    assert calls.event.wait(10)
    assert calls.calls == [("resp_1", None)]  # by default a signal, not the body
    assert receiver.watching == 0 and receiver.counts()["delivered"] == 1


def test_repeats_deliver_once(receiver):
    calls = Calls()
    receiver.watch("resp_1", calls)
    for _ in range(5):
        assert post(receiver, response_body())[0] == 200
    assert receiver.counts() == {"delivered": 1, "ignored": 4, "rejected": 0}
    assert calls.wait(1) == [("resp_1", None)]


def test_watching_again_after_a_delivery_hears_the_next_one(receiver):
    calls = Calls()
    receiver.watch("resp_1", calls)
    post(receiver, response_body())
    receiver.watch("resp_1", calls)  # the authoritative read said: still running
    post(receiver, response_body())
    assert receiver.counts()["delivered"] == 2 and len(calls.wait(2)) == 2


def test_wrong_or_missing_token_is_401_and_ignored(receiver):
    calls = Calls()
    receiver.watch("resp_1", calls)
    status, _ = post(receiver, response_body(), token="nope")
    assert status == 401
    assert post(receiver, response_body(), token=False)[0] == 401
    assert post(receiver, response_body(), token=receiver.token + "x")[0] == 401
    assert post(receiver, response_body(), headers={"Authorization": receiver.token})[0] == 401
    assert calls.calls == [] and receiver.watching == 1
    assert receiver.counts()["rejected"] == 4


def test_oversize_body_is_413_unread():
    with WebhookReceiver(max_body_bytes=1000) as receiver:
        calls = Calls()
        receiver.watch("resp_1", calls)
        big = response_body(padding="x" * 2000)
        assert post(receiver, big)[0] == 413
        assert calls.calls == []
        # a body just under the cap is fine
        assert post(receiver, response_body(padding="x" * 800))[0] == 200
        assert calls.wait(1) == [("resp_1", None)]


def test_unknown_id_is_2xx_and_ignored(receiver):
    calls = Calls()
    receiver.watch("resp_1", calls)
    assert post(receiver, response_body("resp_other"))[0] == 200
    assert calls.calls == [] and receiver.watching == 1
    assert receiver.counts()["ignored"] == 1


@pytest.mark.parametrize(
    "body, status",
    [
        (b"not json", 400),
        (b"[1, 2]", 400),
        (json.dumps({"status": "completed"}).encode(), 400),
        (json.dumps({"id": 7}).encode(), 400),
        (b"\xff\xfe", 400),
    ],
)
def test_malformed_bodies_are_400(receiver, body, status):
    assert post(receiver, body)[0] == status


def test_wrong_path_and_method(receiver):
    assert post(receiver, response_body(), path="/elsewhere")[0] == 404
    assert post(receiver, response_body(), method="GET")[0] == 405
    assert post(receiver, response_body(), method="PUT")[0] == 405


def test_missing_content_length_is_411(receiver):
    conn = http.client.HTTPConnection("127.0.0.1", receiver.port, timeout=10)
    try:
        conn.putrequest("POST", receiver.path)
        conn.putheader("Authorization", f"Bearer {receiver.token}")
        conn.endheaders()
        assert conn.getresponse().status == 411
    finally:
        conn.close()


def test_concurrent_deliveries(receiver):
    ids = [f"resp_{n}" for n in range(40)]
    calls = Calls()
    for response_id in ids:
        receiver.watch(response_id, calls)
    # every id delivered three times at once, from 16 senders
    with ThreadPoolExecutor(16) as pool:
        statuses = list(pool.map(lambda rid: post(receiver, response_body(rid))[0], ids * 3))
    assert statuses == [200] * len(ids) * 3
    assert receiver.counts() == {"delivered": 40, "ignored": 80, "rejected": 0}
    assert sorted(rid for rid, _ in calls.wait(40)) == sorted(ids)


def test_keep_alive_connection_carries_several_deliveries(receiver):
    calls = Calls()
    receiver.watch("resp_a", calls)
    receiver.watch("resp_b", calls)
    conn = http.client.HTTPConnection("127.0.0.1", receiver.port, timeout=10)
    try:
        for rid in ("resp_a", "resp_b"):
            conn.request(
                "POST",
                receiver.path,
                body=json.dumps(response_body(rid)),
                headers={"Authorization": f"Bearer {receiver.token}"},
            )
            reply = conn.getresponse()
            reply.read()
            assert reply.status == 200
    finally:
        conn.close()
    assert sorted(rid for rid, _ in calls.wait(2)) == ["resp_a", "resp_b"]


def test_trusted_body_hands_the_response_and_skips_non_final_ones():
    with WebhookReceiver(trust_body=True) as receiver:
        calls = Calls()
        receiver.watch("resp_1", calls)
        assert post(receiver, response_body(status="in_progress"))[0] == 200
        assert calls.calls == [] and receiver.watching == 1
        post(receiver, response_body(status="completed"))
        ((rid, response),) = calls.wait(1)
        assert rid == "resp_1" and response.status == "completed"
        # a body that is not a response (status not a string) is refused, not trusted
        receiver.watch("resp_2", calls)
        assert post(receiver, {"id": "resp_2", "status": 5})[0] == 400
        assert receiver.watching == 1


def test_watcher_that_raises_does_not_break_the_reply(receiver, caplog):
    def boom(response_id, response):
        raise RuntimeError("watcher bug")

    receiver.watch("resp_1", boom)
    assert post(receiver, response_body())[0] == 200
    assert post(receiver, response_body())[0] == 200
    deadline = time.monotonic() + 10
    while "watcher bug" not in caplog.text and time.monotonic() < deadline:
        time.sleep(0.005)
    assert "watcher bug" in caplog.text


def test_unwatch(receiver):
    calls = Calls()
    receiver.watch("resp_1", calls)
    assert receiver.unwatch("resp_1") and not receiver.unwatch("resp_1")
    post(receiver, response_body())
    assert calls.calls == []


def test_metadata_url_and_generated_token():
    with WebhookReceiver() as one, WebhookReceiver() as two:
        assert one.token != two.token and len(one.token) >= 32
        meta = one.metadata()
        assert meta == {"completion_webhook": one.public_url, "webhook_token": one.token}
        assert meta["completion_webhook"] == f"http://127.0.0.1:{one.port}/sail/webhook"
        assert one.token not in repr(one)


def test_public_url_names_what_sail_calls_and_its_path_is_served():
    with WebhookReceiver(
        public_url="https://hooks.example.com/in/sail?x=1", token="t0k"
    ) as receiver:
        assert receiver.metadata()["completion_webhook"] == "https://hooks.example.com/in/sail?x=1"
        assert receiver.path == "/in/sail" and receiver.token == "t0k"
        calls = Calls()
        receiver.watch("resp_1", calls)
        assert post(receiver, response_body(), path="/in/sail?x=1")[0] == 200
        assert calls.wait(1) == [("resp_1", None)]


def test_ipv6_loopback():
    try:
        receiver = WebhookReceiver("::1")
    except ConfigurationError:
        pytest.skip("no IPv6 loopback here")
    with receiver:
        assert receiver.public_url == f"http://[::1]:{receiver.port}/sail/webhook"
        conn = http.client.HTTPConnection("::1", receiver.port, timeout=10)
        conn.request("POST", receiver.path, body=b"{}", headers={"Authorization": "Bearer x"})
        assert conn.getresponse().status == 401
        conn.close()


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"host": "0.0.0.0"}, "public_url"),
        ({"public_url": "ftp://x/y"}, "http"),
        ({"public_url": "/relative"}, "http"),
        ({"token": ""}, "token"),
        ({"token": "has space"}, "token"),
        ({"port": 70000}, "cannot listen"),
    ],
)
def test_bad_configuration_is_refused(kwargs, match):
    with pytest.raises(ConfigurationError, match=match):
        WebhookReceiver(**kwargs)


def test_busy_port_is_a_configuration_error(receiver):
    with pytest.raises(ConfigurationError, match="cannot listen"):
        WebhookReceiver(port=receiver.port)


def test_close_frees_the_port_and_is_idempotent():
    receiver = WebhookReceiver().start()
    port = receiver.port
    receiver.watch("resp_1", Calls())
    receiver.close()
    receiver.close()
    assert receiver.watching == 0
    with pytest.raises(ConfigurationError, match="closed"):
        receiver.start()
    with WebhookReceiver(port=port):
        pass
