"""Local checks of a PEFT LoRA adapter: the rules of wire.md, before a byte is uploaded.

An adapter is the two files PEFT exports, ``adapter_config.json`` and
``adapter_model.safetensors``. :func:`check_adapter_dir` reads the config
and only the *header* of the safetensors file (never the weights, which may
be 100 GiB), applies every rule, and returns an :class:`AdapterReport` that
lists every problem at once, each with a stable ``code`` and a message that
says what to fix. The emulator's server-side validation runs the same rules
on uploaded files, so a ``code`` here is the ``result_code`` there.

Also here, for tests, demos and the emulator: :func:`write_safetensors` and
:func:`make_adapter`, which write small but real PEFT-format adapters with
nothing but the standard library.

Problem codes: ``missing_file``, ``invalid_config_json``,
``invalid_peft_type``, ``invalid_task_type``, ``base_model_mismatch``,
``invalid_rank``, ``rank_exceeds_max``, ``invalid_safetensors``,
``safetensors_header_too_large``, ``tensor_shape_mismatch``,
``no_lora_tensors``.
"""

from __future__ import annotations

import json
import os
import random
import struct
from dataclasses import dataclass, field
from typing import Any, BinaryIO, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

from .errors import AdapterError

__all__ = [
    "AdapterProblem",
    "TensorInfo",
    "AdapterReport",
    "MAX_RANKS",
    "MAX_HEADER_BYTES",
    "read_safetensors_header",
    "load_adapter_config",
    "check_adapter_config",
    "check_tensors",
    "check_adapter_files",
    "check_adapter_dir",
    "write_safetensors",
    "make_adapter",
]

#: Published max LoRA rank per base model (the Sail LoRA page). A model not
#: listed here is allowed with a warning: the server has the last word.
MAX_RANKS: Mapping[str, int] = {"moonshotai/Kimi-K2.6": 32}

#: The safetensors header is JSON of a few KiB per thousand tensors; a larger
#: length prefix means a corrupt or hostile file, not a big adapter.
MAX_HEADER_BYTES = 100 * 1024 * 1024

CONFIG_NAME = "adapter_config.json"
WEIGHTS_NAME = "adapter_model.safetensors"

_DTYPE_BYTES = {
    "BOOL": 1,
    "U8": 1,
    "I8": 1,
    "F8_E4M3": 1,
    "F8_E5M2": 1,
    "I16": 2,
    "U16": 2,
    "F16": 2,
    "BF16": 2,
    "I32": 4,
    "U32": 4,
    "F32": 4,
    "I64": 8,
    "U64": 8,
    "F64": 8,
}

PathLike = Union[str, "os.PathLike[str]"]


@dataclass(frozen=True)
class AdapterProblem:
    """One thing wrong with an adapter: a stable ``code`` and what to fix."""

    code: str
    message: str

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"


@dataclass(frozen=True)
class TensorInfo:
    """One entry of a safetensors header."""

    name: str
    dtype: str
    shape: Tuple[int, ...]
    start: int
    end: int


@dataclass(frozen=True)
class AdapterReport:
    """The outcome of a pre-flight check: every problem and warning at once."""

    problems: Tuple[AdapterProblem, ...] = ()
    warnings: Tuple[str, ...] = ()
    config: Optional[Mapping[str, Any]] = field(default=None, repr=False)
    tensors: Tuple[TensorInfo, ...] = field(default=(), repr=False)

    @property
    def ok(self) -> bool:
        return not self.problems

    def raise_for_problems(self) -> None:
        """Raise :class:`AdapterError` listing every problem, if there is any."""
        if self.problems:
            raise _adapter_error(self.problems)


def _adapter_error(problems: Sequence[AdapterProblem]) -> AdapterError:
    lines = "; ".join(p.message for p in problems)
    noun = "problem" if len(problems) == 1 else "problems"
    return AdapterError(
        f"adapter check failed ({len(problems)} {noun}): {lines}", problems=problems
    )


def _fail(code: str, message: str) -> AdapterError:
    return _adapter_error([AdapterProblem(code, message)])


