"""Responses, chat, messages, batches: the reference model, windows, idempotency, over raw HTTP."""

from __future__ import annotations

import dataclasses
import math
import time
import tracemalloc

import pytest

from sail_lite.emulator import EOS, EmulatorServer, Fault
from sail_lite.emulator.model import VOCAB, generate
from sail_lite.emulator.params import parse_response_body
from sail_lite.emulator.state import DEFAULT_MODELS

from .conftest import MODEL, PLACEHOLDER, Api, assert_error_body, block

PROMPT = [3, 1, 4, 1, 5, 9, 2, 6, 1000000]


# -- the reference model, as pure arithmetic ----------------------------------------------------------------


def run(**kwargs):
    options = dict(seed=0, model=MODEL, max_tokens=64)
    options.update(kwargs)
    return generate(PROMPT, **options)


def test_deterministic_and_seeded():
    assert run() == run() and run(temperature=0) == run(temperature=0)
    assert run(seed=1).tokens != run().tokens
    assert (
        run(sample_salt=b"other request").tokens != run().tokens
    )  # sampling draws depend on the request


def test_greedy_logprobs_are_zero_and_sampled_ones_are_true_probabilities():
    greedy = run(temperature=0)
    assert all(
        lp == 0.0 for lp in greedy.logprobs
    )  # a point mass: the distribution that was sampled
    sampled = run(temperature=1.0, max_tokens=200)
    assert all(lp < 0 and math.isfinite(lp) for lp in sampled.logprobs)
    # Recompute the first step's distribution by hand and check the reported logprob is exact.
    import hashlib
    from array import array

    from sail_lite.emulator.model import _distribution, _logits

    head = hashlib.blake2b(digest_size=16)
    head.update(f"{0}\0{MODEL}\0".encode())
    head.update(array("q", PROMPT).tobytes())
    dist = dict(_distribution(_logits(head.digest(), None), 1.0, 1.0))
    assert math.isclose(sum(dist.values()), 1.0)
    assert math.isclose(sampled.logprobs[0], math.log(dist[VOCAB.index(sampled.tokens[0])]))


def test_top_p_narrows_and_temperature_sharpens():
    wide = run(temperature=1.5, max_tokens=300)
    narrow = run(temperature=1.5, top_p=0.2, max_tokens=300)
    assert sum(narrow.logprobs) / len(narrow.logprobs) > sum(wide.logprobs) / len(wide.logprobs)
    cold = run(temperature=0.2, max_tokens=300)
    assert sum(cold.logprobs) / len(cold.logprobs) > sum(wide.logprobs) / len(wide.logprobs)


def test_stops_and_lengths():
    base = run(temperature=0, max_tokens=40)
    assert base.stop_reason in ("length", "stop")
    token = base.tokens[5]
    stopped = run(temperature=0, max_tokens=40, stop_tokens=[token])
    assert (
        stopped.tokens == base.tokens[: base.tokens.index(token) + 1]
        and stopped.stop_reason == "stop"
    )
    needle = base.text[6:8]
    by_string = run(temperature=0, max_tokens=40, stop_strings=[needle])
    assert (
        by_string.stop_reason == "stop"
        and by_string.text.endswith(needle)
        and not by_string.answer.endswith(needle)
    )
    assert (
        run(temperature=0, max_tokens=3).stop_reason == "length"
        or EOS in run(temperature=0, max_tokens=3).tokens
    )
    outputs = [
        generate([i], seed=0, model=MODEL, max_tokens=200, temperature=1.0) for i in range(10)
    ]
    eos_ended = [g for g in outputs if g.tokens[-1] == EOS]
    assert eos_ended and all(g.stop_reason == "stop" for g in eos_ended)
    assert all(
        g.stop_reason == "length" and len(g.tokens) == 200 for g in outputs if g not in eos_ended
    )
    assert all(t in VOCAB for g in outputs for t in g.tokens)


