"""Running the emulator: lifecycle, keep-alive, auth and organizations, admin routes, the command."""

from __future__ import annotations

import http.client
import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.parse

import pytest
import requests

from sail_lite.emulator import EmulatorServer, Fault

from .conftest import MODEL, Api, assert_error_body


def _open_fds():
    return len(os.listdir("/proc/self/fd")) if os.path.isdir("/proc/self/fd") else 0


def wait_until(predicate, timeout=10.0):
    """Poll ``predicate`` until true (a bound on a hang, not a timing assertion)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.005)


def test_stops_cleanly_without_leaking_threads_or_sockets():
    threads_before = {t.ident for t in threading.enumerate()}
    fds_before = _open_fds()
    server = EmulatorServer(turn_times={"balanced": 30.0})
    outcome = []

    def sync_request():
        api = Api(server)
        try:
            outcome.append(
                api(
                    "POST",
                    "/responses",
                    json={
                        "model": MODEL,
                        "input": "x",
                        "metadata": {"completion_window": "balanced"},
                    },
                ).status_code
            )
        except requests.RequestException as exc:  # recorded, so no unhandled exception in a thread
            outcome.append(exc)
        finally:
            api.close()

    with server:
        port = int(server.url.rsplit(":", 1)[1])
        assert server.base_url.endswith("/v1") and server.base_url.startswith("http://127.0.0.1:")
        sessions = [Api(server) for _ in range(5)]
        for api in sessions:
            assert (
                api.ok("GET", "/models")["object"] == "list"
            )  # five idle keep-alive connections stay open
        sync = threading.Thread(target=sync_request)
        sync.start()  # a synchronous request still waiting for its 30 s turn at stop time
        wait_until(lambda: server.stats()["responses"].get("queued", 0) == 1)
        assert server.open_connections == 6
    assert server.open_connections == 0
    sync.join(10)
    assert not sync.is_alive()
    assert outcome == [503]  # told the server is stopping, not cut off
    for api in sessions:
        api.close()
    leftover = [t for t in threading.enumerate() if t.ident not in threads_before and t.is_alive()]
    assert not leftover, leftover
    assert _open_fds() <= fds_before
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", port)) != 0  # nothing listens any more
    server.stop()  # idempotent


def test_keep_alive_reuses_one_connection(emulator):
    api = Api(emulator)
    for _ in range(20):
        api.ok("GET", "/models")
    assert emulator.stats()["connections"] == 1
    assert emulator.stats()["requests"]["GET /v1/models"] == 20


def test_many_concurrent_connections(emulator):
    from concurrent.futures import ThreadPoolExecutor

    url = urllib.parse.urlsplit(emulator.base_url)

    def one(i):
        connection = http.client.HTTPConnection(url.hostname, url.port, timeout=30)
        try:
            connection.request(
                "GET", url.path + "/models", headers={"Authorization": "Bearer " + emulator.api_key}
            )
            return connection.getresponse().status
        finally:
            connection.close()

    with ThreadPoolExecutor(64) as pool:  # 64 at once, each on its own connection
        assert set(pool.map(one, range(128))) == {200}
    assert emulator.stats()["connections"] == 128


@pytest.mark.parametrize(
    "headers", [{}, {"Authorization": "Bearer nope"}, {"Authorization": "Basic abc"}]
)
def test_missing_or_wrong_key_is_401(emulator, headers):
    reply = requests.get(emulator.base_url + "/models", headers=headers, timeout=10)
    error = assert_error_body(reply, 401)
    assert "nope" not in error["message"]


def test_messages_accepts_x_api_key_and_bearer_wins(emulator):
    body = {"model": MODEL, "max_tokens": 4, "messages": [{"role": "user", "content": "hi"}]}
    url = emulator.base_url + "/messages"
    assert (
        requests.post(
            url, json=body, headers={"x-api-key": emulator.api_key}, timeout=10
        ).status_code
        == 200
    )
    both = {"x-api-key": emulator.api_key, "Authorization": "Bearer wrong"}
    assert requests.post(url, json=body, headers=both, timeout=10).status_code == 401
    assert (
        requests.get(
            emulator.base_url + "/models", headers={"x-api-key": emulator.api_key}, timeout=10
        ).status_code
        == 401
    )  # x-api-key is for /messages only


def test_organizations_are_isolated(emulator, tmp_path):
    from sail_lite.adapters import make_adapter

    mine, theirs = Api(emulator), Api(emulator, emulator.add_organization())
    response = mine.sample([1, 2, 3])
    assert_error_body(theirs("GET", "/responses/" + response["id"]), 404)
    folder = make_adapter(tmp_path / "a")
    uploaded = mine.ok(
        "POST",
        "/files",
        files={"file": open(os.path.join(folder, "adapter_config.json"), "rb")},
        data={"purpose": "lora"},
    )
    weights = mine.ok(
        "POST",
        "/files",
        data={"purpose": "lora"},
        files={"file": open(os.path.join(folder, "adapter_model.safetensors"), "rb")},
    )
    lora = {
        "name": "mine",
        "supported_models": [MODEL],
        "config_file_id": uploaded["id"],
        "weights_file_id": weights["id"],
    }
    error = assert_error_body(theirs("POST", "/loras", json=lora), 400, "file_not_found")
    assert "config_file_id" in error["message"]
    mine.ok("POST", "/loras", json=lora)
    assert_error_body(theirs("GET", "/loras/mine"), 404)
    assert theirs.ok("GET", "/loras")["data"] == []
    theirs.ok(
        "POST",
        "/loras",
        json=dict(
            lora,
            config_file_id=theirs.ok(
                "POST", "/files", data={"purpose": "lora"}, files={"file": ("c.json", b"{}")}
            )["id"],
            weights_file_id=theirs.ok(
                "POST", "/files", data={"purpose": "lora"}, files={"file": ("w.safetensors", b"x")}
            )["id"],
        ),
    )  # same name, other org: fine
    batch = mine.ok(
        "POST",
        "/batches",
        json={"requests": [{"custom_id": "a", "params": {"model": MODEL, "input": "x"}}]},
    )
    assert_error_body(theirs("GET", "/batches/" + batch["id"]), 404)
    assert theirs.ok("GET", "/batches") == []


def test_admin_routes_need_the_admin_token(emulator):
    url = emulator.url + "/_emulator/stats"
    assert_error_body(
        requests.get(url, headers={"Authorization": "Bearer " + emulator.api_key}, timeout=10), 401
    )
    admin = {"Authorization": "Bearer " + emulator.admin_token}
    assert requests.get(url, headers=admin, timeout=10).json()["inference_runs"] == 0
    fault = {
        "kind": "error",
        "method": "GET",
        "path": "/v1/models",
        "status": 429,
        "retry_after": 7,
        "times": 1,
    }
    listed = requests.post(
        emulator.url + "/_emulator/faults", json=fault, headers=admin, timeout=10
    ).json()
    assert listed["data"][0]["status"] == 429
    api = Api(emulator)
    reply = api("GET", "/models")
    assert_error_body(reply, 429)
    assert reply.headers["Retry-After"] == "7"
    assert api("GET", "/models").status_code == 200  # "times": 1
    bad = requests.post(
        emulator.url + "/_emulator/faults", json={"kind": "explode"}, headers=admin, timeout=10
    )
    assert "fault kind" in assert_error_body(bad, 400)["message"]
    requests.post(
        emulator.url + "/_emulator/faults", json=dict(fault, times=None), headers=admin, timeout=10
    )
    requests.delete(emulator.url + "/_emulator/faults", headers=admin, timeout=10)
    assert api("GET", "/models").status_code == 200
    api.sample([1])
    assert (
        requests.post(emulator.url + "/_emulator/reset", headers=admin, timeout=10).status_code
        == 200
    )
    assert emulator.stats()["inference_runs"] == 0


def test_faults_by_rate_are_seeded(emulator):
    def run():
        emulator.reset()
        emulator.faults.add(Fault("error", method="GET", path="/v1/models", rate=0.3, seed=42))
        api = Api(emulator)
        return [api("GET", "/models").status_code for _ in range(60)]

    first = run()
    assert first == run()
    assert 5 < first.count(503) < 35
    assert emulator.stats()["faults_fired"] == first.count(503)


def test_delay_fault_waits_then_serves(emulator):
    emulator.faults.add(Fault("delay", path="/v1/models", delay=0.3, times=1))
    api = Api(emulator)
    started = time.monotonic()
    assert api("GET", "/models").status_code == 200
    assert time.monotonic() - started >= 0.3


def test_unknown_route_and_method(api):
    assert_error_body(api("GET", "/nope"), 404, "not_found")
    assert_error_body(api("DELETE", "/models"), 405, "method_not_allowed")


def test_models_list(api):
    data = api.ok("GET", "/models")["data"]
    assert {m["id"] for m in data} >= {MODEL, "Qwen/Qwen3-8B"}
    assert all(
        set(m) == {"id", "object", "created", "owned_by"} and m["object"] == "model" for m in data
    )


def test_python_m_runs_in_the_foreground_and_prints_url_and_key():
    process = subprocess.Popen(
        [sys.executable, "-m", "sail_lite.emulator", "--port", "0", "--api-key", "sk_cli"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        first = process.stdout.readline()
        url = first.split()[-1]
        lines = [process.stdout.readline() for _ in range(2)]
        assert "SAIL_BASE_URL=" + url + "/v1" in lines[0] and "SAIL_API_KEY=sk_cli" in lines[1]
        reply = requests.get(
            url + "/v1/models", headers={"Authorization": "Bearer sk_cli"}, timeout=10
        )
        assert reply.status_code == 200 and json.loads(reply.text)["data"]
    finally:
        process.terminate()
        process.wait(10)


@pytest.mark.parametrize(
    "argv, words",
    [
        (["--turn-times", "[1]"], "--turn-times"),
        (["--turn-times", '{"balanced": -1}'], "--turn-times"),
        (["--turn-times", '{"soon": 1}'], "soon"),
        (["--windows", "newest"], "--windows"),
    ],
)
def test_python_m_rejects_bad_options_in_one_line_with_exit_2(capsys, argv, words):
    from sail_lite.emulator.__main__ import main

    with pytest.raises(SystemExit) as exited:
        main(["--port", "0"] + argv)
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert words in err and "Traceback" not in err


def test_python_m_on_a_busy_port_says_so_with_exit_2(capsys):
    from sail_lite.emulator.__main__ import main

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        with pytest.raises(SystemExit) as exited:
            main(["--port", str(busy.getsockname()[1])])
    assert exited.value.code == 2
    assert "cannot listen on 127.0.0.1:" in capsys.readouterr().err
