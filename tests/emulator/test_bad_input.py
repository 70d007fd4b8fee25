"""Hostile and broken input: always a wire.md 4xx, never a crash or a hung connection."""

from __future__ import annotations

import io
import json
import os
import socket
import struct
import tarfile
import time

import pytest

from sail_lite.adapters import make_adapter, write_safetensors
from sail_lite.emulator import EmulatorServer

from .conftest import MODEL, PLACEHOLDER, Api, assert_error_body


def still_serving(server):
    assert Api(server).ok("GET", "/models")["data"]


def raw_exchange(server, payload: bytes, *, read_timeout=10.0) -> bytes:
    """Send raw bytes on a fresh socket; return everything the server answers before closing."""
    host, port = server.url[len("http://") :].split(":")
    with socket.create_connection((host, int(port)), timeout=read_timeout) as sock:
        sock.sendall(payload)
        chunks = []
        while True:
            try:
                data = sock.recv(65536)
            except socket.timeout:
                break
            if not data:
                break
            chunks.append(data)
            if b"\r\n\r\n" in b"".join(chunks):
                head, _, body = b"".join(chunks).partition(b"\r\n\r\n")
                length = [
                    int(item.split(b":")[1])
                    for item in head.split(b"\r\n")
                    if item.lower().startswith(b"content-length")
                ]
                if length and len(body) >= length[0]:
                    break
        return b"".join(chunks)


def status_and_json(reply: bytes):
    head, _, body = reply.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body.decode("utf-8"))


@pytest.mark.parametrize(
    "body, words",
    [
        ({"input": "x"}, "model is required"),
        ({"model": MODEL}, "input is required"),
        ({"model": MODEL, "input": ""}, "input is required"),
        ({"model": MODEL, "input": 5}, "input is required"),
        ({"model": MODEL, "input": [{"content": "no role"}]}, "role"),
        ({"model": MODEL, "input": "x", "max_output_tokens": "many"}, "max_output_tokens"),
        ({"model": MODEL, "input": "x", "max_output_tokens": 0}, "max_output_tokens"),
        ({"model": MODEL, "input": "x", "max_output_tokens": True}, "max_output_tokens"),
        ({"model": MODEL, "input": "x", "temperature": 2.5}, "temperature"),
        ({"model": MODEL, "input": "x", "top_p": -0.1}, "top_p"),
        ({"model": MODEL, "input": "x", "background": "yes"}, "background"),
        ({"model": MODEL, "input": "x", "include": "logprobs"}, "include"),
        ({"model": MODEL, "input": "x", "metadata": {"trace": {"a": 1}}}, "JSON-encode"),
        ({"model": MODEL, "input": "x", "metadata": ["a"]}, "metadata"),
        ({"model": MODEL, "input": "x", "stop": [1, "a"]}, "stop"),
        (
            {"model": MODEL, "input": "x", "stop": [1, 2]},
            "stop",
        ),  # token ids only on the raw-token path
        ({"model": MODEL, "input": PLACEHOLDER, "raw_prompt_tokens": []}, "raw_prompt_tokens"),
        (
            {"model": MODEL, "input": PLACEHOLDER, "raw_prompt_tokens": [1, -1]},
            "raw_prompt_tokens[1]",
        ),
        (
            {"model": MODEL, "input": PLACEHOLDER, "raw_prompt_tokens": [1.5]},
            "raw_prompt_tokens[0]",
        ),
        (
            {"model": MODEL, "input": PLACEHOLDER, "raw_prompt_tokens": [2**31]},
            "raw_prompt_tokens[0]",
        ),
        ({"model": MODEL, "input": PLACEHOLDER, "raw_prompt_tokens": "1,2"}, "raw_prompt_tokens"),
        ({"model": "no/such", "input": "x"}, "GET /v1/models"),
        (
            {
                "model": MODEL,
                "input": PLACEHOLDER,
                "raw_prompt_tokens": [1],
                "metadata": {"lora": "http://127.0.0.1:1/x.tar", "completion_window": "balanced"},
            },
            "tinker_adapter_config",
        ),
        (
            {
                "model": MODEL,
                "input": PLACEHOLDER,
                "raw_prompt_tokens": [1],
                "metadata": {"lora": "http://127.0.0.1:1/x.tar", "tinker_adapter_config": "{nope"},
            },
            "tinker_adapter_config",
        ),
    ],
)
def test_wrong_or_missing_fields_are_400_with_what_to_fix(api, emulator, body, words):
    error = assert_error_body(api("POST", "/responses", json=body), 400)
    assert words in error["message"]
    assert emulator.stats()["inference_runs"] == 0


