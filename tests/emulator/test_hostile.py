"""Hostile clients: bounded reads, authentication before any body, caps, timeouts, and a fuzzer.

Every request here is sent over a raw socket, so the test controls each byte
(and when it is sent) and sees exactly what the server answers.
"""

from __future__ import annotations

import json
import os
import random
import socket
import struct
import threading
import time

import pytest

from sail_lite.emulator import EmulatorServer

from .conftest import MODEL, PLACEHOLDER, Api, assert_error_body
from .test_bad_input import GOOD_CONFIG, upload


def address(server):
    host, port = server.url[len("http://") :].split(":")
    return host, int(port)


def read_reply(sock, timeout=10.0):
    """One HTTP reply from ``sock``: (status, headers dict, body bytes); (None, {}, b"") if none came."""
    sock.settimeout(timeout)
    data = b""
    try:
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            if not chunk:
                return None, {}, b""
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        headers = {
            k.strip().lower(): v.strip() for k, _, v in (item.partition(":") for item in lines[1:])
        }
        length = int(headers.get("content-length", "0"))
        while len(body) < length:
            chunk = sock.recv(65536)
            if not chunk:
                break
            body += chunk
        return int(lines[0].split()[1]), headers, body
    except (socket.timeout, ConnectionError):
        return None, {}, b""


def exchange(server, payload, timeout=10.0):
    """Send ``payload`` on a fresh connection, keep it open, and read one reply."""
    with socket.create_connection(address(server), timeout=timeout) as sock:
        sock.sendall(payload)
        return read_reply(sock, timeout)


def head(method, path, headers):
    lines = [f"{method} {path} HTTP/1.1", "Host: emulator"]
    lines.extend(f"{k}: {v}" for k, v in headers.items())
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def still_serving(server):
    assert Api(server).ok("GET", "/models")["data"]


# -- authentication before any body; bounded reads ------------------------------------------------------------


def test_a_chunk_size_of_minus_one_is_not_a_read_to_eof(emulator):
    # Before: the server read until the client closed, buffering everything, before it answered 401.
    request = head(
        "POST", "/v1/responses", {"Authorization": "Bearer wrong", "Transfer-Encoding": "chunked"}
    )
    status, _, body = exchange(emulator, request + b"-1\r\n" + b"x" * 65536, timeout=5)
    assert status == 401 and json.loads(body)["error"]["code"] == "invalid_api_key"
    key = {"Authorization": "Bearer " + emulator.api_key, "Transfer-Encoding": "chunked"}
    status, _, body = exchange(
        emulator, head("POST", "/v1/responses", key) + b"-1\r\n" + b"x" * 65536, timeout=5
    )
    assert status == 400 and "chunk" in json.loads(body)["error"]["message"]
    still_serving(emulator)


def test_no_key_gets_401_before_a_huge_declared_body_is_sent(emulator):
    request = head("POST", "/v1/responses", {"Content-Length": str(10**12)})
    status, headers, _ = exchange(emulator, request, timeout=5)
    assert status == 401 and headers.get("connection") == "close"


def test_expect_100_continue_is_answered_only_after_authentication(emulator):
    request = head(
        "POST",
        "/v1/responses",
        {"Authorization": "Bearer wrong", "Content-Length": "100", "Expect": "100-continue"},
    )
    status, _, _ = exchange(emulator, request, timeout=5)
    assert (
        status == 401
    )  # not "100 Continue": an unauthenticated client is never asked for its body
    body = json.dumps({"model": MODEL, "input": "hi", "max_output_tokens": 2}).encode()
    with socket.create_connection(address(emulator), timeout=10) as sock:
        sock.sendall(
            head(
                "POST",
                "/v1/responses",
                {
                    "Authorization": "Bearer " + emulator.api_key,
                    "Content-Length": str(len(body)),
                    "Expect": "100-continue",
                },
            )
        )
        assert sock.recv(64).startswith(b"HTTP/1.1 100 Continue\r\n\r\n")
        sock.sendall(body)
        assert read_reply(sock)[0] == 200