def test_an_adapter_shifts_greedy_output_and_two_adapters_differ():
    base = run(temperature=0).tokens
    one = run(temperature=0, adapter=b"\x01" * 32).tokens
    two = run(temperature=0, adapter=b"\x02" * 32).tokens
    assert len({base, one, two}) == 3


# -- responses over HTTP ------------------------------------------------------------------------------------


def test_raw_token_response_shape_and_usage(api):
    response = api.sample(PROMPT, temperature=0)
    assert response["status"] == "completed" and response["id"].startswith("resp_")
    out = block(response)
    assert len(out["logprobs"]) == len(out["token_ids"]) and out["stop_reason"] in (
        "stop",
        "length",
    )
    assert [lp["token_id"] for lp in out["logprobs"]] == out["token_ids"]
    assert response["usage"] == dict(
        response["usage"],
        input_tokens=len(PROMPT),
        output_tokens=len(out["token_ids"]),
        total_tokens=len(PROMPT) + len(out["token_ids"]),
    )
    assert (
        tuple(out["token_ids"]) == run(temperature=0, max_tokens=16).tokens
    )  # the server runs the same model
    without = api.sample(PROMPT, include=[])
    assert block(without)["logprobs"] is None


def test_text_response_is_readable_ascii(api):
    response = api.ok(
        "POST", "/responses", json={"model": MODEL, "input": "Say hi", "max_output_tokens": 32}
    )
    text = block(response)["text"]
    assert text and all(32 <= ord(c) < 127 or c == "\n" for c in text)
    assert "token_ids" not in block(response)
    assert response["usage"]["input_tokens"] == len("Say hi")


class FakeClock:
    """The emulator's injected clock: time moves only when a test says so."""

    def __init__(self, now=1_700_000_000.0):
        self.now = now

    def __call__(self):
        return self.now

    def advance(self, seconds):
        self.now += seconds


def test_background_status_comes_from_the_clock():
    clock = FakeClock()
    with EmulatorServer(turn_times={"balanced": 40.0}, clock=clock) as server:
        api = Api(server)
        created = api("POST", "/responses", json={"model": MODEL, "input": "x", "background": True})
        assert created.status_code == 202 and created.json()["status"] == "queued"
        assert created.json()["output"] == []
        response_id = created.json()["id"]
        clock.advance(19.9)
        assert api.ok("GET", "/responses/" + response_id)["status"] == "queued"
        clock.advance(0.2)  # half the turn: started
        assert api.ok("GET", "/responses/" + response_id)["status"] == "in_progress"
        clock.advance(19.8)
        assert api.ok("GET", "/responses/" + response_id)["status"] == "in_progress"
        clock.advance(0.2)
        done = api.ok("GET", "/responses/" + response_id)
        assert done["status"] == "completed" and block(done)["text"]
        assert server.stats()["inference_runs"] == 1


def test_windows_balanced_flex_and_lora_rules(api):
    balanced = api.ok(
        "POST",
        "/responses",
        json={
            "model": MODEL,
            "input": "x",
            "background": True,
            "metadata": {"completion_window": "balanced"},
        },
    )
    assert balanced["metadata"]["completion_window"] == "balanced"
    assert_error_body(
        api(
            "POST",
            "/responses",
            json={"model": MODEL, "input": "x", "metadata": {"completion_window": "flex"}},
        ),
        400,
        "flex_requires_background",
    )
    error = assert_error_body(
        api(
            "POST",
            "/responses",
            json={
                "model": MODEL,
                "input": "x",
                "metadata": {"completion_window": "asap", "lora": "any"},
            },
        ),
        400,
    )
    assert "asap" in error["message"]
    assert_error_body(
        api(
            "POST",
            "/responses",
            json={"model": MODEL, "input": "x", "metadata": {"completion_window": "soon"}},
        ),
        400,
    )
    assert_error_body(
        api(
            "POST",
            "/responses",
            json={"model": "Qwen/Qwen3-8B", "input": "x", "metadata": {"lora": "any"}},
        ),
        400,
        "lora_not_supported",
    )
    assert_error_body(
        api(
            "POST",
            "/responses",
            json={
                "model": "sail-emulator/asap-only",
                "input": "x",
                "metadata": {"completion_window": "balanced"},
            },
        ),
        400,
        "unsupported_completion_window",
    )


