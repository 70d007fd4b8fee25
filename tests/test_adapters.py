"""The local PEFT pre-flight: table-driven, no server."""

from __future__ import annotations

import io
import json
import os
import struct

import pytest

from sail_lite.adapters import (
    MAX_HEADER_BYTES,
    MAX_RANKS,
    check_adapter_config,
    check_adapter_dir,
    check_tensors,
    make_adapter,
    read_safetensors_header,
    write_safetensors,
)
from sail_lite.errors import AdapterError, InvalidRequestError

KIMI = "moonshotai/Kimi-K2.6"
GOOD = {"peft_type": "LORA", "task_type": "CAUSAL_LM", "r": 8, "base_model_name_or_path": KIMI}


def codes(problems):
    return [p.code for p in problems]


def test_a_made_adapter_passes_and_is_real_safetensors(tmp_path):
    folder = make_adapter(tmp_path / "a", rank=16, num_layers=3, hidden_size=32)
    report = check_adapter_dir(folder, [KIMI])
    assert report.ok and not report.warnings
    report.raise_for_problems()
    assert report.config["r"] == 16 and len(report.tensors) == 3 * 2 * 2
    a = [t for t in report.tensors if t.name.endswith("lora_A.weight")][0]
    assert a.dtype == "F32" and a.shape == (16, 32) and a.end - a.start == 16 * 32 * 4
    with open(os.path.join(folder, "adapter_model.safetensors"), "rb") as handle:
        (length,) = struct.unpack("<Q", handle.read(8))
        assert length % 8 == 0 and "__metadata__" not in json.loads(handle.read(length))


def test_seeds_give_different_weights(tmp_path):
    one = make_adapter(tmp_path / "1", seed=1)
    two = make_adapter(tmp_path / "2", seed=2)
    read = lambda f: open(os.path.join(f, "adapter_model.safetensors"), "rb").read()  # noqa: E731
    assert read(one) != read(two)


@pytest.mark.parametrize(
    "change, code, words",
    [
        ({"peft_type": "IA3"}, "invalid_peft_type", '"LORA"'),
        ({"task_type": "SEQ_CLS"}, "invalid_task_type", "CAUSAL_LM"),
        ({"task_type": None}, "invalid_task_type", "CAUSAL_LM"),
        (
            {"base_model_name_or_path": "meta-llama/Llama-3.1-8B"},
            "base_model_mismatch",
            "meta-llama/Llama-3.1-8B",
        ),
        ({"r": 64}, "rank_exceeds_max", "max rank 32"),
        ({"r": 0}, "invalid_rank", "positive integer"),
        ({"r": "8"}, "invalid_rank", "positive integer"),
        ({"r": True}, "invalid_rank", "positive integer"),
        ({"rank_pattern": {"q_proj": 48}}, "rank_exceeds_max", "rank 48"),
    ],
)
def test_config_rules(change, code, words):
    problems, _warnings = check_adapter_config(dict(GOOD, **change), [KIMI])
    assert codes(problems) == [code] and words in problems[0].message


def test_every_problem_at_once_and_in_the_error():
    problems, _ = check_adapter_config(
        {"peft_type": "X", "task_type": "Y", "r": 99, "base_model_name_or_path": "z"}, [KIMI]
    )
    assert set(codes(problems)) == {
        "invalid_peft_type",
        "invalid_task_type",
        "base_model_mismatch",
        "rank_exceeds_max",
    }


def test_unknown_model_only_warns():
    problems, warnings = check_adapter_config(
        dict(GOOD, base_model_name_or_path="acme/new", r=512), ["acme/new"]
    )
    assert problems == [] and "not known locally" in warnings[0]
    assert MAX_RANKS[KIMI] == 32 and "acme/new" not in MAX_RANKS


def test_missing_folder_names_both_files(tmp_path):
    report = check_adapter_dir(tmp_path / "nothing", [KIMI])
    assert codes(report.problems) == ["missing_file", "missing_file"]
    with pytest.raises(AdapterError) as info:
        report.raise_for_problems()
    assert "adapter_config.json" in str(info.value) and "adapter_model.safetensors" in str(
        info.value
    )
    assert isinstance(info.value, InvalidRequestError) and info.value.code == "missing_file"


def test_bad_config_json(tmp_path):
    folder = make_adapter(tmp_path / "a")
    for content in (b"{nope", b"[1, 2]", b"\xff\xfe", b'{"a":' * 50000 + b"1" + b"}" * 50000):
        with open(os.path.join(folder, "adapter_config.json"), "wb") as handle:
            handle.write(content)
        assert codes(check_adapter_dir(folder, [KIMI]).problems) == ["invalid_config_json"]


def header_file(length: int, header: bytes, data: bytes = b"") -> io.BytesIO:
    return io.BytesIO(struct.pack("<Q", length) + header + data)


@pytest.mark.parametrize(
    "source, code",
    [
        (io.BytesIO(b"1234"), "invalid_safetensors"),
        (header_file(MAX_HEADER_BYTES + 1, b"{}"), "safetensors_header_too_large"),
        (header_file(2**63, b"{}"), "safetensors_header_too_large"),
        (header_file(100, b"{}"), "invalid_safetensors"),
        (header_file(2, b"[]"), "invalid_safetensors"),
        (header_file(4, b"\xff\xfe{}"), "invalid_safetensors"),
        (header_file(3, b"{x}"), "invalid_safetensors"),
        (
            header_file(200000, b"[" * 100000 + b"]" * 100000),
            "invalid_safetensors",
        ),  # hostile nesting
    ],
)
def test_unreadable_headers(source, code):
    with pytest.raises(AdapterError) as info:
        read_safetensors_header(source)
    assert codes(info.value.problems) == [code]


@pytest.mark.parametrize(
    "entry, words",
    [
        ({"dtype": "F99", "shape": [1], "data_offsets": [0, 4]}, "unknown dtype"),
        ({"dtype": "F32", "shape": [-1], "data_offsets": [0, 4]}, "invalid shape"),
        ({"dtype": "F32", "shape": [1], "data_offsets": [0, 400]}, "outside"),
        ({"dtype": "F32", "shape": [2], "data_offsets": [0, 4]}, "needs 8"),
        ("nope", "not an object"),
    ],
)
def test_tensor_entries_are_checked(entry, words):
    header = json.dumps({"t": entry}).encode()
    with pytest.raises(AdapterError, match=words):
        read_safetensors_header(header_file(len(header), header, b"\0" * 4))


def test_tensor_shapes_against_r(tmp_path):
    path = tmp_path / "w.safetensors"
    write_safetensors(
        path,
        {
            "m.0.q_proj.lora_A.weight": ("F32", (4, 2), b"\0" * 32),
            "m.0.q_proj.lora_B.weight": ("F32", (2, 8), b"\0" * 64),
            "m.1.q_proj.lora_A.weight": ("F32", (4, 2), b"\0" * 32),
            "m.0.embed.weight": ("F16", (3,), b"\0" * 6),
        },
    )
    tensors = read_safetensors_header(path)
    problems = check_tensors(tensors, {"r": 8})
    assert codes(problems) == ["tensor_shape_mismatch"]
    assert "(and 1 more)" in problems[0].message and "r is 8" in problems[0].message
    assert check_tensors(tensors, {"r": 8, "rank_pattern": {"m.0": 4, "m.1": 4}}) == []
    assert codes(check_tensors([t for t in tensors if "embed" in t.name], {"r": 8})) == [
        "no_lora_tensors"
    ]