@pytest.mark.parametrize(
    "length", ["\u00b2", "-1", "+5", "1e3", "0x10", "99999999999999999999", "5, 5"]
)
def test_a_content_length_that_is_not_ascii_digits_is_400(emulator, length):
    request = head(
        "POST",
        "/v1/responses",
        {"Authorization": "Bearer " + emulator.api_key, "Content-Length": length},
    )
    status, _, body = exchange(emulator, request + b"{}", timeout=5)
    assert status == 400 and "Content-Length" in json.loads(body)["error"]["message"]
    still_serving(emulator)


# -- JSON caps ----------------------------------------------------------------------------------------------


def test_json_bodies_are_capped_by_default_at_a_few_megabytes():
    with EmulatorServer() as server:
        assert server.max_body_bytes <= 32 * 1024**2
        request = head(
            "POST",
            "/v1/responses",
            {"Authorization": "Bearer " + server.api_key, "Content-Length": str(100 * 1024**2)},
        )
        status, headers, body = exchange(server, request + b'{"model": ', timeout=5)
        assert status == 413 and json.loads(body)["error"]["code"] == "request_too_large"
        assert headers.get("connection") == "close"
        still_serving(server)


def test_a_chunked_json_body_over_the_cap_is_413_while_streaming():
    with EmulatorServer(max_body_bytes=4096) as server:
        request = head(
            "POST",
            "/v1/chat/completions",
            {"Authorization": "Bearer " + server.api_key, "Transfer-Encoding": "chunked"},
        )
        chunks = b"".join(b"400\r\n" + b" " * 1024 + b"\r\n" for _ in range(8))
        status, _, body = exchange(server, request + chunks, timeout=5)
        assert status == 413 and json.loads(body)["error"]["code"] == "request_too_large"
        still_serving(server)


def test_batches_have_their_own_larger_cap():
    with EmulatorServer(max_body_bytes=2048, max_batch_bytes=1 << 20) as server:
        api = Api(server)
        items = [
            {"custom_id": f"q-{i}", "params": {"model": MODEL, "input": "x" * 40}}
            for i in range(40)
        ]
        assert len(json.dumps({"requests": items})) > 2048
        assert api.ok("POST", "/batches", json={"requests": items})["request_counts"]["total"] == 40
        assert_error_body(
            api("POST", "/responses", json={"model": MODEL, "input": "x" * 4096}), 413
        )


@pytest.mark.parametrize(
    "path", ["/v1/responses", "/v1/chat/completions", "/v1/messages", "/v1/loras", "/v1/batches"]
)
def test_deeply_nested_json_is_400(emulator, path):
    api = Api(emulator)
    for body in (
        b"[" * 100_000 + b"]" * 100_000,
        b'{"model": ' + b'{"a": ' * 50_000 + b"1" + b"}" * 50_001,
    ):
        reply = api("POST", path[3:], data=body, headers={"Content-Type": "application/json"})
        assert_error_body(reply, 400, "invalid_json")
    still_serving(emulator)


# -- adapters nested too deeply --------------------------------------------------------------------------------


def nested_header(depth):
    header = b'{"__metadata__": ' + b"[" * depth + b"]" * depth + b"}"
    return struct.pack("<Q", len(header)) + header


def test_a_deeply_nested_safetensors_header_is_a_failed_validation_not_a_half_created_lora(
    emulator,
):
    api = Api(emulator)
    body = {
        "name": "nested",
        "supported_models": [MODEL],
        "config_file_id": upload(api, "adapter_config.json", GOOD_CONFIG),
        "weights_file_id": upload(api, "adapter_model.safetensors", nested_header(100_000)),
    }
    created = api.ok("POST", "/loras", json=body)
    assert [v["model"] for v in created["validations"]] == [MODEL]
    lora = wait_validated(api, "nested")
    assert lora["validations"][0]["status"] == "failed"
    assert lora["validations"][0]["result_code"] == "invalid_safetensors"
    assert "deeply" in lora["validations"][0]["result_message"]
    assert [item["name"] for item in api.ok("GET", "/loras")["data"]] == ["nested"]


