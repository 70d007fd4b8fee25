"""The emulator as a server: slow clients, request framing, and the memory a large body costs.

Every request here goes over a raw socket, so the test controls each byte and when it is sent.
"""

from __future__ import annotations

import gc
import json
import socket
import sys
import threading
import time

import pytest

from sail_lite.emulator import EmulatorProcess, EmulatorServer

from .conftest import MODEL, Api
from .test_hostile import address, head, read_reply, still_serving


def half_sent(server, count):
    """``count`` connections that each sent half a request head, and then nothing."""
    sockets = []
    try:
        for _ in range(count):
            sock = socket.create_connection(address(server), timeout=10)
            sock.sendall(b"POST /v1/responses HTTP/1.1\r\nHost: x\r\nContent-Le")
            sockets.append(sock)
    except BaseException:
        for sock in sockets:
            sock.close()
        raise
    return sockets


def authenticated_models(server):
    """One authenticated GET /v1/models on a fresh connection: its (status, body)."""
    request = head("GET", "/v1/models", {"Authorization": "Bearer " + server.api_key})
    with socket.create_connection(address(server), timeout=10) as sock:
        sock.sendall(request)
        status, _, body = read_reply(sock, timeout=30)
    return status, body


def read_replies(sock, count):
    """``count`` replies read off one connection, however they are split across reads."""
    sock.settimeout(10)
    data, replies = b"", []
    while len(replies) < count:
        while b"\r\n\r\n" not in data:
            data += sock.recv(65536)
        head_bytes, _, rest = data.partition(b"\r\n\r\n")
        lines = head_bytes.decode("latin-1").split("\r\n")
        length = [
            int(v) for k, _, v in (x.partition(":") for x in lines) if k.lower() == "content-length"
        ]
        while len(rest) < length[0]:
            rest += sock.recv(65536)
        replies.append((int(lines[0].split()[1]), rest[: length[0]]))
        data = rest[length[0] :]
    return replies


def wait_until(predicate, timeout=30.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.01)


# -- slow connections ---------------------------------------------------------------------------------------


def test_512_idle_half_sent_requests_do_not_make_it_refuse_everyone():
    # Before: the 513th connection and every authenticated request after it got a 503.
    with EmulatorServer() as server:
        sockets = half_sent(server, 600)
        try:
            wait_until(lambda: server.open_connections == 600)
            status, body = authenticated_models(server)
            assert status == 200 and json.loads(body)["object"] == "list"
            assert server.stats()["refused_connections"] == 0
        finally:
            for sock in sockets:
                sock.close()


def test_2000_slow_connections_hold_no_thread_each_and_requests_are_served():
    # Before: one thread per connection (2,000 threads), and a 503 past 512 of them.
    threads_before = threading.active_count()
    with EmulatorServer() as server:
        sockets = half_sent(server, 2000)
        try:
            wait_until(lambda: server.open_connections == 2000)
            for _ in range(5):
                assert authenticated_models(server)[0] == 200
            assert threading.active_count() <= threads_before + 1 + server.max_workers
            assert threading.active_count() < threads_before + 100
        finally:
            for sock in sockets:
                sock.close()


def test_a_head_trickled_a_line_at_a_time_is_bounded_from_the_connection_start():
    # Before: each header line reset a per-read timeout, so a line every 0.25 s (idle_timeout 1 s)
    # kept the connection for as long as the client liked.
    with EmulatorServer(idle_timeout=1.0) as server:
        with socket.create_connection(address(server), timeout=10) as sock:
            sock.sendall(b"GET /v1/models HTTP/1.1\r\n")
            closed = False
            for index in range(40):  # 10 s of lines: ten times the bound
                time.sleep(0.25)
                try:
                    sock.sendall(b"X-Line-%d: y\r\n" % index)
                except OSError:
                    closed = True
                    break
                sock.settimeout(0.001)
                try:
                    data = sock.recv(65536)
                except socket.timeout:
                    continue
                except OSError:
                    closed = True
                    break
                assert not data or data.startswith(b"HTTP/1.1 408 "), data[:100]
                closed = True
                break
            assert closed, "the server kept a trickled request head open past its bound"
        still_serving(server)


def test_max_connections_still_caps_open_connections_without_a_thread_each():
    threads_before = threading.active_count()
    with EmulatorServer(max_connections=16) as server:
        sockets = half_sent(server, 40)
        try:
            wait_until(lambda: server.stats()["refused_connections"] == 24)
            assert server.open_connections == 16
            assert threading.active_count() <= threads_before + 1 + server.max_workers
        finally:
            for sock in sockets:
                sock.close()


def test_keep_alive_and_pipelined_requests_on_one_connection(emulator):
    request = head("GET", "/v1/models", {"Authorization": "Bearer " + emulator.api_key})
    with socket.create_connection(address(emulator), timeout=10) as sock:
        sock.sendall(request * 3)  # three pipelined requests in one write
        replies = read_replies(sock, 3)
        assert [status for status, _ in replies] == [200, 200, 200]
        assert all(json.loads(body)["object"] == "list" for _, body in replies)
        sock.sendall(request)
        assert read_replies(sock, 1)[0][0] == 200
    assert emulator.stats()["connections"] == 1


# -- framing ------------------------------------------------------------------------------------------------


def smuggle(server, framing):
    """A POST framed with ``framing`` whose body is itself a second request; every byte the server sends."""
    inner = head("GET", "/v1/models", {"Authorization": "Bearer " + server.api_key})
    outer = (
        "POST /v1/responses HTTP/1.1\r\nHost: x\r\n"
        f"Authorization: Bearer {server.api_key}\r\n{framing}\r\n"
    ).encode("latin-1")
    body = b"0\r\n\r\n" + inner
    with socket.create_connection(address(server), timeout=10) as sock:
        sock.sendall(outer + body)
        sock.settimeout(10)
        data = b""
        while True:
            try:
                chunk = sock.recv(65536)
            except (socket.timeout, ConnectionError):
                break
            if not chunk:
                break
            data += chunk
    return data