@pytest.mark.parametrize(
    "path, body",
    [
        ("/chat/completions", {"model": MODEL, "messages": []}),
        (
            "/chat/completions",
            {"model": MODEL, "messages": [{"role": "user", "content": "x"}], "stream": "yes"},
        ),
        (
            "/chat/completions",
            {"model": MODEL, "messages": [{"role": "user", "content": [{"type": "image"}]}]},
        ),
        ("/messages", {"model": MODEL, "messages": [{"role": "user", "content": "x"}]}),
        (
            "/loras",
            {
                "name": "Bad_Name",
                "supported_models": [MODEL],
                "config_file_id": "a",
                "weights_file_id": "b",
            },
        ),
        (
            "/loras",
            {
                "name": "ok-name",
                "supported_models": "all",
                "config_file_id": "a",
                "weights_file_id": "b",
            },
        ),
        (
            "/loras",
            {
                "name": "ok-name",
                "supported_models": [MODEL],
                "config_file_id": "nope",
                "weights_file_id": "b",
            },
        ),
        ("/batches", {"endpoint": "/v1/chat/completions", "requests": []}),
    ],
)
def test_other_endpoints_reject_bad_bodies(api, path, body):
    assert_error_body(api("POST", path, json=body), 400)


def test_malformed_json_and_non_object_bodies(api, emulator):
    for data in (b"{not json", b"\xff\xfe", b"[1, 2]", b'"text"'):
        reply = api("POST", "/responses", data=data, headers={"Content-Type": "application/json"})
        assert_error_body(reply, 400)
    still_serving(emulator)


def test_oversized_json_body_is_413_and_the_server_goes_on():
    with EmulatorServer(max_body_bytes=1024) as server:
        api = Api(server)
        reply = api("POST", "/responses", json={"model": MODEL, "input": "x" * 5000})
        assert_error_body(reply, 413, "request_too_large")
        still_serving(server)


def test_broken_http_gets_a_json_error(emulator):
    status, body = status_and_json(raw_exchange(emulator, b"GARBAGE\r\n\r\n"))
    assert status == 400 and body["error"]["message"]
    big = (
        b"GET /v1/models HTTP/1.1\r\nHost: x\r\n"
        + b"".join(b"X-%d: y\r\n" % i for i in range(200))
        + b"\r\n"
    )
    status, body = status_and_json(raw_exchange(emulator, big))
    assert status == 431 and body["error"]
    reply = raw_exchange(
        emulator,
        b"POST /v1/responses HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n"
        b"Authorization: Bearer " + emulator.api_key.encode() + b"\r\n\r\n",
    )
    assert status_and_json(reply)[0] == 400
    still_serving(emulator)


def test_a_client_that_vanishes_mid_body_does_not_hang_the_server(emulator):
    host, port = emulator.url[len("http://") :].split(":")
    with socket.create_connection((host, int(port))) as sock:
        sock.sendall(
            b"POST /v1/responses HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\nAuthorization: Bearer "
            + emulator.api_key.encode()
            + b'\r\n\r\n{"model":'
        )
    still_serving(emulator)


# -- multipart -------------------------------------------------------------------------------------------------


def multipart(boundary: bytes, parts) -> bytes:
    out = b""
    for headers, data in parts:
        out += b"--" + boundary + b"\r\n" + headers + b"\r\n\r\n" + data + b"\r\n"
    return out + b"--" + boundary + b"--\r\n"


def post_files(api, body: bytes, content_type: str):
    return api("POST", "/files", data=body, headers={"Content-Type": content_type})


def test_upload_streams_to_disk_with_size_and_name(api):
    near_misses = (
        b"\r\n--Xy\r\n-x--XyZ\r\n" * 20000
    )  # boundary look-alikes, across many read chunks
    body = multipart(
        b"XyZ",
        [
            (b'Content-Disposition: form-data; name="purpose"', b"lora"),
            (b'Content-Disposition: form-data; name="file"; filename="w.bin"', near_misses),
        ],
    )
    uploaded = post_files(api, body, "multipart/form-data; boundary=XyZ").json()
    assert uploaded["bytes"] == len(near_misses) and uploaded["filename"] == "w.bin"
    assert api.ok("GET", "/files/" + uploaded["id"]) == uploaded


