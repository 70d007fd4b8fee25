"""tinker-cookbook's own rollout code with SailTokenCompleter as the policy, offline.

No tokenizer or model download: a byte-level tokenizer (the emulator's
vocabulary) under the cookbook's RoleColonRenderer, and a ProblemEnv.
"""

from __future__ import annotations

import asyncio

import pytest

pytest.importorskip("tinker_cookbook")

from tinker_cookbook.renderers.role_colon import RoleColonRenderer  # noqa: E402
from tinker_cookbook.rl.problem_env import ProblemEnv, ProblemGroupBuilder
from tinker_cookbook.rl.rollouts import do_group_rollout

from sail_lite import SailTokenCompleter
from sail_lite.emulator import EmulatorServer

from ..conftest import make_client
from .conftest import ByteTokenizer, wait_for

rollout_runner = pytest.importorskip("tinker_cookbook.rl.rollout_runner")
rollout_limits = pytest.importorskip("tinker_cookbook.rl.rollout_limits")

MODEL = "moonshotai/Kimi-K2.6"


class Arithmetic(ProblemEnv):
    def __init__(self, renderer, a, b):
        super().__init__(renderer)
        self.a, self.b = a, b

    def get_question(self):
        return f"What is {self.a}+{self.b}?"

    def check_answer(self, sample_str):
        return str(self.a + self.b) in sample_str

    def check_format(self, sample_str):
        return bool(sample_str.strip())

    def get_reference_answer(self):
        return str(self.a + self.b)


def policy(client, **kwargs):
    options = dict(model=MODEL, max_tokens=24, temperature=1.0, client=client)
    options.update(kwargs)
    return SailTokenCompleter(**options)


def test_do_group_rollout_samples_every_env_through_sail(client, emulator):
    renderer = RoleColonRenderer(ByteTokenizer())
    builder = ProblemGroupBuilder(env_thunk=lambda: Arithmetic(renderer, 2, 3), num_envs=4)
    group = asyncio.run(do_group_rollout(builder, policy(client)))

    assert len(group.trajectories_G) == 4
    for trajectory in group.trajectories_G:
        (transition,) = trajectory.transitions
        prompt = transition.ob.to_ints()
        assert (
            bytes(prompt).decode().startswith("User: What is 2+3?")
        )  # the renderer's tokens, verbatim
        action = transition.ac
        assert 1 <= len(action.tokens) <= 24 and len(action.logprobs) == len(action.tokens)
        assert action.stop_reason in ("stop", "length")
        assert transition.reward <= 1.0
    assert len(group.get_total_rewards()) == 4
    assert emulator.stats()["inference_runs"] == 4  # one background response per env, none repeated


def test_run_rollout_with_rollout_limits_passes_the_per_call_max_tokens(client, emulator):
    renderer = RoleColonRenderer(ByteTokenizer())
    limits = rollout_limits.RolloutLimits(max_turn_tokens=3)
    trajectory = asyncio.run(
        rollout_runner.run_rollout(policy(client), Arithmetic(renderer, 4, 4), limits=limits)
    )
    (transition,) = trajectory.transitions
    assert len(transition.ac.tokens) <= 3  # min(per-call 3, constructor 24)
    assert emulator.stats()["inference_runs"] == 1


def test_run_rollout_with_a_trajectory_budget(client):
    renderer = RoleColonRenderer(ByteTokenizer())
    env = Arithmetic(renderer, 1, 1)
    prompt_length = len(
        renderer.build_generation_prompt(
            [{"role": "user", "content": env.get_question()}]
        ).to_ints()
    )
    limits = rollout_limits.RolloutLimits(max_trajectory_tokens=prompt_length + 5)
    trajectory = asyncio.run(rollout_runner.run_rollout(policy(client), env, limits=limits))
    assert len(trajectory.transitions[0].ac.tokens) <= 5


def test_the_cookbooks_sampling_turn_timeout_cancels_the_response_on_sail():
    with EmulatorServer(
        turn_times={"asap": 0, "priority": 30, "standard": 30, "flex": 30}
    ) as server, make_client(server) as client:
        renderer = RoleColonRenderer(ByteTokenizer())
        limits = rollout_limits.RolloutLimits(sampling_turn_timeout_seconds=0.3)
        with pytest.raises(rollout_runner.SamplingTurnTimeoutError):
            asyncio.run(
                rollout_runner.run_rollout(
                    policy(client), Arithmetic(renderer, 2, 2), limits=limits
                )
            )
        wait_for(lambda: server.stats()["cancellations"] == 1)
        assert server.stats()["responses"] == {"cancelled": 1}


def _provenance_api():
    """cookbook 0.6's provenance pieces, or skip on 0.5 (no sequence_id, no provenance)."""
    import dataclasses

    from tinker_cookbook.completers import TokensWithLogprobs

    if "sequence_id" not in {f.name for f in dataclasses.fields(TokensWithLogprobs)}:
        pytest.skip("this tinker-cookbook has no provenance (< 0.6)")
    # Imported, not importorskip'd: on 0.6 a missing dependency must fail the Tinker tier.
    from tinker_cookbook.rl import data_processing, train

    return data_processing, train


def test_a_rollout_with_provenance_gets_no_spans_from_sail_and_stable_reinforce_refuses_it(
    client, emulator
):
    # Sail response ids are not Tinker sequence ids: sending them to forward_backward as provenance
    # would be wrong, so a sail_lite result has sequence_id None, as the official completer's.
    data_processing, train = _provenance_api()
    renderer = RoleColonRenderer(ByteTokenizer())
    builder = ProblemGroupBuilder(env_thunk=lambda: Arithmetic(renderer, 2, 3), num_envs=2)
    group = asyncio.run(do_group_rollout(builder, policy(client)))
    actions = [t.ac for trajectory in group.trajectories_G for t in trajectory.transitions]
    assert actions and all(action.sequence_id is None for action in actions)
    # ... and the Sail response id is still there, on an attribute the cookbook never reads.
    assert {action.sail_response_id for action in actions} == set(emulator.state.responses)

    advantages = data_processing.compute_advantages([group])
    data, _ = data_processing.assemble_training_data([group], advantages, include_provenance=True)
    assert data and all(d.model_input_spans is None and d.loss_fn_input_spans is None for d in data)
    with pytest.raises(ValueError, match="sequence_id"):
        train._check_provenance(data, "stable_reinforce")
    train._check_provenance(data, "importance_sampling")  # the other losses need none