def post_window(api, window, **fields):
    body = {"model": MODEL, "input": "x", "max_output_tokens": 2}
    if window is not None:
        body["metadata"] = {"completion_window": window}
    body.update(fields)
    return api("POST", "/responses", json=body)


@pytest.mark.parametrize("window", ["priority", "15m"])
def test_the_current_catalogue_refuses_retired_windows_naming_the_ones_that_work(
    api, emulator, window
):
    error = assert_error_body(
        post_window(api, window, background=True), 400, "unsupported_completion_window"
    )
    assert error["param"] == "metadata.completion_window"
    assert all(name in error["message"] for name in ("retired", "asap", "balanced", "flex"))
    assert emulator.stats()["inference_runs"] == 0


def test_the_current_catalogue_asap_balanced_flex_and_the_standard_alias():
    clock = FakeClock()
    turns = {
        "asap": 0.0,
        "balanced": 100.0,
        "flex": 1000.0,
        "priority": 5.0,
    }  # priority: unreachable here
    with EmulatorServer(turn_times=turns, clock=clock) as server:
        api = Api(server)
        assert post_window(api, "asap").json()["status"] == "completed"
        balanced = post_window(api, "balanced", background=True).json()
        standard = post_window(api, "standard", background=True).json()  # the alias: the same tier
        default = post_window(
            api, None, background=True
        ).json()  # a background request's default: balanced
        flex = post_window(api, "flex", background=True).json()
        assert standard["metadata"] == {"completion_window": "standard"}  # echoed as sent
        clock.advance(100)
        statuses = {
            name: api.ok("GET", "/responses/" + r["id"])["status"]
            for name, r in (
                ("balanced", balanced),
                ("standard", standard),
                ("default", default),
                ("flex", flex),
            )
        }
        assert statuses == {
            "balanced": "completed",
            "standard": "completed",
            "default": "completed",
            "flex": "queued",
        }
        error = assert_error_body(
            post_window(api, "asap", background=True), 400, "asap_background_unsupported"
        )
        assert "balanced" in error["message"] and "flex" in error["message"]
        assert_error_body(
            post_window(api, "asap", metadata={"completion_window": "asap", "lora": "x"}),
            400,
            "lora_asap_unsupported",
        )
        assert_error_body(post_window(api, "soon"), 400, "invalid_completion_window")


def test_the_legacy_catalogue_offers_priority_and_standard_for_code_written_against_the_older_docs():
    clock = FakeClock()
    with EmulatorServer(windows="legacy", preset="realistic", clock=clock) as server:
        api = Api(server)
        priority = post_window(api, "priority", background=True).json()
        standard = post_window(api, "standard", background=True).json()
        default = post_window(api, None, background=True).json()  # the older default: priority
        asap = post_window(api, "asap", background=True)  # accepted by the older docs
        assert asap.status_code == 202
        clock.advance(60)  # priority ~1 min, standard ~5 min
        assert [
            api.ok("GET", "/responses/" + r["id"])["status"] for r in (priority, standard, default)
        ] == ["completed", "queued", "completed"]
        clock.advance(240)
        assert api.ok("GET", "/responses/" + standard["id"])["status"] == "completed"
        assert_error_body(
            post_window(api, "15m", background=True), 400, "invalid_completion_window"
        )
        assert_error_body(
            post_window(api, "asap", metadata={"completion_window": "asap", "lora": "x"}),
            400,
            "lora_asap_unsupported",
        )
    with pytest.raises(ValueError, match="windows"):
        EmulatorServer(windows="newest")
    with pytest.raises(ValueError, match="soon"):
        EmulatorServer(turn_times={"soon": 1})


