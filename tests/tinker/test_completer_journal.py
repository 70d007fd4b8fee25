"""SailTokenCompleter.submit with a Journal: recorded, resumed from the file, the tinker types on the way out."""

from __future__ import annotations

import asyncio

import pytest

tinker = pytest.importorskip("tinker")
pytest.importorskip("tinker_cookbook")

from tinker_cookbook.completers import TokensWithLogprobs  # noqa: E402

from sail_lite import Journal, SailTokenCompleter  # noqa: E402

from ..conftest import make_client  # noqa: E402

MODEL = "moonshotai/Kimi-K2.6"


def test_a_journaled_completer_submit_resumes_from_the_file_and_keeps_the_cookbook_contract(
    emulator, tmp_path
):
    prompts = [[72, 101], [108, 108], [72, 101]]
    with make_client(emulator) as client, Journal(tmp_path / "j.db") as journal:
        sampler = SailTokenCompleter(model=MODEL, max_tokens=8, client=client)
        first = [
            sampler.submit(
                tinker.ModelInput.from_ints(p), stop=[], journal=journal, job="rl"
            ).result(10)
            for p in prompts
        ]
        assert all(isinstance(r, TokensWithLogprobs) for r in first)
        assert asyncio.run(
            sampler(tinker.ModelInput.from_ints(prompts[0]), stop=[])
        )  # the contract, unjournaled
    runs = emulator.stats()["inference_runs"]
    with make_client(emulator) as client, Journal(tmp_path / "j.db") as journal:
        sampler = SailTokenCompleter(model=MODEL, max_tokens=8, client=client)
        again = [sampler.submit(p, stop=[], journal=journal, job="rl") for p in prompts]
        assert all(f.done() for f in again)
        assert [f.result(0).tokens for f in again] == [r.tokens for r in first]
        assert [f.result(0).maybe_logprobs for f in again] == [r.maybe_logprobs for r in first]
    assert emulator.stats()["inference_runs"] == runs
