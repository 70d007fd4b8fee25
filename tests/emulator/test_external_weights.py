"""tinker 0.38 external weights: an adapter's two files under signed, expiring URLs."""

from __future__ import annotations

import datetime
import logging
import os
import tracemalloc

import pytest
import requests

from sail_lite.adapters import make_adapter
from sail_lite.emulator import EmulatorServer

from .test_inference import FakeClock

CONFIG = {
    "peft_type": "LORA",
    "task_type": "CAUSAL_LM",
    "r": 8,
    "lora_alpha": 16,
    "base_model_name_or_path": "moonshotai/Kimi-K2.6",
    "target_modules": ["q_proj", "v_proj"],
}


def get(url, **kwargs):
    return requests.get(url, timeout=30, **kwargs)


def test_publish_serves_both_files_until_they_expire(tmp_path, caplog):
    caplog.set_level(logging.DEBUG, logger="sail_lite.emulator")
    folder = make_adapter(tmp_path / "a")
    with open(os.path.join(folder, "adapter_model.safetensors"), "rb") as handle:
        weights = handle.read()
    clock = FakeClock()
    with EmulatorServer(clock=clock) as server:
        published = server.publish_external_weights(
            CONFIG, weights, tinker_path="tinker://run-1/external_weights/s10", ttl_seconds=600
        )
        assert set(published) == {"tinker_path", "urls", "expires"}
        assert published["tinker_path"] == "tinker://run-1/external_weights/s10"
        assert set(published["urls"]) == {"adapter_config.json", "adapter_model.safetensors"}
        expires = datetime.datetime.fromisoformat(published["expires"])
        assert expires.tzinfo is not None and expires.timestamp() == int(clock.now + 600)
        config_reply = get(published["urls"]["adapter_config.json"])
        assert config_reply.status_code == 200 and config_reply.json() == CONFIG
        weights_reply = get(published["urls"]["adapter_model.safetensors"])
        assert weights_reply.status_code == 200 and weights_reply.content == weights
        assert weights_reply.headers["Content-Length"] == str(len(weights))

        fresh = server.external_weights_urls("tinker://run-1/external_weights/s10", ttl_seconds=60)
        assert (
            fresh["tinker_path"] == published["tinker_path"] and fresh["urls"] != published["urls"]
        )

        clock.advance(601)
        expired = get(published["urls"]["adapter_model.safetensors"])
        assert expired.status_code == 403 and expired.json()["error"]["code"] == "url_expired"
        assert get(fresh["urls"]["adapter_config.json"]).status_code == 403  # 60 s: expired too

        renewed = server.external_weights_urls(published["tinker_path"])
        tampered = renewed["urls"]["adapter_config.json"].replace("sig=", "sig=0")
        assert get(tampered).json()["error"]["code"] == "invalid_signature"
        other_file = renewed["urls"]["adapter_config.json"].replace(
            "adapter_config.json", "adapter_model.safetensors"
        )
        assert get(other_file).status_code == 403  # a signature is for one file only
        assert get(renewed["urls"]["adapter_config.json"]).json() == CONFIG
        server.reset()
        assert get(renewed["urls"]["adapter_config.json"]).status_code == 404
        with pytest.raises(KeyError):
            server.external_weights_urls(published["tinker_path"])
    assert "sig=" not in caplog.text  # signed queries are credentials: never logged


def test_defaults_config_bytes_and_republishing():
    with EmulatorServer() as server:
        first = server.publish_external_weights(b'{"r": 4}', b"w1")
        assert (
            first["tinker_path"].startswith("tinker://")
            and "/external_weights/" in first["tinker_path"]
        )
        assert (
            get(first["urls"]["adapter_config.json"]).content == b'{"r": 4}'
        )  # bytes are served as given
        again = server.publish_external_weights(b"{}", b"w2", tinker_path=first["tinker_path"])
        assert get(again["urls"]["adapter_model.safetensors"]).content == b"w2"
        assert get(first["urls"]["adapter_model.safetensors"]).status_code == 404  # replaced
        for bad in (
            "s3://x/external_weights/y",
            "tinker://run/weights/y",
            "tinker:///external_weights/y",
            "tinker://run/external_weights/",
        ):
            with pytest.raises(ValueError, match="tinker_path"):
                server.publish_external_weights(b"{}", b"w", tinker_path=bad)
        with pytest.raises(ValueError, match="ttl_seconds"):
            server.publish_external_weights(b"{}", b"w", ttl_seconds=0)
        with pytest.raises(TypeError):
            server.publish_external_weights(["not", "a", "config"], b"w")


def test_a_large_adapter_is_published_from_a_path_and_streamed_without_copies_in_memory(tmp_path):
    size = 48 * 1024**2
    path = tmp_path / "adapter_model.safetensors"
    with open(path, "wb") as handle:
        handle.truncate(size)  # sparse: costs no disk write here
    with EmulatorServer() as server:
        tracemalloc.start()
        try:
            published = server.publish_external_weights(CONFIG, path)
            received = 0
            with get(published["urls"]["adapter_model.safetensors"], stream=True) as reply:
                assert reply.status_code == 200
                for chunk in reply.iter_content(1 << 16):
                    received += len(chunk)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert received == size
        assert peak < size / 8, f"{peak} bytes traced at peak for a {size}-byte file"