def test_batch_items_default_to_balanced_and_accept_only_balanced_standard_or_flex():
    clock = FakeClock()
    with EmulatorServer(turn_times={"balanced": 10.0, "flex": 50.0}, clock=clock) as server:
        api = Api(server)
        items = [
            {"custom_id": "d", "params": {"model": MODEL, "input": "x"}},
            {
                "custom_id": "s",
                "params": {
                    "model": MODEL,
                    "input": "x",
                    "metadata": {"completion_window": "standard"},
                },
            },
            {
                "custom_id": "f",
                "params": {"model": MODEL, "input": "x", "metadata": {"completion_window": "flex"}},
            },
        ]
        batch = api.ok("POST", "/batches", json={"requests": items})
        clock.advance(10)
        assert api.ok("GET", "/batches/" + batch["id"])["request_status"] == {
            "d": {"status": "COMPLETED"},
            "s": {"status": "COMPLETED"},
            "f": {"status": "QUEUED"},
        }


def test_cancel_queued_then_terminal_unchanged():
    clock = FakeClock()
    with EmulatorServer(turn_times={"flex": 5.0}, clock=clock) as server:
        api = Api(server)
        created = api.ok(
            "POST",
            "/responses",
            json={
                "model": MODEL,
                "input": "x",
                "background": True,
                "metadata": {"completion_window": "flex"},
            },
        )
        assert api.ok("POST", "/responses/{}/cancel".format(created["id"]))["status"] == "cancelled"
        clock.advance(10)  # a cancelled response stays cancelled after its turn would have ended
        assert api.ok("POST", "/responses/{}/cancel".format(created["id"]))["status"] == "cancelled"
        done = api.sample([1])
        assert api.ok("POST", "/responses/{}/cancel".format(done["id"]))["status"] == "completed"
        assert server.stats()["cancellations"] == 1
        assert server.stats()["responses"] == {"cancelled": 1, "completed": 1}


def test_sync_request_longer_than_the_sync_timeout_is_504_and_keeps_running():
    clock = FakeClock()
    with EmulatorServer(turn_times={"balanced": 600.0}, sync_timeout=0.05, clock=clock) as server:
        api = Api(server)
        reply = api(
            "POST",
            "/responses",
            json={"model": MODEL, "input": "x", "metadata": {"completion_window": "balanced"}},
        )
        error = assert_error_body(reply, 504, "sync_timeout")
        response_id = error["message"].split("response ")[1].split()[0]
        assert api.ok("GET", "/responses/" + response_id)["status"] == "queued"
        clock.advance(600)
        assert api.ok("GET", "/responses/" + response_id)["status"] == "completed"


# -- idempotency ---------------------------------------------------------------------------------------------


def test_same_key_same_body_replays_without_running_again(api, emulator):
    body = {"model": MODEL, "input": "x", "background": True}
    first = api.ok("POST", "/responses", json=body, headers={"Idempotency-Key": "k1"})
    # Same body, other formatting and key order: the same request.
    raw = '{ "background": true,  "input": "x", "model": "%s" }' % MODEL  # noqa: UP031
    again = api.ok(
        "POST",
        "/responses",
        data=raw,
        headers={"Idempotency-Key": "k1", "Content-Type": "application/json"},
    )
    assert again["id"] == first["id"]
    assert emulator.stats()["inference_runs"] == 1
    assert emulator.stats()["inference_runs_by_idempotency_key"] == {"k1": 1}
    other = api("POST", "/responses", json=dict(body, input="y"), headers={"Idempotency-Key": "k1"})
    assert_error_body(other, 400, "idempotency_error")
    # Keys are per organization (and API key): another org's k1 is another request.
    theirs = Api(emulator, emulator.add_organization()).ok(
        "POST", "/responses", json=body, headers={"Idempotency-Key": "k1"}
    )
    assert theirs["id"] != first["id"]


