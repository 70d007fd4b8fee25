"""The external-weights bridge with the real tinker 0.38 types and futures, and a cookbook rollout on the result.

The core tier tests the bridge against stand-ins (tests/tinker_standin.py);
here the stand-ins are checked against the installed tinker's classes, and
the bridge is driven with tinker's own response types and ``APIFuture``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import inspect
from concurrent.futures import Future

import pytest

tinker = pytest.importorskip("tinker")
pytest.importorskip("tinker_cookbook")

from tinker.lib.public_interfaces.api_future import AwaitableConcurrentFuture  # noqa: E402
from tinker.lib.public_interfaces.rest_client import RestClient  # noqa: E402
from tinker.lib.public_interfaces.training_client import TrainingClient  # noqa: E402
from tinker_cookbook.renderers.role_colon import RoleColonRenderer  # noqa: E402
from tinker_cookbook.rl.problem_env import ProblemGroupBuilder  # noqa: E402
from tinker_cookbook.rl.rollouts import do_group_rollout  # noqa: E402

from sail_lite import SailTokenCompleter
from sail_lite.tinker_weights import upload_external_weights, upload_external_weights_async

from ..test_tinker_weights import adapter_files
from ..tinker_standin import (
    StandInRestClient,
    StandInSaveResponse,
    StandInUrlsResponse,
    StorageServer,
)
from .conftest import ByteTokenizer
from .test_cookbook_rollouts import Arithmetic

MODEL = "moonshotai/Kimi-K2.6"


def parameters(function):
    return [(p.name, p.kind) for p in inspect.signature(function).parameters.values()]


@pytest.mark.parametrize(
    "name", ["get_external_weights_urls", "delete_checkpoint_from_tinker_path"]
)
def test_the_stand_in_rest_client_has_tinkers_method_signatures(name):
    assert parameters(getattr(StandInRestClient, name)) == parameters(getattr(RestClient, name))


def test_the_stand_in_types_have_tinkers_fields():
    urls_fields = tinker.types.ExternalWeightsUrlsResponse.model_fields
    assert (
        set(urls_fields)
        == {f.name for f in dataclasses.fields(StandInUrlsResponse)}
        == {"urls", "expires"}
    )
    assert urls_fields["expires"].annotation is dt.datetime
    assert urls_fields["urls"].annotation == dict[str, str]
    assert {"path"} <= set(tinker.types.SaveWeightsExternalResponse.model_fields)
    assert {f.name for f in dataclasses.fields(StandInSaveResponse)} <= set(
        tinker.types.SaveWeightsExternalResponse.model_fields
    )
    # What the bridge tells users to call, as the installed tinker spells it.
    assert [p for p, _ in parameters(TrainingClient.save_weights_external)][:3] == [
        "self",
        "name",
        "ttl_seconds",
    ]


def api_future(value):
    future = Future()
    future.set_result(value)
    return AwaitableConcurrentFuture(future)


class TinkerTypedRest:
    """A RestClient whose answers are tinker's own types inside tinker's own APIFuture."""

    def __init__(self, storage):
        self.storage = storage

    def get_external_weights_urls(self, tinker_path):
        published = self.storage.sign(tinker_path)
        return api_future(
            tinker.types.ExternalWeightsUrlsResponse(
                urls=published["urls"], expires=dt.datetime.fromisoformat(published["expires"])
            )
        )


class Service:
    def __init__(self, storage):
        self.rest = TinkerTypedRest(storage)

    def create_rest_client(self):
        return self.rest


@pytest.fixture
def storage():
    with StorageServer() as server:
        yield server


def test_tinkers_api_futures_and_types_sync_and_async(client, emulator, storage, tmp_path):
    service = Service(storage)
    storage.publish(
        *adapter_files(tmp_path, "a", seed=1), tinker_path="tinker://run/external_weights/s1"
    )
    storage.publish(
        *adapter_files(tmp_path, "b", seed=2), tinker_path="tinker://run/external_weights/s2"
    )
    saved = api_future(
        tinker.types.SaveWeightsExternalResponse(path="tinker://run/external_weights/s1")
    )
    one = upload_external_weights(client, saved, supported_models=[MODEL], service_client=service)
    urls = service.rest.get_external_weights_urls(
        "tinker://run/external_weights/s2"
    )  # an APIFuture
    two = asyncio.run(
        upload_external_weights_async(
            client, urls, supported_models=[MODEL], tinker_path="tinker://run/external_weights/s2"
        )
    )
    assert (
        one.tinker_path.endswith("/s1") and two.tinker_path.endswith("/s2") and one.name != two.name
    )
    assert {lora.name for lora in client.loras.list()} == {one.name, two.name}


def test_a_cookbook_rollout_samples_from_the_bridged_lora(client, emulator, tmp_path):
    # The whole path offline on the emulator: it serves the external weights and the LoRA route.
    published = emulator.publish_external_weights(
        *adapter_files(tmp_path, seed=5), tinker_path="tinker://rl/external_weights/step-7"
    )
    lora = upload_external_weights(client, published, supported_models=[MODEL])
    renderer = RoleColonRenderer(ByteTokenizer())
    builder = ProblemGroupBuilder(env_thunk=lambda: Arithmetic(renderer, 2, 3), num_envs=2)
    policy = SailTokenCompleter(
        model=MODEL, max_tokens=12, temperature=0.0, lora=lora.name, client=client
    )
    base = SailTokenCompleter(model=MODEL, max_tokens=12, temperature=0.0, client=client)
    tuned = asyncio.run(do_group_rollout(builder, policy))
    plain = asyncio.run(do_group_rollout(builder, base))
    tuned_tokens = [t.transitions[0].ac.tokens for t in tuned.trajectories_G]
    plain_tokens = [t.transitions[0].ac.tokens for t in plain.trajectories_G]
    assert tuned_tokens != plain_tokens  # the adapter was applied
    loras = [record.params.lora for record in emulator.state.responses.values()]
    assert sorted(loras, key=str) == sorted([lora.name, lora.name, None, None], key=str)