@pytest.mark.parametrize(
    "content_type, body, code, words",
    [
        ("application/json", b"{}", 400, "multipart/form-data"),
        ("multipart/form-data", b"", 400, "boundary"),
        ("multipart/form-data; boundary=B", b"no boundary here", 400, "opening boundary"),
        (
            "multipart/form-data; boundary=B",
            multipart(
                b"B",
                [
                    (
                        b'Content-Disposition: form-data; name="file"; filename="../../etc/passwd"',
                        b"x",
                    )
                ],
            ),
            400,
            "filename",
        ),
        (
            "multipart/form-data; boundary=B",
            multipart(
                b"B", [(b'Content-Disposition: form-data; name="file"; filename="a\\\\b"', b"x")]
            ),
            400,
            "filename",
        ),
        (
            "multipart/form-data; boundary=B",
            multipart(b"B", [(b'Content-Disposition: form-data; name="purpose"', b"lora")]),
            400,
            "no file part",
        ),
        (
            "multipart/form-data; boundary=B",
            multipart(b"B", [(b'Content-Disposition: form-data; name="file"; filename="w"', b"x")]),
            400,
            "purpose",
        ),
        (
            "multipart/form-data; boundary=B",
            b'--B\r\nContent-Disposition: form-data; name="file"; filename="w"'
            b"\r\n\r\nno closing boundary",
            400,
            "closing boundary",
        ),
        ("multipart/form-data; boundary=B", b"--B\r\n" + b"X" * 20000, 400, "headers"),
        (
            "multipart/form-data; boundary=B",
            b"--B\r\nContent-Type: text/plain\r\n\r\nx\r\n--B--",
            400,
            "name=",
        ),
    ],
)
def test_hostile_multipart_is_400(api, emulator, content_type, body, code, words):
    error = assert_error_body(post_files(api, body, content_type), code)
    assert words in error["message"]
    assert emulator.stats()["files"] == 0
    still_serving(emulator)


def test_too_large_upload_is_413_before_the_body_is_read():
    with EmulatorServer(max_file_bytes=1024) as server:
        claimed = 10 * 1024**3
        head = (
            f"POST /v1/files HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {server.api_key}\r\n"
            f"Content-Type: multipart/form-data; boundary=B\r\nContent-Length: {claimed}\r\n\r\n"
        ).encode()
        # Only the head is sent: a server that waited for the 10 GiB would never answer.
        status, body = status_and_json(raw_exchange(server, head + b"--B\r\n"))
        assert status == 413 and body["error"]["code"] == "file_too_large"
        # Chunked, with no length to judge by: the limit is enforced while streaming.
        api = Api(server)
        parts = multipart(
            b"B",
            [
                (b'Content-Disposition: form-data; name="purpose"', b"lora"),
                (b'Content-Disposition: form-data; name="file"; filename="w"', b"x" * 5000),
            ],
        )
        reply = api(
            "POST",
            "/files",
            data=iter([parts[:100], parts[100:]]),
            headers={"Content-Type": "multipart/form-data; boundary=B"},
        )
        assert_error_body(reply, 413)
        assert server.stats()["files"] == 0
        still_serving(server)


# -- adapters the server must read without trusting ----------------------------------------------------------------


def upload(api, name, data):
    return api.ok("POST", "/files", data={"purpose": "lora"}, files={"file": (name, data)})["id"]


def validate(api, config: bytes, weights: bytes, name="bad-adapter"):
    body = {
        "name": name,
        "supported_models": [MODEL],
        "config_file_id": upload(api, "adapter_config.json", config),
        "weights_file_id": upload(api, "adapter_model.safetensors", weights),
    }
    api.ok("POST", "/loras", json=body)
    deadline = time.monotonic() + 10
    while True:
        validation = api.ok("GET", "/loras/" + name)["validations"][0]
        if validation["status"] in ("succeeded", "failed") or time.monotonic() > deadline:
            return validation
        time.sleep(0.01)