def read_safetensors_header(
    source: Union[PathLike, BinaryIO], *, max_header_bytes: int = MAX_HEADER_BYTES
) -> List[TensorInfo]:
    """Parse a safetensors header (8-byte little-endian length, then JSON).

    Reads only the header, bounded by ``max_header_bytes``; checks that every
    tensor's dtype is known and its byte range matches its shape and lies in
    the file. Raises :class:`AdapterError` (code ``invalid_safetensors`` or
    ``safetensors_header_too_large``) on anything else.
    """
    if isinstance(source, (str, os.PathLike)):
        with open(source, "rb") as handle:
            return read_safetensors_header(handle, max_header_bytes=max_header_bytes)
    start = source.tell()
    file_size = source.seek(0, os.SEEK_END) - start
    source.seek(start)
    prefix = source.read(8)
    if len(prefix) < 8:
        raise _fail(
            "invalid_safetensors",
            f"the weights file is {file_size} bytes: too short for a safetensors header",
        )
    (length,) = struct.unpack("<Q", prefix)
    if length > max_header_bytes:
        raise _fail(
            "safetensors_header_too_large",
            f"the safetensors header claims {length} bytes (the limit is {max_header_bytes}): "
            "the file is corrupt or not safetensors",
        )
    if 8 + length > file_size:
        raise _fail(
            "invalid_safetensors",
            f"the safetensors header claims {length} bytes but the file has only {file_size - 8}",
        )
    try:
        header = json.loads(source.read(length).decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise _fail(
            "invalid_safetensors", "the safetensors header is not valid JSON (or nested too deeply)"
        ) from None
    if not isinstance(header, dict):
        raise _fail(
            "invalid_safetensors", "the safetensors header must be a JSON object of tensors"
        )
    data_size = file_size - 8 - length
    tensors = []
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        tensors.append(_tensor_info(name, entry, data_size))
    return tensors


def _tensor_info(name: str, entry: Any, data_size: int) -> TensorInfo:
    bad = f"tensor {name!r} in the safetensors header "
    if not isinstance(entry, dict):
        raise _fail(
            "invalid_safetensors", bad + "is not an object with dtype, shape and data_offsets"
        )
    dtype, shape, offsets = entry.get("dtype"), entry.get("shape"), entry.get("data_offsets")
    if dtype not in _DTYPE_BYTES:
        raise _fail("invalid_safetensors", bad + f"has unknown dtype {dtype!r}")
    if not isinstance(shape, list) or not all(_is_count(d) for d in shape):
        raise _fail("invalid_safetensors", bad + f"has an invalid shape {shape!r}")
    if not (
        isinstance(offsets, list)
        and len(offsets) == 2
        and all(_is_count(o) for o in offsets)
        and offsets[0] <= offsets[1] <= data_size
    ):
        raise _fail(
            "invalid_safetensors",
            bad + f"has data_offsets {offsets!r} outside the {data_size} data bytes",
        )
    count = 1
    for dim in shape:
        count *= dim
    if offsets[1] - offsets[0] != count * _DTYPE_BYTES[dtype]:
        raise _fail(
            "invalid_safetensors",
            bad
            + f"holds {offsets[1] - offsets[0]} bytes, but {dtype} {shape} needs {count * _DTYPE_BYTES[dtype]}",
        )
    return TensorInfo(name, dtype, tuple(shape), offsets[0], offsets[1])


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def load_adapter_config(path: PathLike) -> Dict[str, Any]:
    """Read ``adapter_config.json``; :class:`AdapterError` if missing or not a JSON object."""
    try:
        with open(path, "rb") as handle:
            raw = handle.read(MAX_HEADER_BYTES + 1)
    except FileNotFoundError:
        raise _fail(
            "missing_file",
            f"{os.fspath(path)} is missing: a PEFT adapter folder holds {CONFIG_NAME} and {WEIGHTS_NAME}",
        ) from None
    except OSError as exc:
        raise _fail("missing_file", f"cannot read {os.fspath(path)}: {exc.strerror}") from None
    try:
        config = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        reason = (
            "nested too deeply"
            if isinstance(exc, RecursionError)
            else getattr(exc, "msg", "not UTF-8")
        )
        raise _fail(
            "invalid_config_json", f"adapter_config.json is not valid JSON ({reason})"
        ) from None
    if not isinstance(config, dict):
        raise _fail("invalid_config_json", "adapter_config.json must hold a JSON object")
    return config


def _ranks(config: Mapping[str, Any]) -> List[Any]:
    """``r`` plus any per-module ranks of ``rank_pattern``."""
    pattern = config.get("rank_pattern")
    extra = list(pattern.values()) if isinstance(pattern, dict) else []
    return [config.get("r")] + extra


def check_adapter_config(
    config: Mapping[str, Any], models: Sequence[str], *, max_ranks: Mapping[str, int] = MAX_RANKS
) -> Tuple[List[AdapterProblem], List[str]]:
    """Apply wire.md's config rules for serving on ``models``: ``(problems, warnings)``.

    ``max_ranks`` maps model ids to their max LoRA rank (default: the
    published ones); a model missing from it only warns.
    """
    problems: List[AdapterProblem] = []
    warnings: List[str] = []
    peft_type = config.get("peft_type")
    if peft_type != "LORA":
        problems.append(
            AdapterProblem("invalid_peft_type", f'peft_type is {peft_type!r}; it must be "LORA"')
        )
    task_type = config.get("task_type")
    if task_type != "CAUSAL_LM":
        problems.append(
            AdapterProblem(
                "invalid_task_type", f'task_type is {task_type!r}; it must be "CAUSAL_LM"'
            )
        )
    base = config.get("base_model_name_or_path")
    for model in models:
        if base != model:
            problems.append(
                AdapterProblem(
                    "base_model_mismatch",
                    f"base_model_name_or_path is {base!r} but the LoRA is registered for {model!r}: train on that base model "
                    f"or register it for {base!r}",
                )
            )
    ranks = _ranks(config)
    if not all(isinstance(r, int) and not isinstance(r, bool) and r >= 1 for r in ranks):
        problems.append(
            AdapterProblem(
                "invalid_rank", "r must be a positive integer (got {!r})".format(config.get("r"))
            )
        )
        return problems, warnings
    for model in models:
        limit = max_ranks.get(model)
        if limit is None:
            warnings.append(
                f"the max rank of {model!r} is not known locally; the server will check r={max(ranks)}"
            )
        elif max(ranks) > limit:
            problems.append(
                AdapterProblem(
                    "rank_exceeds_max",
                    f"rank {max(ranks)} exceeds {model}'s max rank {limit}: retrain with r <= {limit}",
                )
            )
    return problems, warnings


def check_tensors(tensors: Iterable[TensorInfo], config: Mapping[str, Any]) -> List[AdapterProblem]:
    """LoRA tensors must exist and agree with the config's rank(s).

    PEFT stores ``lora_A`` as ``[r, in_features]`` and ``lora_B`` as
    ``[out_features, r]``.
    """
    ranks = {r for r in _ranks(config) if isinstance(r, int)}
    seen = 0
    mismatched: List[TensorInfo] = []
    for tensor in tensors:
        if ".lora_A" in tensor.name:
            axis = 0
        elif ".lora_B" in tensor.name:
            axis = 1
        else:
            continue
        seen += 1
        if len(tensor.shape) != 2 or (ranks and tensor.shape[axis] not in ranks):
            mismatched.append(tensor)
    if not seen:
        return [
            AdapterProblem(
                "no_lora_tensors",
                "the weights file holds no lora_A/lora_B tensors: is it a PEFT LoRA export?",
            )
        ]
    if not mismatched:
        return []
    # One problem for the lot: an adapter has thousands of tensors, and one cause.
    first = mismatched[0]
    more = f" (and {len(mismatched) - 1} more)" if len(mismatched) > 1 else ""
    return [
        AdapterProblem(
            "tensor_shape_mismatch",
            "tensor {} has shape {}{} but r is {}: the weights do not match "
            "adapter_config.json".format(first.name, list(first.shape), more, config.get("r")),
        )
    ]


def check_adapter_files(
    config_path: PathLike,
    weights_path: PathLike,
    models: Sequence[str],
    *,
    max_ranks: Mapping[str, int] = MAX_RANKS,
) -> AdapterReport:
    """Check a config file and a weights file (wherever they are) for ``models``."""
    problems: List[AdapterProblem] = []
    warnings: List[str] = []
    config: Optional[Dict[str, Any]] = None
    tensors: List[TensorInfo] = []
    try:
        config = load_adapter_config(config_path)
    except AdapterError as exc:
        problems.extend(exc.problems)
    try:
        tensors = read_safetensors_header(weights_path)
    except FileNotFoundError:
        problems.append(
            AdapterProblem(
                "missing_file",
                f"{os.fspath(weights_path)} is missing: a PEFT adapter folder holds {CONFIG_NAME} and {WEIGHTS_NAME}",
            )
        )
    except OSError as exc:
        problems.append(
            AdapterProblem("missing_file", f"cannot read {os.fspath(weights_path)}: {exc.strerror}")
        )
    except AdapterError as exc:
        problems.extend(exc.problems)
    if config is not None:
        config_problems, warnings = check_adapter_config(config, models, max_ranks=max_ranks)
        problems.extend(config_problems)
        if tensors:
            problems.extend(check_tensors(tensors, config))
        elif not problems:
            problems.extend(check_tensors((), config))
    return AdapterReport(tuple(problems), tuple(warnings), config, tuple(tensors))


def check_adapter_dir(
    adapter_dir: PathLike, models: Sequence[str], *, max_ranks: Mapping[str, int] = MAX_RANKS
) -> AdapterReport:
    """Pre-flight a PEFT folder for serving on ``models``; see the module docstring."""
    folder = os.fspath(adapter_dir)
    return check_adapter_files(
        os.path.join(folder, CONFIG_NAME),
        os.path.join(folder, WEIGHTS_NAME),
        models,
        max_ranks=max_ranks,
    )


def write_safetensors(
    path: PathLike, tensors: Mapping[str, Tuple[str, Sequence[int], bytes]]
) -> None:
    """Write ``{name: (dtype, shape, raw little-endian bytes)}`` as a safetensors file."""
    header: Dict[str, Any] = {}
    offset = 0
    for name, (dtype, shape, data) in tensors.items():
        header[name] = {
            "dtype": dtype,
            "shape": list(shape),
            "data_offsets": [offset, offset + len(data)],
        }
        offset += len(data)
    encoded = json.dumps(header, separators=(",", ":")).encode("utf-8")
    encoded += b" " * (-len(encoded) % 8)  # the format pads the header to 8 bytes
    with open(path, "wb") as handle:
        handle.write(struct.pack("<Q", len(encoded)))
        handle.write(encoded)
        for _dtype, _shape, data in tensors.values():
            handle.write(data)


def make_adapter(
    directory: PathLike,
    *,
    base_model: str = "moonshotai/Kimi-K2.6",
    rank: int = 8,
    target_modules: Sequence[str] = ("q_proj", "v_proj"),
    num_layers: int = 2,
    hidden_size: int = 64,
    seed: int = 0,
    task_type: str = "CAUSAL_LM",
    peft_type: str = "LORA",
    lora_alpha: int = 16,
    extra_config: Optional[Mapping[str, Any]] = None,
) -> str:
    """Write a small, real PEFT LoRA folder (config + float32 safetensors); return its path.

    The weights are pseudo-random from ``seed``, so two seeds give two
    different adapters. Arguments may break the rules on purpose (a rank of
    64, a ``SEQ_CLS`` task) to exercise the checks.
    """
    folder = os.fspath(directory)
    os.makedirs(folder, exist_ok=True)
    config: Dict[str, Any] = {
        "base_model_name_or_path": base_model,
        "bias": "none",
        "lora_alpha": lora_alpha,
        "lora_dropout": 0.0,
        "peft_type": peft_type,
        "r": rank,
        "target_modules": list(target_modules),
        "task_type": task_type,
    }
    config.update(extra_config or {})
    with open(os.path.join(folder, CONFIG_NAME), "w", encoding="utf-8") as handle:
        json.dump(config, handle, indent=2, sort_keys=True)
    rng = random.Random(seed)

    def weights(
        count: int,
    ) -> bytes:  # uniform in +-0.035 (PEFT starts lora_A uniform too); rng.random is cheap
        uniform = rng.random
        return struct.pack(f"<{count}f", *[0.07 * (uniform() - 0.5) for _ in range(count)])

    tensors: Dict[str, Tuple[str, Sequence[int], bytes]] = {}
    for layer in range(num_layers):
        for module in target_modules:
            prefix = f"base_model.model.model.layers.{layer}.self_attn.{module}"
            tensors[prefix + ".lora_A.weight"] = (
                "F32",
                (rank, hidden_size),
                weights(rank * hidden_size),
            )
            tensors[prefix + ".lora_B.weight"] = (
                "F32",
                (hidden_size, rank),
                weights(rank * hidden_size),
            )
    write_safetensors(os.path.join(folder, WEIGHTS_NAME), tensors)
    return folder
