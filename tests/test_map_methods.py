"""client.tokens.map, client.responses.map: the one engine (run_map), keyed and journaled."""

from __future__ import annotations

from sail_lite import Journal

MODEL = "moonshotai/Kimi-K2.6"


def test_tokens_map_with_a_job_never_bills_twice_and_counts_equal_prompts(client, emulator):
    prompts = [[1, 2, 3]] * 3 + [[4, 5]]
    first = list(client.tokens.map(prompts, model=MODEL, max_tokens=4, job="eval-1"))
    assert len({r.response_id for r in first}) == 4  # the same prompt three times is three samples
    again = list(client.tokens.map(reversed(prompts), model=MODEL, max_tokens=4, job="eval-1"))
    assert (
        emulator.stats()["inference_runs"] == 4
    )  # re-running (even re-ordered) replays, never re-runs
    assert sorted(r.response_id for r in again) == sorted(r.response_id for r in first)


def test_responses_map_with_a_journal_resumes_from_the_file(client, emulator, tmp_path):
    path = str(tmp_path / "job.db")
    seen = []
    with Journal(path) as journal:
        done = list(
            client.responses.map(
                ["a", "b", "c"], model=MODEL, journal=journal, job="r", progress=seen.append
            )
        )
    assert [r.status for r in done] == ["completed"] * 3 and seen[-1].done == 3
    requests_before = sum(emulator.stats()["requests"].values())
    with Journal(path) as journal:
        again = list(client.responses.map(["a", "b", "c"], model=MODEL, journal=journal, job="r"))
    assert [r.id for r in again] == [r.id for r in done]
    assert sum(emulator.stats()["requests"].values()) == requests_before  # all from the journal
