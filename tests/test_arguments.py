"""Bad arguments are caught before any I/O, with messages that say what to change."""

from __future__ import annotations

import pytest

from sail_lite import Client, InvalidRequestError, validate_sampling_options
from sail_lite.errors import ConfigurationError
from sail_lite.resources._common import build_metadata, check_prompt_tokens, normalize_stop
from sail_lite.resources.tokens import RAW_PROMPT_PLACEHOLDER

URL = "https://example.invalid/sig.tar?expires=1&sig=secret"
GOOD = dict(model="moonshotai/Kimi-K2.6", max_tokens=8)


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"model": ""}, "model must be a non-empty"),
        ({"model": None}, "model must be a non-empty"),
        ({"max_tokens": 0}, "max_tokens must be an int >= 1"),
        ({"max_tokens": -3}, "max_tokens must be an int >= 1"),
        ({"max_tokens": 2.5}, "max_tokens must be an int >= 1"),
        ({"max_tokens": True}, "max_tokens must be an int >= 1"),
        ({"temperature": 2.5}, "temperature must be a number from 0.0 to 2.0"),
        ({"top_p": -0.1}, "top_p must be a number from 0.0 to 1.0"),
        ({"completion_window": "fast"}, "completion_window 'fast' is not one of"),
        ({"lora": "a", "tinker_lora_signed_url": URL, "adapter_config": {}}, "not both"),
        ({"tinker_lora_signed_url": URL}, "needs adapter_config"),
        ({"tinker_lora_signed_url": "ftp://x", "adapter_config": {}}, "http"),
        (
            {"tinker_lora_signed_url": URL, "adapter_config": "{not json"},
            "adapter_config is not valid JSON",
        ),
        ({"tinker_lora_signed_url": URL, "adapter_config": "[1, 2]"}, "must be a JSON object"),
        ({"lora": "funny", "completion_window": "asap"}, "cannot use the asap"),
        (
            {
                "tinker_lora_signed_url": URL,
                "adapter_config": {"r": 8},
                "completion_window": "asap",
            },
            "cannot use the asap",
        ),
    ],
)
def test_sampling_options_are_checked(overrides, message):
    with pytest.raises(InvalidRequestError, match=message):
        validate_sampling_options(**dict(GOOD, **overrides))


def test_sampling_body_follows_the_raw_token_wire_format():
    options = validate_sampling_options(
        model="m",
        max_tokens=16,
        temperature=0.5,
        tinker_lora_signed_url=URL,
        adapter_config='{"r": 8, "peft_type": "LORA"}',
        tinker_lora_name="step-7",
        metadata={"team": {"a": 1}},
    )
    body = options.body([5, 6, 7], stop=["\n"], max_tokens=64)
    assert body == {
        "model": "m",
        "input": RAW_PROMPT_PLACEHOLDER,
        "raw_prompt_tokens": [5, 6, 7],
        "max_output_tokens": 16,  # the smaller of 16 and 64
        "temperature": 0.5,
        "top_p": 1.0,
        "background": True,
        "stop": ["\n"],
        "include": ["message.output_text.logprobs"],
        "metadata": {
            "completion_window": "balanced",
            "lora": URL,
            "tinker_adapter_config": '{"peft_type":"LORA","r":8}',
            "tinker_lora_name": "step-7",
            "team": '{"a":1}',
        },
    }
    assert options.body([1], stop=None, max_tokens=4)["max_output_tokens"] == 4
    assert "include" not in validate_sampling_options(model="m", max_tokens=1, logprobs=False).body(
        [1], None
    )


def test_sampling_options_repr_hides_the_signed_query():
    options = validate_sampling_options(
        model="m", max_tokens=1, tinker_lora_signed_url=URL, adapter_config={}
    )
    assert "secret" not in repr(options) and "sig.tar?<redacted>" in repr(options)


@pytest.mark.parametrize(
    "tokens, message",
    [
        ([], "the prompt is empty"),
        ("abc", "sequence of token ids"),
        (b"abc", "sequence of token ids"),
        (5, "sequence of token ids"),
        ([1, -2], "position 1 is -2"),
        ([1, 2**31], "position 1"),
        ([1, 2.0], "position 1 is 2.0"),
        ([True], "position 0 is True"),
        (["1"], "position 0 is '1'"),
    ],
)
def test_prompt_tokens_are_checked(tokens, message):
    with pytest.raises(InvalidRequestError, match=message):
        check_prompt_tokens(tokens)


def test_prompt_tokens_accept_any_iterable_of_ints():
    assert check_prompt_tokens(range(3)) == [0, 1, 2]
    assert check_prompt_tokens((2**31 - 1,)) == [2**31 - 1]


