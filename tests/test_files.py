"""Streamed uploads over loopback: progress, rewinds, refusals, flat memory."""

from __future__ import annotations

import io
import os
import subprocess
import sys

import pytest

from sail_lite.errors import InvalidRequestError, RequestTooLargeError, UploadNotRewindableError

from .conftest import make_client


def Fault(*args, **kwargs):
    from sail_lite.emulator import Fault as EmulatorFault

    return EmulatorFault(*args, **kwargs)


def test_upload_a_path_with_progress(client, tmp_path):
    path = tmp_path / "adapter_config.json"
    path.write_bytes(b'{"r": 8}' * 1000)
    seen = []
    uploaded = client.files.create(
        str(path), progress=lambda sent, total: seen.append((sent, total))
    )
    assert uploaded.id.startswith("file") and uploaded.bytes == 8000
    assert uploaded.filename == "adapter_config.json" and uploaded.purpose == "lora"
    assert seen[0] == (0, 8000) and seen[-1] == (8000, 8000)
    assert [s for s, _ in seen] == sorted(s for s, _ in seen)


def test_upload_a_file_object_from_its_position(client, tmp_path):
    path = tmp_path / "w.bin"
    path.write_bytes(b"x" * 100 + b"y" * 50)
    with open(path, "rb") as handle:
        handle.seek(100)
        uploaded = client.files.create(handle)
        assert not handle.closed  # the caller's file stays the caller's
    assert uploaded.bytes == 50 and uploaded.filename == "w.bin"


def test_upload_in_memory_bytes(client):
    uploaded = client.files.create(io.BytesIO(b"abc"))
    assert uploaded.bytes == 3 and uploaded.filename == "upload.bin"


def test_a_dropped_upload_of_a_path_is_resent(emulator, tmp_path):
    path = tmp_path / "w.bin"
    path.write_bytes(os.urandom(3 << 20))
    emulator.faults.add(Fault("drop", method="POST", path="/v1/files", times=1))
    with make_client(emulator, sleep=lambda s: None) as client:
        uploaded = client.files.create(path)
    assert uploaded.bytes == 3 << 20
    assert emulator.stats()["requests"]["POST /v1/files"] == 2


class OneWayStream(io.RawIOBase):
    """A pipe-like source: readable, sized through fstat, not seekable."""

    def __init__(self, path):
        self._file = open(path, "rb")
        self.name = str(path)

    def readable(self):
        return True

    def seekable(self):
        return False

    def tell(self):
        raise OSError("not seekable")

    def fileno(self):
        return self._file.fileno()

    def readinto(self, buffer):
        data = self._file.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def close(self):
        self._file.close()
        super().close()


def test_a_failed_upload_that_cannot_be_rewound_is_not_resent(emulator, tmp_path):
    path = tmp_path / "w.bin"
    path.write_bytes(b"z" * (2 << 20))
    emulator.faults.add(Fault("lose_reply", method="POST", path="/v1/files", times=1))
    with make_client(emulator, sleep=lambda s: None) as client, OneWayStream(path) as stream:
        with pytest.raises(UploadNotRewindableError, match="restart the upload") as info:
            client.files.create(stream)
    assert info.value.attempts == 1
    assert emulator.stats()["requests"]["POST /v1/files"] == 1


def test_missing_file_and_wrong_types(client, tmp_path):
    with pytest.raises(InvalidRequestError, match="no such file"):
        client.files.create(tmp_path / "nope")
    with pytest.raises(InvalidRequestError, match="path or a binary file object"):
        client.files.create(12)


def test_too_large_is_a_typed_413():
    from sail_lite.emulator import EmulatorServer

    with EmulatorServer(max_file_bytes=1024) as server, make_client(server) as client:
        with pytest.raises(RequestTooLargeError) as info:
            client.files.create(io.BytesIO(b"x" * 4096))
        assert info.value.status == 413 and info.value.attempts == 1


UPLOAD_CHILD = r"""
import os, sys, resource
from sail_lite import Client
path, base_url, key = sys.argv[1:4]
def rss_kb():
    with open("/proc/self/status") as f:
        return {l.split(":")[0]: int(l.split()[1]) for l in f if l.startswith(("VmHWM", "VmRSS"))}
client = Client(key, base_url=base_url, environ={})
client.models.list()  # warm up imports and the connection
before = rss_kb()["VmHWM"]
uploaded = client.files.create(path)
after = rss_kb()["VmHWM"]
print(uploaded.bytes, after - before)
"""


def test_uploading_a_sparse_file_keeps_memory_flat(emulator, tmp_path):
    # 48 MiB is enough to tell streaming from buffering: a client that held the file (or
    # built the body in memory, as requests' files= does) would grow by 48 MiB or more,
    # six times the bound.
    path = tmp_path / "huge.safetensors"
    size = 48 << 20
    with open(path, "wb") as handle:
        handle.truncate(size)  # sparse: costs no disk
    result = subprocess.run(
        [sys.executable, "-c", UPLOAD_CHILD, str(path), emulator.base_url, emulator.api_key],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr
    uploaded, grown_kb = map(int, result.stdout.split())
    assert uploaded == size
    assert grown_kb < 8 * 1024, f"peak RSS grew by {grown_kb} KiB uploading 48 MiB"
