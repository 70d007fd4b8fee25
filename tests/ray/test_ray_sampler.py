"""Ray Data tier: a local Ray cluster samples a few hundred rows through SailSampler against an emulator process.

A worker dies mid-batch (os._exit after half its creates were sent, once);
Ray restarts the actor and retries the batch, which re-sends the same keys.
Asserts: every row's result exactly once, emulator inference runs == rows.
Skipped unless Ray is installed (the CI's Ray tier installs ``.[ray]``).
"""

from __future__ import annotations

import os

import pytest

ray = pytest.importorskip("ray")
pytest.importorskip("ray.data")

# The current API only: a Ray deprecation warning fails the test.
pytestmark = pytest.mark.filterwarnings("error::ray.util.annotations.RayDeprecationWarning")

from sail_lite.ray import SailSampler  # noqa: E402

from ..test_journal_crash import ROOT, EmulatorProcess  # noqa: E402

ROWS = 300
COPIES = 3  # each prompt sampled three times (a group rollout): three distinct samples


class CrashingSampler(SailSampler):
    """Dies (os._exit, no clean-up) in the middle of its first batch, once per test run."""

    def __init__(self, *, crash_marker: str, **kwargs):
        super().__init__(**kwargs)
        self.crash_marker = crash_marker
        tokens = self.client.tokens
        submit = tokens.submit
        sent = [0]

        def crash_once_after_some_creates(*args, **kw):
            future = submit(*args, **kw)
            sent[0] += 1
            if sent[0] == 10:
                try:
                    fd = os.open(self.crash_marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
                except FileExistsError:
                    return future
                os.close(fd)
                future.exception()  # this create reached the server; others are still in flight
                os._exit(1)
            return future

        tokens.submit = crash_once_after_some_creates


@pytest.fixture(scope="module")
def emulator():
    with EmulatorProcess(turn_times={"priority": 0.05}) as server:
        yield server


@pytest.fixture(scope="module")
def cluster():
    os.environ["PYTHONPATH"] = ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        runtime_env={"env_vars": {"PYTHONPATH": os.environ["PYTHONPATH"]}},
    )
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    yield
    ray.shutdown()


def test_a_worker_killed_mid_batch_is_retried_and_nothing_is_paid_twice(
    emulator, cluster, tmp_path
):
    emulator.reset()
    rows = [
        {"row": i, "prompt_tokens": [1 + i // COPIES, 2, 3], "sample": i % COPIES}
        for i in range(ROWS)
    ]
    ds = ray.data.from_items(rows, override_num_blocks=6)
    out = ds.map_batches(
        CrashingSampler,
        fn_constructor_kwargs=dict(
            crash_marker=str(tmp_path / "crashed"),
            job="ray-test",
            model="moonshotai/Kimi-K2.6",
            max_tokens=4,
            key_columns=("prompt_tokens", "sample"),
            api_key=emulator.api_key,
            base_url=emulator.base_url,
            client_options={"environ": {}},
        ),
        batch_size=50,
        compute=ray.data.ActorPoolStrategy(size=2),
        num_cpus=0.25,  # I/O-bound; Ray Data restarts a dead actor and retries by default
    ).take_all()
    assert (tmp_path / "crashed").exists()  # the crash did happen
    assert sorted(r["row"] for r in out) == list(range(ROWS))  # every row once
    assert len({r["response_id"] for r in out}) == ROWS  # equal prompts, distinct samples
    assert all(len(r["tokens"]) >= 1 and r["stop_reason"] in ("stop", "length") for r in out)
    assert emulator.stats()["inference_runs"] == ROWS


class SampleThenFailOnce(SailSampler):
    """Samples the whole batch (paid), then raises on the first attempt of the run."""

    def __init__(self, *, marker: str, **kwargs):
        super().__init__(**kwargs)
        self.marker = marker

    def __call__(self, batch):
        batch = super().__call__(batch)
        try:
            fd = os.open(self.marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            return batch
        os.close(fd)
        raise RuntimeError("first attempt fails after sampling")


def test_a_task_that_raises_on_its_first_attempt_is_retried_for_free(emulator, cluster, tmp_path):
    emulator.reset()
    marker = str(tmp_path / "raised")
    job = dict(
        marker=marker,
        job="ray-task-retry",
        model="moonshotai/Kimi-K2.6",
        max_tokens=4,
        key_columns=("prompt_tokens", "sample"),
        api_key=emulator.api_key,
        base_url=emulator.base_url,
        client_options={"environ": {}},
    )
    ctx = ray.data.DataContext.get_current()
    ctx.actor_task_retry_on_errors = [RuntimeError]  # Ray's current way to retry a raised task
    rows = [{"row": i, "prompt_tokens": [5 + i % 40, 1], "sample": i // 40} for i in range(200)]
    try:
        out = (
            ray.data.from_items(rows, override_num_blocks=4)
            .map_batches(
                SampleThenFailOnce,
                fn_constructor_kwargs=job,
                batch_size=50,
                compute=ray.data.ActorPoolStrategy(size=2),
                num_cpus=0.25,
            )
            .take_all()
        )
    finally:
        ctx.actor_task_retry_on_errors = False
    assert os.path.exists(marker)
    assert sorted(r["row"] for r in out) == list(range(200))
    assert emulator.stats()["inference_runs"] == 200