@pytest.mark.parametrize(
    "stop, expected",
    [
        (None, None),
        ("\n", ["\n"]),
        (["a", "b"], ["a", "b"]),
        ([1, 2], [1, 2]),
        ((3,), [3]),
        ([], None),
        (5, [5]),  # a bare int is a one-token stop, as the completer takes it (issue 21)
    ],
)
def test_stop_normalization(stop, expected):
    assert normalize_stop(stop) == expected


@pytest.mark.parametrize("stop", ["", ["a", 1], [""], [-1], [True], {"a": 1}, -5, True, 2**31])
def test_stop_rejects_mixtures_and_junk(stop):
    with pytest.raises(InvalidRequestError):
        normalize_stop(stop)


@pytest.mark.parametrize(
    "kwargs, expected",
    [
        ({"metadata": None}, None),
        (
            {"metadata": {"a": "b", "n": 3, "f": True, "d": {"y": 1, "x": [2]}, "skip": None}},
            {"a": "b", "n": "3", "f": "true", "d": '{"x":[2],"y":1}'},
        ),
        (
            {
                "metadata": {"lora": "old"},
                "lora": "new",
                "completion_window": "flex",
                "background": True,
            },
            {"lora": "new", "completion_window": "flex"},
        ),
    ],
)
def test_build_metadata(kwargs, expected):
    metadata = kwargs.pop("metadata")
    assert build_metadata(metadata, **kwargs) == expected


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"metadata": {"completion_window": "asap", "lora": "x"}}, "asap"),
        ({"metadata": None, "lora": "x", "completion_window": "asap"}, "asap"),
        (
            {"metadata": None, "completion_window": "flex", "background": False},
            "flex completion window needs background",
        ),
        ({"metadata": None, "completion_window": "soon"}, "not one of"),
        ({"metadata": {1: "a"}}, "keys must be strings"),
        ({"metadata": {"a": object()}}, "must be a string"),
        ({"metadata": ["a"]}, "must be a mapping"),
        ({"metadata": None, "lora": ""}, "lora must be"),
    ],
)
def test_build_metadata_rejects(kwargs, message):
    metadata = kwargs.pop("metadata")
    with pytest.raises(InvalidRequestError, match=message):
        build_metadata(metadata, **kwargs)


def test_missing_api_key_says_how_to_provide_it():
    with pytest.raises(ConfigurationError, match="SAIL_API_KEY"):
        Client(environ={})


def test_environment_is_read_once_in_the_constructor():
    env = {"SAIL_API_KEY": "sk_env", "SAIL_BASE_URL": "http://127.0.0.1:9/v1/"}
    client = Client(environ=env)
    env["SAIL_BASE_URL"] = "http://elsewhere/v1"
    assert client.base_url == "http://127.0.0.1:9/v1"
    assert (
        Client("explicit", base_url="https://x.invalid/v1", environ=env).base_url
        == "https://x.invalid/v1"
    )


@pytest.mark.parametrize("url", ["ftp://x/v1", "api.sail.com/v1", "https://x/v1?key=secret"])
def test_bad_base_url(url):
    with pytest.raises(ConfigurationError) as info:
        Client("k", base_url=url, environ={})
    assert "secret" not in str(info.value)


@pytest.mark.parametrize("max_workers", [0, -1, 1.5, None])
def test_bad_max_workers(max_workers):
    with pytest.raises(ConfigurationError):
        Client("k", max_workers=max_workers, environ={})


def test_repr_and_pickle_never_show_the_key_but_keep_it():
    import pickle

    client = Client("sk_very_secret", base_url="http://127.0.0.1:9/v1", environ={})
    assert "sk_very_secret" not in repr(client)
    clone = pickle.loads(pickle.dumps(client))
    assert clone.base_url == client.base_url and clone._api_key == "sk_very_secret"
    assert clone.retry == client.retry and clone.timeout == client.timeout


@pytest.mark.parametrize(
    "environ, expected",
    [
        ({"SAIL_API_URL": "http://sail.local:8000"}, "http://sail.local:8000/v1"),
        ({"SAIL_API_URL": "http://sail.local:8000/"}, "http://sail.local:8000/v1"),
        ({"SAIL_API_URL": "http://sail.local:8000/v1"}, "http://sail.local:8000/v1"),
        (
            {"SAIL_API_URL": "http://sdk.local", "SAIL_BASE_URL": "http://mine.local/v1"},
            "http://mine.local/v1",
        ),
        ({}, "https://api.sailresearch.com/v1"),
    ],
)
def test_the_official_sdks_sail_api_url_is_honoured_after_sail_base_url(environ, expected):
    from sail_lite import Client

    assert Client("k", environ=environ).base_url == expected