def test_a_deeply_nested_adapter_config_is_a_failed_validation(emulator, tmp_path):
    from sail_lite.adapters import make_adapter

    folder = make_adapter(tmp_path / "a")
    api = Api(emulator)
    config = b'{"peft_type": "LORA", "x": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    body = {
        "name": "nested-config",
        "supported_models": [MODEL],
        "config_file_id": upload(api, "adapter_config.json", config),
        "weights_file_id": upload(
            api, "adapter_model.safetensors", read(folder, "adapter_model.safetensors")
        ),
    }
    api.ok("POST", "/loras", json=body)
    validation = wait_validated(api, "nested-config")["validations"][0]
    assert validation["status"] == "failed" and validation["result_code"] == "invalid_config_json"


def read(folder, name):
    with open(os.path.join(folder, name), "rb") as handle:
        return handle.read()


def wait_validated(api, name):
    deadline = time.monotonic() + 10
    while True:
        lora = api.ok("GET", "/loras/" + name)
        if lora["status"] != "pending_validation" or time.monotonic() > deadline:
            return lora
        time.sleep(0.01)


# -- unverified validations ------------------------------------------------------------------------------------


def test_unverified_validations_are_producible_and_usable(tmp_path):
    from sail_lite.adapters import make_adapter

    with EmulatorServer(unverified_models=[MODEL]) as server:
        api = Api(server)
        folder = make_adapter(tmp_path / "a")
        body = {
            "name": "unchecked",
            "supported_models": [MODEL],
            "config_file_id": upload(
                api, "adapter_config.json", read(folder, "adapter_config.json")
            ),
            "weights_file_id": upload(api, "adapter_model.safetensors", b"not even safetensors"),
        }
        api.ok("POST", "/loras", json=body)
        lora = wait_validated(api, "unchecked")
        validation = lora["validations"][0]
        assert validation["status"] == "unverified" and lora["status"] == "ready"
        assert validation["result_code"] is None
        # wire.md: only a failed latest validation blocks requests; unverified remains usable.
        reply = api.ok(
            "POST",
            "/responses",
            json={
                "model": MODEL,
                "input": PLACEHOLDER,
                "raw_prompt_tokens": [1, 2],
                "background": True,
                "max_output_tokens": 2,
                "metadata": {"lora": "unchecked"},
            },
        )
        assert api.wait(reply["id"])["status"] == "completed"
    with pytest.raises(ValueError, match="unverified_models"):
        EmulatorServer(unverified_models=["no/such-model"])


# -- slow and idle connections ---------------------------------------------------------------------------------


def held_open(sock):
    """True while the server keeps ``sock`` open without answering; False once refused (503) or closed."""
    sock.settimeout(0.05)
    try:
        data = sock.recv(65536)
    except socket.timeout:
        return True
    except ConnectionError:
        return False
    assert not data or data.startswith(b"HTTP/1.1 503 "), data[:100]
    return False


def test_idle_half_sent_requests_hold_at_most_max_connections_threads():
    threads_before = threading.active_count()
    with EmulatorServer(max_connections=16, idle_timeout=60) as server:
        sockets = []
        try:
            for _ in range(80):
                sock = socket.create_connection(address(server), timeout=10)
                sock.sendall(
                    b"POST /v1/responses HTTP/1.1\r\nHost: x\r\nContent-Le"
                )  # and then nothing
                sockets.append(sock)
            held = [s for s in sockets if held_open(s)]
            assert len(held) == 16 and server.open_connections == 16
            assert (
                threading.active_count() <= threads_before + 1 + 16
            )  # the accept loop + one per connection
            assert server.stats()["refused_connections"] == 64
        finally:
            for sock in sockets:
                sock.close()
    assert threading.active_count() <= threads_before