@pytest.mark.parametrize(
    "framing",
    [
        "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n",
        "Transfer-Encoding: chunked\r\nContent-Length: 5\r\n",
        "Content-Length: 5\r\nContent-Length: 60\r\n",
        "Transfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n",
    ],
)
def test_ambiguous_framing_is_400_and_closes_the_connection(emulator, framing):
    # Before: the rest of the bytes were parsed as a second request (two replies on one connection).
    data = smuggle(emulator, framing)
    assert data.startswith(b"HTTP/1.1 400 "), data[:200]
    assert data.count(b"HTTP/1.1 ") == 1, data
    head_text = data.partition(b"\r\n\r\n")[0].lower()
    assert b"connection: close" in head_text
    assert json.loads(data.partition(b"\r\n\r\n")[2])["error"]["code"] == "invalid_framing"
    still_serving(emulator)


def test_a_folded_header_is_400_at_once(emulator):
    # Before: a Transfer-Encoding folded onto a second line got no reply within 5 s.
    request = (
        "POST /v1/responses HTTP/1.1\r\nHost: x\r\n"
        f"Authorization: Bearer {emulator.api_key}\r\n"
        "Transfer-Encoding:\r\n chunked\r\n\r\n"
    ).encode("latin-1")
    with socket.create_connection(address(emulator), timeout=10) as sock:
        sock.sendall(request)
        status, headers, body = read_reply(sock, timeout=5)
    assert status == 400 and headers.get("connection") == "close"
    assert json.loads(body)["error"]["code"] == "invalid_framing"


def test_the_same_content_length_twice_is_accepted(emulator):
    payload = json.dumps({"model": MODEL, "input": "hi", "max_output_tokens": 2}).encode()
    request = head(
        "POST",
        "/v1/responses",
        {
            "Authorization": "Bearer " + emulator.api_key,
            "Content-Length": str(len(payload)),
            "content-length": str(len(payload)),
        },
    )
    with socket.create_connection(address(emulator), timeout=10) as sock:
        sock.sendall(request + payload)
        status, _, body = read_reply(sock)
    assert status == 200, body


# -- memory -------------------------------------------------------------------------------------------------


def _rss_kib(pid, field):
    with open(f"/proc/{pid}/status") as handle:
        for line in handle:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise AssertionError(f"no {field} in /proc/{pid}/status")


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/<pid>/status")
def test_a_30_mib_body_peaks_under_4x_its_size_and_is_not_kept():
    # Before: 563 MB peak and 326 MB kept for a 30 MiB input (a 240 MB tuple of byte tokens).
    text = "a" * (30 * 1024 * 1024 - 200)
    payload = json.dumps({"model": MODEL, "input": text, "max_output_tokens": 4}).encode()
    del text
    gc.collect()
    with EmulatorProcess() as child:
        pid = child.process.pid
        server = type("S", (), {"url": child.url, "api_key": child.api_key})()
        assert authenticated_models(server)[0] == 200
        baseline = _rss_kib(pid, "VmRSS")
        request = head(
            "POST",
            "/v1/responses",
            {"Authorization": "Bearer " + child.api_key, "Content-Length": str(len(payload))},
        )
        with socket.create_connection(address(server), timeout=60) as sock:
            sock.sendall(request + payload)
            status, _, body = read_reply(sock, timeout=120)
        assert status == 200, body[:300]
        body_kib = len(payload) // 1024
        # The reply is sent before the worker hands freed memory back: wait for it (a bound, not a timing).
        deadline = time.monotonic() + 10
        while _rss_kib(pid, "VmRSS") - baseline > body_kib // 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        peak = _rss_kib(pid, "VmHWM") - baseline
        kept = _rss_kib(pid, "VmRSS") - baseline
        print(f"30 MiB body: baseline {baseline} KiB, peak +{peak} KiB, kept +{kept} KiB")
        assert peak <= 4 * body_kib, (peak, body_kib)
        assert kept <= body_kib // 2, (kept, body_kib)


def test_the_prompt_of_a_large_input_is_counted_but_not_stored(emulator):
    client = Api(emulator)
    try:
        body = client.ok(
            "POST",
            "/responses",
            json={"model": MODEL, "input": "z" * 100_000, "max_output_tokens": 3},
        )
        assert body["usage"]["input_tokens"] == 100_000
        record = emulator.state.responses[body["id"]]
        assert (
            len(record.params.prompt) <= 64
        )  # the record keeps a digest and a count, not the text
        again = client.ok("GET", f"/responses/{body['id']}")
        assert again["output"] == body["output"]
    finally:
        client.close()


# -- link latency -------------------------------------------------------------------------------------------


def test_latency_is_added_each_way_to_every_request():
    with EmulatorServer(latency=0.1) as server:
        client = Api(server)
        try:
            started = time.monotonic()
            client.ok("GET", "/models")
            assert (
                time.monotonic() - started >= 0.2
            )  # a lower bound: 0.1 s before handling, 0.1 s before the reply
        finally:
            client.close()


def test_python_m_takes_latency_and_refuses_a_negative_one(capsys):
    from sail_lite.emulator.__main__ import build_parser, serve

    with pytest.raises(ValueError, match="--latency"):
        serve(build_parser().parse_args(["--port", "0", "--latency", "-1"]))
    assert build_parser().parse_args(["--latency", "0.02"]).latency == 0.02