def test_a_rejected_request_does_not_consume_the_key(api, emulator):
    bad = api(
        "POST", "/responses", json={"model": MODEL, "input": ""}, headers={"Idempotency-Key": "k2"}
    )
    assert_error_body(bad, 400)
    good = api.ok(
        "POST",
        "/responses",
        json={"model": MODEL, "input": "fine"},
        headers={"Idempotency-Key": "k2"},
    )
    assert good["status"] == "completed" and emulator.stats()["inference_runs"] == 1
    assert_error_body(
        api(
            "POST",
            "/responses",
            json={"model": MODEL, "input": "x"},
            headers={"Idempotency-Key": "k" * 256},
        ),
        400,
    )


def test_lost_reply_then_replay_returns_the_stored_object(api, emulator):
    emulator.faults.add(Fault("lose_reply", method="POST", path="/v1/chat/completions", times=1))
    body = {
        "model": MODEL,
        "messages": [{"role": "user", "content": "hi"}],
        "max_completion_tokens": 8,
    }
    import requests

    with pytest.raises(requests.ConnectionError):
        api("POST", "/chat/completions", json=body, headers={"Idempotency-Key": "c1"})
    replay = api.ok("POST", "/chat/completions", json=body, headers={"Idempotency-Key": "c1"})
    assert replay["object"] == "chat.completion" and emulator.stats()["inference_runs"] == 1
    again = api.ok("POST", "/chat/completions", json=body, headers={"Idempotency-Key": "c1"})
    assert again == replay


def test_messages_use_the_anthropic_key_header(api, emulator):
    body = {
        "model": MODEL,
        "max_tokens": 8,
        "system": [{"type": "text", "text": "be brief"}],
        "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}],
        "stop_sequences": ["e"],
    }
    first = api.ok("POST", "/messages", json=body, headers={"anthropic-idempotency-key": "m1"})
    assert first["type"] == "message" and first["role"] == "assistant"
    assert first["stop_reason"] in ("end_turn", "max_tokens", "stop_sequence")
    assert first["usage"]["output_tokens"] >= 1
    assert (
        api.ok("POST", "/messages", json=body, headers={"anthropic-idempotency-key": "m1"}) == first
    )
    assert emulator.stats()["inference_runs"] == 1


def test_asap_only_model_refuses_idempotency_keys(api):
    body = {"model": "sail-emulator/asap-only", "input": "x"}
    assert_error_body(
        api("POST", "/responses", json=body, headers={"Idempotency-Key": "a"}),
        400,
        "unsupported_asap_only_request",
    )
    assert api.ok("POST", "/responses", json=body)["status"] == "completed"


# -- batches ------------------------------------------------------------------------------------------------


def test_batch_lifecycle(api):
    items = [
        {
            "custom_id": f"q-{i}",
            "params": {"model": MODEL, "input": f"q{i}", "max_output_tokens": 4},
        }
        for i in range(3)
    ]
    batch = api.ok(
        "POST", "/batches", json={"endpoint": "/v1/responses", "label": "t", "requests": items}
    )
    assert batch["request_counts"]["total"] == 3 and batch["label"] == "t"
    deadline = time.monotonic() + 10
    while api.ok("GET", "/batches/" + batch["id"])["request_counts"]["completed"] < 3:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    detail = api.ok("GET", "/batches/" + batch["id"])
    assert detail["request_status"] == {f"q-{i}": {"status": "COMPLETED"} for i in range(3)}
    item = api.ok("GET", "/batches/{}/q-1".format(batch["id"]))
    assert item["status"] == "completed" and item["metadata"] == {} and block(item)["text"]
    assert_error_body(api("GET", "/batches/{}/q-9".format(batch["id"])), 404)
    second = api.ok("POST", "/batches", json={"requests": items[:1]})
    listed = api.ok("GET", "/batches?limit=1")
    assert [b["id"] for b in listed] == [batch["id"]]
    assert [b["id"] for b in api.ok("GET", "/batches?after_id=" + batch["id"])] == [second["id"]]