def test_an_idle_half_sent_request_is_closed_after_the_idle_timeout():
    with EmulatorServer(idle_timeout=0.2) as server:
        with socket.create_connection(address(server), timeout=10) as sock:
            sock.sendall(b"GET /v1/mod")
            sock.settimeout(10)
            assert (
                sock.recv(1024) == b""
            )  # closed by the server (a bound on the wait, not a timing window)
        deadline = time.monotonic() + 10
        while server.open_connections:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        still_serving(server)


def test_a_body_that_stops_arriving_is_408_after_the_idle_timeout():
    with EmulatorServer(idle_timeout=0.3) as server:
        request = head(
            "POST",
            "/v1/responses",
            {"Authorization": "Bearer " + server.api_key, "Content-Length": "1000"},
        )
        status, headers, body = exchange(server, request + b'{"model": ', timeout=10)
        assert status == 408 and json.loads(body)["error"]["code"] == "request_timeout"
        assert headers.get("connection") == "close"
        still_serving(server)


# -- the fuzzer ---------------------------------------------------------------------------------------------

ROUTES = [
    ("GET", "/v1/models"),
    ("POST", "/v1/responses"),
    ("GET", "/v1/responses/resp_x"),
    ("POST", "/v1/responses/resp_x/cancel"),
    ("POST", "/v1/chat/completions"),
    ("POST", "/v1/messages"),
    ("POST", "/v1/messages/count_tokens"),
    ("POST", "/v1/files"),
    ("GET", "/v1/files/file-x"),
    ("POST", "/v1/loras"),
    ("GET", "/v1/loras"),
    ("GET", "/v1/loras/x"),
    ("PATCH", "/v1/loras/x"),
    ("POST", "/v1/batches"),
    ("GET", "/v1/batches"),
    ("GET", "/v1/batches/b"),
    ("GET", "/v1/batches/b/c"),
    ("GET", "/_tinker/archives/ckpt_x.tar"),
    ("GET", "/_tinker/external/x/adapter_config.json"),
    ("GET", "/_emulator/stats"),
    ("POST", "/_emulator/faults"),
]

VALID = {
    "/v1/responses": {
        "model": MODEL,
        "input": PLACEHOLDER,
        "raw_prompt_tokens": [1, 2],
        "max_output_tokens": 2,
        "metadata": {"completion_window": "asap"},
        "stop": ["a"],
        "temperature": 0.5,
    },
    "/v1/chat/completions": {
        "model": MODEL,
        "messages": [{"role": "user", "content": "hi"}],
        "max_completion_tokens": 2,
    },
    "/v1/messages": {
        "model": MODEL,
        "max_tokens": 2,
        "messages": [{"role": "user", "content": "hi"}],
    },
    "/v1/messages/count_tokens": {"model": MODEL, "messages": [{"role": "user", "content": "hi"}]},
    "/v1/loras": {
        "name": "ab",
        "supported_models": [MODEL],
        "config_file_id": "f",
        "weights_file_id": "g",
    },
    "/v1/batches": {"requests": [{"custom_id": "a", "params": {"model": MODEL, "input": "x"}}]},
}

ODD_VALUES = [
    None,
    True,
    False,
    0,
    -1,
    2**64,
    1.5,
    float("1e308"),
    "",
    "x" * 300,
    "\u00b2",
    [],
    {},
    [None],
    {"a": None},
    "\u0000",
    ["asap"],
    {"completion_window": 5},
]