GOOD_CONFIG = json.dumps(
    {"peft_type": "LORA", "task_type": "CAUSAL_LM", "r": 8, "base_model_name_or_path": MODEL}
).encode()


@pytest.mark.parametrize(
    "weights, code",
    [
        (struct.pack("<Q", 2**60) + b"{}", "safetensors_header_too_large"),
        (struct.pack("<Q", 4096) + b"{}", "invalid_safetensors"),
        (struct.pack("<Q", 7) + b"not jso", "invalid_safetensors"),
        (b"1234", "invalid_safetensors"),
        (struct.pack("<Q", 2) + b"{}", "no_lora_tensors"),
    ],
)
def test_absurd_safetensors_fail_validation_with_a_code(api, emulator, weights, code):
    validation = validate(api, GOOD_CONFIG, weights)
    assert (
        validation["status"] == "failed"
        and validation["result_code"] == code
        and validation["result_message"]
    )
    still_serving(emulator)


def test_invalid_config_json_fails_validation(api, tmp_path):
    folder = make_adapter(tmp_path / "a")
    with open(os.path.join(folder, "adapter_model.safetensors"), "rb") as handle:
        weights = handle.read()
    assert validate(api, b"{broken", weights)["result_code"] == "invalid_config_json"


def test_tensor_shapes_must_agree_with_r(api, tmp_path):
    path = tmp_path / "w.safetensors"
    write_safetensors(path, {"layers.0.q_proj.lora_A.weight": ("F32", (4, 8), b"\0" * 128)})
    validation = validate(api, GOOD_CONFIG, path.read_bytes())
    assert (
        validation["result_code"] == "tensor_shape_mismatch"
        and "r is 8" in validation["result_message"]
    )


# -- Tinker archives ---------------------------------------------------------------------------------------------------


def tar_with(*members) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for info, data in members:
            archive.addfile(info, io.BytesIO(data) if data is not None else None)
    return buffer.getvalue()


def member(name, data=b"x", kind=tarfile.REGTYPE, link=""):
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = link
    info.size = len(data) if kind == tarfile.REGTYPE else 0
    return info, (data if kind == tarfile.REGTYPE else None)


@pytest.mark.parametrize(
    "members, code, words",
    [
        ([member("/etc/adapter_config.json")], "unsafe_tinker_checkpoint", "absolute"),
        ([member("../adapter_config.json")], "unsafe_tinker_checkpoint", ".."),
        (
            [member("ckpt/adapter_config.json", kind=tarfile.SYMTYPE, link="/etc/passwd")],
            "unsafe_tinker_checkpoint",
            "link",
        ),
        (
            [member("ckpt/x", kind=tarfile.LNKTYPE, link="ckpt/y")],
            "unsafe_tinker_checkpoint",
            "link",
        ),
        ([member("ckpt/dev", kind=tarfile.CHRTYPE)], "unsafe_tinker_checkpoint", "device"),
        ([member("ckpt/fifo", kind=tarfile.FIFOTYPE)], "unsafe_tinker_checkpoint", "device"),
        (
            [member("ckpt/adapter_config.json", GOOD_CONFIG)],
            "invalid_tinker_checkpoint",
            "adapter_model.safetensors",
        ),
    ],
)
def test_hostile_tinker_archives_fail_the_response(api, emulator, members, code, words):
    url = emulator.publish_tinker_archive(tar_with(*members), ttl_seconds=60)
    response = api.sample(
        [1, 2],
        metadata={"lora": url, "tinker_adapter_config": "{}", "completion_window": "balanced"},
    )
    response = api.wait(response["id"])
    assert response["status"] == "failed" and response["error"]["code"] == code
    assert words in response["error"]["message"] and "sig=" not in response["error"]["message"]
    assert not os.path.exists("/etc/adapter_config.json")
    still_serving(emulator)


def test_not_a_tar_is_a_clear_failure(api, emulator):
    url = emulator.publish_tinker_archive(b"this is not a tar archive" * 40, ttl_seconds=60)
    response = api.wait(
        api.sample(
            [1],
            metadata={"lora": url, "tinker_adapter_config": "{}", "completion_window": "balanced"},
        )["id"]
    )
    assert response["error"]["code"] == "invalid_tinker_checkpoint"