@pytest.mark.parametrize(
    "requests_, words",
    [
        ([], "1 to 100000"),
        ([{"custom_id": "Bad", "params": {"model": MODEL, "input": "x"}}], "custom_id"),
        ([{"custom_id": "a", "params": {"model": MODEL, "input": "x"}}] * 2, "twice"),
        (
            [
                {
                    "custom_id": "a",
                    "params": {
                        "model": MODEL,
                        "input": "x",
                        "metadata": {"completion_window": "priority"},
                    },
                }
            ],
            "balanced or standard or flex",
        ),
        (
            [
                {
                    "custom_id": "a",
                    "params": {
                        "model": MODEL,
                        "input": "x",
                        "metadata": {"completion_window": "asap"},
                    },
                }
            ],
            "not accepted in a batch",
        ),
        ([{"custom_id": "a", "params": {"model": "nope", "input": "x"}}], "requests[0].params"),
    ],
)
def test_batch_rejections(api, requests_, words):
    assert (
        words
        in assert_error_body(api("POST", "/batches", json={"requests": requests_}), 400)["message"]
    )


# -- scale: a queued response costs only its memory -----------------------------------------------------------


def test_a_queued_response_costs_only_its_record():
    """A per-response memory figure from a few thousand responses; 100k queued cost 100k times that.

    The bound discriminates: a record is ~600 bytes on 3.8-3.13, while one unstarted
    ``threading.Timer`` per response alone costs ~3.5 kB, and keeping the request body or a
    generated output per record would cost more than the bound too.
    """
    import threading

    from sail_lite.emulator.state import Organization, State

    state = State(
        seed=0,
        turn_times={"flex": 3600},
        models=DEFAULT_MODELS,
        organizations={"o": ["k"]},
        validation_time=0.0,
    )
    org = Organization("o", ["k"])
    models = {m.id: m for m in DEFAULT_MODELS}
    params = parse_response_body(
        {
            "model": MODEL,
            "input": PLACEHOLDER,
            "raw_prompt_tokens": [0, 1, 2],
            "background": True,
            "metadata": {"completion_window": "flex"},
        },
        models,
    )
    threads = threading.active_count()
    for i in range(500):  # warm up: first-use allocations are not per-response costs
        state.create_response(org, dataclasses.replace(params, prompt=(i, 1, 2)))
    count = 4000
    tracemalloc.start()
    try:
        before, _ = tracemalloc.get_traced_memory()
        for i in range(count):
            state.create_response(org, dataclasses.replace(params, prompt=(i, 1, 2)))
        after, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert threading.active_count() <= threads  # no thread or timer per response
    assert state.stats()["responses"] == {"queued": count + 500}
    per_response = (after - before) / count
    assert per_response < 1536, f"{per_response:.0f} bytes per queued response"
    state.close()


# -- count_tokens ---------------------------------------------------------------------------------------------


def test_count_tokens_counts_what_messages_bills(api, emulator):
    body = {
        "model": MODEL,
        "system": [{"type": "text", "text": "be brief"}],
        "messages": [
            {"role": "user", "content": "héllo"},
            {"role": "assistant", "content": "hi"},
            {"role": "user", "content": [{"type": "text", "text": "again"}]},
        ],
    }
    counted = api.ok("POST", "/messages/count_tokens", json=body)
    assert counted == {"input_tokens": counted["input_tokens"]} and counted["input_tokens"] > len(
        "héllo"
    )
    billed = api.ok("POST", "/messages", json=dict(body, max_tokens=2))["usage"]["input_tokens"]
    assert counted["input_tokens"] == billed
    assert emulator.stats()["inference_runs"] == 1  # counting runs no inference
    import requests

    url = emulator.base_url + "/messages/count_tokens"
    assert (
        requests.post(url, json=body, headers={"x-api-key": emulator.api_key}, timeout=10).json()
        == counted
    )
    assert_error_body(requests.post(url, json=body, timeout=10), 401, "missing_api_key")
    assert_error_body(
        api("POST", "/messages/count_tokens", json={"model": MODEL, "messages": []}), 400
    )
    assert_error_body(
        api(
            "POST",
            "/messages/count_tokens",
            json={"model": "no/such", "messages": body["messages"]},
        ),
        400,
        "model_not_found",
    )
    assert_error_body(api("GET", "/messages/count_tokens"), 405)