def mutate(rng, value):
    """A structural mutation of a JSON value."""
    if isinstance(value, dict) and value and rng.random() < 0.7:
        value = dict(value)
        key = rng.choice(sorted(value))
        choice = rng.random()
        if choice < 0.3:
            del value[key]
        elif choice < 0.7:
            value[key] = rng.choice(ODD_VALUES)
        else:
            value[key] = mutate(rng, value[key])
        return value
    if isinstance(value, list) and value and rng.random() < 0.7:
        value = list(value)
        index = rng.randrange(len(value))
        value[index] = mutate(rng, value[index]) if rng.random() < 0.5 else rng.choice(ODD_VALUES)
        return value
    return rng.choice(ODD_VALUES)


def fuzz_request(rng, api_key):
    method, path = rng.choice(ROUTES)
    if rng.random() < 0.1:
        method = rng.choice(["GET", "POST", "PATCH", "DELETE", "PUT", "OPTIONS", "BREW"])
    if rng.random() < 0.1:
        path = path + rng.choice(
            ["/", "//x", "?a=%zz", "?limit=-1", "?limit=\u00b2", "/%00", "?after_id="]
        )
    headers = {"Authorization": "Bearer " + api_key} if rng.random() < 0.9 else {}
    template = VALID.get(path.split("?")[0], {"model": MODEL})
    kind = rng.random()
    if kind < 0.5:
        body = json.dumps(mutate(rng, template), allow_nan=True).encode("utf-8", "surrogatepass")
    elif kind < 0.6:
        body = json.dumps(template).encode()[: rng.randrange(1, 40)]  # truncated JSON
    elif kind < 0.7:
        body = bytes(rng.randrange(256) for _ in range(rng.randrange(0, 200)))
    elif kind < 0.8:
        depth = rng.randrange(1, 5000)
        body = b"[" * depth + b"]" * depth
    elif kind < 0.9:
        body = (
            b'--B\r\nContent-Disposition: form-data; name="file"; filename="w"\r\n\r\n'
            + b"x" * rng.randrange(50)
        )
        headers["Content-Type"] = rng.choice(
            [
                "multipart/form-data; boundary=B",
                "multipart/form-data",
                "multipart/form-data; boundary=" + "B" * 300,
            ]
        )
    else:
        body = b""
    framing = rng.random()
    if framing < 0.7:
        headers["Content-Length"] = str(len(body))
    elif framing < 0.8:
        headers["Transfer-Encoding"] = "chunked"
        body = b"%x\r\n" % len(body) + body + b"\r\n0\r\n\r\n" if body else b"0\r\n\r\n"
    elif framing < 0.9:
        headers["Transfer-Encoding"] = "chunked"
        body = (
            rng.choice([b"-1\r\n", b"zz\r\n", b"ffffffffffffffffff\r\n", b"5\r\nabc\r\n0\r\n\r\n"])
            + body
        )
    else:
        headers["Content-Length"] = rng.choice(
            ["\u00b2", "-5", "abc", str(len(body) + 5), "1" * 30]
        )
    if rng.random() < 0.1:
        headers[rng.choice(["Idempotency-Key", "anthropic-idempotency-key"])] = rng.choice(
            ["k", "", "k" * 300]
        )
    return head(method, path, headers) + body


def test_fuzzed_requests_on_every_route_get_4xx_never_500_and_the_server_keeps_serving():
    rng = random.Random(20261101)
    with EmulatorServer(idle_timeout=0.2, max_body_bytes=1 << 16) as server:
        statuses = []
        for _ in range(400):
            payload = fuzz_request(rng, server.api_key)
            status, _, body = exchange(server, payload, timeout=5)
            assert status is not None, payload[:300]
            assert status < 500, (status, payload[:300], body[:300])
            statuses.append(status)
            if status >= 400:
                error = json.loads(body)["error"]
                assert error["message"], payload[:300]
        still_serving(server)
        assert len({s for s in statuses if s >= 400}) >= 5
        deadline = (
            time.monotonic() + 10
        )  # no connection thread is left behind (the last one may still be ending)
        while server.open_connections > 1:
            assert time.monotonic() < deadline
            time.sleep(0.01)
