"""The Tinker external-weights bridge (sail_lite.tinker_weights), without tinker installed.

Signed URLs come from a stand-in storage server (tests/tinker_standin.py)
shaped like tinker 0.38's RestClient and the emulator's
``publish_external_weights``; the LoRA route is the emulator's.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import struct
import tracemalloc

import pytest

from sail_lite import (
    AdapterError,
    ConfigurationError,
    InvalidRequestError,
    LoRAValidationError,
    PermissionDeniedError,
)
from sail_lite.adapters import make_adapter
from sail_lite.resources.loras import check_lora_name
from sail_lite.tinker_weights import (
    ExternalWeights,
    lora_name_for_tinker_path,
    resolve_external_weights,
    resolve_external_weights_async,
    run_loras,
    superseded_loras,
    upload_external_weights,
    upload_external_weights_async,
)

from .tinker_standin import (
    FILES,
    ManualClock,
    StandInFuture,
    StandInSaveResponse,
    StandInServiceClient,
    StandInUrlsResponse,
    StorageServer,
)

MODEL = "moonshotai/Kimi-K2.6"
PROMPT = [72, 101, 108, 108, 111]


@pytest.fixture
def storage():
    with StorageServer() as server:
        yield server


def adapter_files(tmp_path, name="a", **kwargs):
    folder = make_adapter(tmp_path / name, **kwargs)
    with open(os.path.join(folder, FILES[0]), "rb") as handle:
        config = handle.read()
    with open(os.path.join(folder, FILES[1]), "rb") as handle:
        weights = handle.read()
    return config, weights


def sample(client, lora=None):
    return client.tokens.sample(
        PROMPT, model=MODEL, max_tokens=8, temperature=0.0, completion_window="flex", lora=lora
    ).tokens


# -- names -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        "tinker://abc123/external_weights/step-40",
        "tinker://3f1c2a9e-1b2c-4d5e-8f90-0123456789ab:train:0/external_weights/RL_Step_000040",
        "tinker://r/external_weights/" + "x" * 300,
        "tinker://R/external_weights/__",
    ],
)
def test_lora_names_from_tinker_paths_follow_the_rules(path):
    name = lora_name_for_tinker_path(path)
    assert check_lora_name(name) == name and len(name) <= 64 and name.startswith("tinker-")
    assert lora_name_for_tinker_path(path) == name


def test_paths_that_slug_alike_get_different_names():
    one = lora_name_for_tinker_path("tinker://run/external_weights/Step_1")
    two = lora_name_for_tinker_path("tinker://run/external_weights/step-1")
    assert one != two and one[:-8] == two[:-8]


@pytest.mark.parametrize(
    "path", ["", "tinker:/x", "s3://b/k", "tinker://run/external_weights", None]
)
def test_bad_tinker_paths_are_refused(path):
    with pytest.raises(InvalidRequestError, match="tinker://"):
        lora_name_for_tinker_path(path)


# -- resolving ---------------------------------------------------------------------------------


def test_resolving_every_source_shape(storage, tmp_path):
    config, weights = adapter_files(tmp_path)
    published = storage.publish(config, weights, tinker_path="tinker://run1/external_weights/s1")
    service = StandInServiceClient(storage)
    from_dict = resolve_external_weights(published)
    from_path = resolve_external_weights(
        "tinker://run1/external_weights/s1", service_client=service
    )
    from_save = resolve_external_weights(
        StandInFuture(StandInSaveResponse("tinker://run1/external_weights/s1")),
        service_client=service,
    )
    from_async = asyncio.run(
        resolve_external_weights_async(
            StandInFuture(StandInSaveResponse("tinker://run1/external_weights/s1")),
            service_client=service,
        )
    )
    for weights_ in (from_dict, from_path, from_save, from_async):
        assert sorted(weights_.urls) == sorted(FILES) and weights_.expires.tzinfo is not None
    path = "tinker://run1/external_weights/s1"
    assert from_path.tinker_path == from_save.tinker_path == from_async.tinker_path == path
    assert "sig=" not in repr(from_path) and "expires=" in repr(from_path)


def test_resolving_refuses_what_it_cannot_use(storage):
    with pytest.raises(InvalidRequestError, match="service_client"):
        resolve_external_weights("tinker://run/external_weights/s")
    with pytest.raises(InvalidRequestError, match="sampler_weights checkpoint"):
        resolve_external_weights(
            "tinker://run/sampler_weights/s", service_client=StandInServiceClient(storage)
        )
    with pytest.raises(InvalidRequestError, match="source must be"):
        resolve_external_weights(42)
    with pytest.raises(InvalidRequestError, match="http"):
        resolve_external_weights({"urls": {"adapter_config.json": "file:///etc/passwd"}})

    class OldRest:  # tinker < 0.38: no get_external_weights_urls
        pass

    class OldService:
        def create_rest_client(self):
            return OldRest()

    with pytest.raises(ConfigurationError, match="get_external_weights_urls"):
        resolve_external_weights("tinker://run/external_weights/s", service_client=OldService())


# -- publishing --------------------------------------------------------------------------------


def test_publish_from_urls_streams_both_files_and_the_lora_changes_samples(
    client, emulator, storage, tmp_path
):
    config, weights = adapter_files(tmp_path, seed=3)
    published = storage.publish(
        config, weights, tinker_path="tinker://run1/external_weights/step-1"
    )
    seen = []
    result = upload_external_weights(
        client,
        published,
        supported_models=[MODEL],
        progress=lambda done, total: seen.append((done, total)),
    )
    assert result.name == lora_name_for_tinker_path("tinker://run1/external_weights/step-1")
    assert not result.reused and result.sha256 == hashlib.sha256(weights).hexdigest()
    assert result.lora.latest_validation(MODEL).status in ("succeeded", "unverified")
    files = emulator.state.files
    assert files[result.weights_file_id].digest == hashlib.sha256(weights).digest()
    assert files[result.config_file_id].digest == hashlib.sha256(config).digest()
    assert files[result.weights_file_id].filename == FILES[1]
    assert seen[-1] == (len(config) + len(weights),) * 2
    assert sample(client, result.name) != sample(client)
    assert result.lora.display_name == "tinker://run1/external_weights/step-1"


def big_weights(rank, width):
    """A safetensors file with one zero lora_A tensor [rank, width] (F32): large, and quick to build."""
    header = json.dumps(
        {
            "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight": {
                "dtype": "F32",
                "shape": [rank, width],
                "data_offsets": [0, rank * width * 4],
            }
        }
    ).encode()
    header += b" " * (-len(header) % 8)
    return struct.pack("<Q", len(header)) + header + bytes(rank * width * 4)


@pytest.mark.parametrize("ranges", [True, False])
def test_the_preflight_reads_only_the_safetensors_header(client, emulator, tmp_path, ranges):
    config, _ = adapter_files(tmp_path, rank=64)  # rank 64 > Kimi's 32: refused
    weights = big_weights(64, 2**17)  # 32 MiB: more than loopback socket buffers absorb
    with StorageServer(ranges=ranges) as storage:
        published = storage.publish(config, weights)
        with pytest.raises(AdapterError) as info:
            upload_external_weights(client, published, supported_models=[MODEL])
        assert [p.code for p in info.value.problems] == ["rank_exceeds_max"]
        (header_length,) = struct.unpack("<Q", weights[:8])
        # Only the head was read (a ranged read, or the head of a plain GET), never the whole weights.
        assert storage.served.get(FILES[1], 0) < len(weights) / 2
        assert storage.served.get(FILES[1], 0) >= 8 + header_length or not ranges
    assert emulator.stats()["files"] == 0  # nothing uploaded


def test_a_checkpoint_for_another_base_model_is_refused_before_upload(
    client, emulator, storage, tmp_path
):
    config, weights = adapter_files(tmp_path, base_model="Qwen/Qwen3-8B")
    with pytest.raises(AdapterError) as info:
        upload_external_weights(client, storage.publish(config, weights), supported_models=[MODEL])
    assert [p.code for p in info.value.problems] == ["base_model_mismatch"]
    assert "Qwen/Qwen3-8B" in str(info.value) and emulator.stats()["files"] == 0


def test_without_preflight_the_lora_route_refuses_it(client, emulator, storage, tmp_path):
    config, weights = adapter_files(tmp_path, rank=64)
    with pytest.raises(LoRAValidationError) as info:
        upload_external_weights(
            client, storage.publish(config, weights), supported_models=[MODEL], preflight=False
        )
    assert info.value.result_code == "rank_exceeds_max"


def test_a_header_that_does_not_match_the_config_is_refused(client, storage, tmp_path):
    config, weights = adapter_files(tmp_path, rank=8)
    config = json.dumps(dict(json.loads(config), r=16)).encode()
    with pytest.raises(AdapterError) as info:
        upload_external_weights(client, storage.publish(config, weights), supported_models=[MODEL])
    assert [p.code for p in info.value.problems] == ["tensor_shape_mismatch"]


def test_an_expired_url_is_a_typed_error_and_nothing_is_uploaded(client, emulator, tmp_path):
    clock = ManualClock()
    config, weights = adapter_files(tmp_path)
    with StorageServer(clock=clock) as storage:
        published = storage.publish(config, weights, ttl=600)
        clock.now += 601
        with pytest.raises(PermissionDeniedError) as info:  # expired per `expires`: no request made
            upload_external_weights(client, published, supported_models=[MODEL], now=clock.utc)
        assert info.value.code == "url_expired" and "get_external_weights_urls" in str(info.value)
        assert storage.requests == []
        # A clock that disagrees with the server's: the server's 403 url_expired is read by its code.
        with pytest.raises(PermissionDeniedError) as info:
            upload_external_weights(client, published, supported_models=[MODEL])
        assert info.value.code == "url_expired" and info.value.status == 403
        assert "sig=" not in str(info.value) and "<redacted>" in str(info.value)
    assert emulator.stats()["files"] == 0


def test_urls_about_to_expire_are_used_while_they_work(client, emulator, tmp_path):
    clock = ManualClock()
    config, weights = adapter_files(tmp_path)
    with StorageServer(clock=clock) as storage:
        published = storage.publish(config, weights, ttl=600)
        clock.now += 570  # 30 s left, and nothing to re-sign them with: go ahead
        result = upload_external_weights(
            client, published, supported_models=[MODEL], now=clock.utc, name="soon-1"
        )
        assert result.sha256 == hashlib.sha256(weights).hexdigest()


def test_expired_urls_are_re_signed_from_the_tinker_path(client, emulator, tmp_path):
    clock = ManualClock()
    config, weights = adapter_files(tmp_path)
    with StorageServer(clock=clock) as storage:
        published = storage.publish(
            config, weights, tinker_path="tinker://r/external_weights/s", ttl=600
        )
        service = StandInServiceClient(storage)
        clock.now += 601
        result = upload_external_weights(
            client, published, supported_models=[MODEL], service_client=service
        )
        assert result.sha256 == hashlib.sha256(weights).hexdigest()
        assert service.rest.calls == [("urls", "tinker://r/external_weights/s")]


def test_from_a_tinker_path_sync_and_async_with_api_futures(client, emulator, storage, tmp_path):
    service = StandInServiceClient(storage)
    storage.publish(
        *adapter_files(tmp_path, "a", seed=1), tinker_path="tinker://run/external_weights/s1"
    )
    storage.publish(
        *adapter_files(tmp_path, "b", seed=2), tinker_path="tinker://run/external_weights/s2"
    )
    one = upload_external_weights(
        client,
        StandInFuture(StandInSaveResponse("tinker://run/external_weights/s1")),
        supported_models=[MODEL],
        service_client=service,
    )
    two = asyncio.run(
        upload_external_weights_async(
            client,
            StandInFuture(StandInSaveResponse("tinker://run/external_weights/s2")),
            supported_models=[MODEL],
            service_client=service,
            delete_tinker_checkpoint=True,
        )
    )
    assert one.tinker_path == "tinker://run/external_weights/s1" and two.tinker_path.endswith("/s2")
    assert sample(client, one.name) != sample(client, two.name)
    assert ("delete", "tinker://run/external_weights/s2") in service.rest.calls
    assert "tinker://run/external_weights/s2" not in storage.checkpoints


def test_publishing_the_same_weights_again_reuses_the_lora(client, emulator, storage, tmp_path):
    config, weights = adapter_files(tmp_path)
    published = storage.publish(config, weights, tinker_path="tinker://run/external_weights/s1")
    first = upload_external_weights(client, published, supported_models=[MODEL])
    files = emulator.stats()["files"]
    again = upload_external_weights(client, published, supported_models=[MODEL])
    assert again.reused and again.name == first.name and again.sha256 == first.sha256
    assert (again.config_file_id, again.weights_file_id) == (
        first.config_file_id,
        first.weights_file_id,
    )
    assert emulator.stats()["files"] == files and emulator.stats()["loras"] == 1  # nothing uploaded


def test_a_step_re_saved_with_other_weights_gets_a_digest_suffixed_name(
    client, emulator, storage, tmp_path
):
    path = "tinker://run/external_weights/s1"
    first = upload_external_weights(
        client,
        storage.publish(*adapter_files(tmp_path, "a", seed=1), tinker_path=path),
        supported_models=[MODEL],
    )
    second = upload_external_weights(
        client,
        storage.publish(*adapter_files(tmp_path, "b", seed=2), tinker_path=path),
        supported_models=[MODEL],
    )
    assert second.name == f"{first.name}-{second.sha256[:8]}" and not second.reused
    third = upload_external_weights(
        client,
        storage.publish(*adapter_files(tmp_path, "b", seed=2), tinker_path=path),
        supported_models=[MODEL],
    )
    assert third.reused and third.name == second.name


def test_urls_without_a_tinker_path_need_a_name(client, storage, tmp_path):
    published = storage.publish(*adapter_files(tmp_path))
    urls_only = {"urls": published["urls"], "expires": published["expires"]}
    with pytest.raises(InvalidRequestError, match="name="):
        upload_external_weights(client, urls_only, supported_models=[MODEL])
    assert (
        upload_external_weights(client, urls_only, supported_models=[MODEL], name="my-step-1").name
        == "my-step-1"
    )


def test_files_under_a_folder_and_encrypted_files(client, storage, tmp_path):
    config, weights = adapter_files(tmp_path)
    nested = storage.publish(config, weights, folder="peft/")
    assert sorted(nested["urls"]) == ["peft/adapter_config.json", "peft/adapter_model.safetensors"]
    assert (
        upload_external_weights(client, nested, supported_models=[MODEL], name="nested-1").lora.name
        == "nested-1"
    )
    encrypted = ExternalWeights(
        {
            "adapter_config.json.age": "https://x/c?sig=1",
            "adapter_model.safetensors.age": "https://x/w?sig=1",
        }
    )
    with pytest.raises(ConfigurationError, match="age"):
        upload_external_weights(client, encrypted, supported_models=[MODEL], name="enc-1")
    with pytest.raises(AdapterError, match="adapter_model.safetensors"):
        upload_external_weights(
            client,
            ExternalWeights({"adapter_config.json": "https://x/c?sig=1"}),
            supported_models=[MODEL],
            name="half-1",
        )


def test_an_upload_cut_mid_way_is_retried_by_re_opening_the_url(
    client, emulator, storage, tmp_path
):
    config, weights = adapter_files(tmp_path, hidden_size=2048)  # ~0.5 MB of weights
    published = storage.publish(config, weights)
    storage.drop_after = len(weights) // 3
    result = upload_external_weights(client, published, supported_models=[MODEL], name="cut-1")
    assert emulator.state.files[result.weights_file_id].digest == hashlib.sha256(weights).digest()
    assert result.sha256 == hashlib.sha256(weights).hexdigest()
    full_gets = [r for r in storage.requests if r[0] == FILES[1] and r[1] is None]
    assert len(full_gets) == 2  # the cut one and the re-opened one


def test_memory_stays_flat_for_a_large_checkpoint(client, emulator, storage, tmp_path):
    # One 24 MiB tensor: the upload must stream it, not hold it.
    config, _ = adapter_files(tmp_path, rank=8)
    weights = big_weights(8, 786432)
    published = storage.publish(config, weights)
    del weights  # the storage server holds its copy; the client must not make one
    peaks = []

    def progress(done, total):
        if (
            done == total
        ):  # the upload is over (the emulator's own LoRA validation, in this process, comes next)
            peaks.append(tracemalloc.get_traced_memory()[1])

    tracemalloc.start()
    try:
        result = upload_external_weights(
            client, published, supported_models=[MODEL], name="big-1", wait=False, progress=progress
        )
    finally:
        tracemalloc.stop()
    assert emulator.state.files[result.weights_file_id].bytes > 24 * 2**20
    # The peak includes the storage server's and the emulator's buffers (same process); still far below 24 MiB.
    assert peaks and peaks[0] < 8 * 2**20, peaks


def weights_with_header(entries, *, pad_to=0, data=64):
    """A safetensors file whose header holds ``entries`` (name -> (shape, start)), padded with spaces."""
    header = json.dumps(
        {
            name: {
                "dtype": "F32",
                "shape": shape,
                "data_offsets": [start, start + 4 * shape[0] * shape[1]],
            }
            for name, (shape, start) in entries.items()
        }
    ).encode()
    header += b" " * max(pad_to - len(header), -len(header) % 8)
    return struct.pack("<Q", len(header)) + header + bytes(data)


def traced_peak(call):
    """The peak of Python's allocations while ``call()`` runs (the storage server's buffers included)."""
    tracemalloc.start()
    try:
        call()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("ranges", [True, False])
def test_a_100_mib_safetensors_header_is_read_in_bounded_memory(client, emulator, tmp_path, ranges):
    config, _ = adapter_files(tmp_path, rank=64)  # rank 64 > Kimi's 32: refused after the header
    tensor = "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight"
    weights = weights_with_header({tensor: ([64, 1], 0)}, pad_to=100 * 2**20 - 8, data=256)
    with StorageServer(ranges=ranges) as storage:
        published = storage.publish(config, weights)
        del weights

        def publish():
            with pytest.raises(AdapterError) as info:
                upload_external_weights(client, published, supported_models=[MODEL])
            # The whole header was read (its tensor was found and matched the config's rank):
            assert [p.code for p in info.value.problems] == ["rank_exceeds_max"]

        peak = traced_peak(publish)
    assert peak < 8 * 2**20, f"{peak / 2**20:.0f} MiB for a 100 MiB header"
    assert emulator.stats()["files"] == 0


def test_a_header_of_many_tensors_is_checked_whole_in_bounded_memory(client, storage, tmp_path):
    # 60,000 tensors (a 7 MiB header), every 1,000th with the wrong rank for the config's r=8.
    config, _ = adapter_files(tmp_path, rank=8)
    entries = {
        f"base_model.model.model.layers.{i}.self_attn.q_proj.lora_A.weight": (
            [4 if i % 1000 == 7 else 8, 1],
            0,
        )
        for i in range(60000)
    }
    weights = weights_with_header(entries)
    published = storage.publish(config, weights)
    del weights, entries
    problems = []

    def publish():
        with pytest.raises(AdapterError) as info:
            upload_external_weights(client, published, supported_models=[MODEL])
        problems.extend(info.value.problems)

    peak = traced_peak(publish)
    (problem,) = problems
    assert problem.code == "tensor_shape_mismatch"
    assert "layers.7.self_attn" in problem.message and "(and 59 more)" in problem.message
    assert peak < 8 * 2**20, f"{peak / 2**20:.0f} MiB for a 7 MiB header"


def test_runs_list_their_loras_and_what_newer_steps_supersede(client, emulator, storage, tmp_path):
    names = []
    for step in range(3):
        path = f"tinker://run-a/external_weights/step-{step}"
        published = storage.publish(
            *adapter_files(tmp_path, str(step), seed=step), tinker_path=path
        )
        names.append(
            upload_external_weights(client, published, supported_models=[MODEL], wait=False).name
        )
    other = storage.publish(
        *adapter_files(tmp_path, "o", seed=9), tinker_path="tinker://run-b/external_weights/s"
    )
    upload_external_weights(client, other, supported_models=[MODEL], wait=False)
    client.loras.upload(
        make_adapter(tmp_path / "plain"), name="not-from-tinker", supported_models=[MODEL]
    )
    assert [p.name for p in run_loras(client, "run-a")] == names
    old = superseded_loras(client, "tinker://run-a/external_weights/step-2", keep=1)
    assert [p.name for p in old] == names[:2]
    assert all(
        p.config_file_id in emulator.state.files and p.weights_file_id in emulator.state.files
        for p in old
    )
    assert (
        superseded_loras(client, "run-a", keep=5) == []
        and len(superseded_loras(client, "run-a", keep=0)) == 3
    )
    with pytest.raises(InvalidRequestError, match="keep"):
        superseded_loras(client, "run-a", keep=-1)


def test_no_signed_url_reaches_the_logs(client, storage, tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    published = storage.publish(
        *adapter_files(tmp_path), tinker_path="tinker://run/external_weights/s"
    )
    upload_external_weights(client, published, supported_models=[MODEL])
    upload_external_weights(client, published, supported_models=[MODEL])
    assert "sig=" not in caplog.text


# -- the whole path on the emulator: its publish_external_weights serves the signed URLs -----------


class EmulatorRest:
    """tinker 0.38's RestClient, answered by the emulator's external_weights_urls (fresh signatures)."""

    def __init__(self, server):
        self.server = server
        self.calls = 0

    def get_external_weights_urls(self, tinker_path):
        self.calls += 1
        signed = self.server.external_weights_urls(tinker_path)
        from sail_lite.tinker_weights import _parse_expires

        return StandInFuture(StandInUrlsResponse(signed["urls"], _parse_expires(signed["expires"])))


class EmulatorService:
    def __init__(self, server):
        self.rest = EmulatorRest(server)

    def create_rest_client(self):
        return self.rest


def test_the_emulators_external_weights_become_a_lora(client, emulator, tmp_path):
    config, weights = adapter_files(tmp_path, seed=4)
    published = emulator.publish_external_weights(
        config, weights, tinker_path="tinker://emu/external_weights/s4"
    )
    assert set(published) == {"tinker_path", "urls", "expires"}
    from_urls = upload_external_weights(client, published, supported_models=[MODEL])
    service = EmulatorService(emulator)
    again = upload_external_weights(
        client, "tinker://emu/external_weights/s4", supported_models=[MODEL], service_client=service
    )
    assert again.reused and again.name == from_urls.name and service.rest.calls == 1
    assert (
        emulator.state.files[from_urls.weights_file_id].digest == hashlib.sha256(weights).digest()
    )
    assert sample(client, from_urls.name) != sample(client)


def test_an_expired_emulator_url_and_re_signing(tmp_path):
    from sail_lite.emulator import EmulatorServer

    from .conftest import make_client

    clock = ManualClock()
    config, weights = adapter_files(tmp_path)
    with EmulatorServer(clock=clock) as server, make_client(server) as client:
        published = server.publish_external_weights(
            config, weights, tinker_path="tinker://emu/external_weights/x", ttl_seconds=60
        )
        clock.now += 61  # the emulator's clock: its URLs now answer 403 url_expired
        with pytest.raises(PermissionDeniedError) as info:
            upload_external_weights(client, published, supported_models=[MODEL], wait=False)
        assert info.value.code == "url_expired" and "sig=" not in str(info.value)
        assert server.stats()["files"] == 0
        result = upload_external_weights(
            client,
            published,
            supported_models=[MODEL],
            wait=False,
            service_client=EmulatorService(server),
        )
        assert result.sha256 == hashlib.sha256(weights).hexdigest()


def test_an_emulator_checkpoint_for_another_base_model_is_refused(client, emulator, tmp_path):
    config, weights = adapter_files(tmp_path, base_model="Qwen/Qwen3-8B", rank=64)
    published = emulator.publish_external_weights(config, weights)
    with pytest.raises(AdapterError) as info:
        upload_external_weights(client, published, supported_models=[MODEL])
    assert sorted(p.code for p in info.value.problems) == [
        "base_model_mismatch",
        "rank_exceeds_max",
    ]
    assert emulator.stats()["files"] == 0
    with pytest.raises(LoRAValidationError) as refused:  # and the LoRA route itself refuses it too
        upload_external_weights(client, published, supported_models=[MODEL], preflight=False)
    assert refused.value.result_code in ("base_model_mismatch", "rank_exceeds_max")
