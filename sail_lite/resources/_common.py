"""Request-building rules shared by the resources: metadata, windows, LoRAs.

Everything here checks arguments before any I/O and raises
:class:`~sail_lite.errors.InvalidRequestError` with a message that says
what to change.
"""
from __future__ import annotations

import json
from typing import Any, Dict, List, Mapping, Optional, Union

from ..errors import InvalidRequestError

__all__ = [
    "COMPLETION_WINDOWS",
    "RAW_PROMPT_PLACEHOLDER",
    "MAX_PROMPT_TOKENS",
    "build_metadata",
    "check_prompt_tokens",
    "compact_json",
    "normalize_stop",
    "number_in",
    "positive_int",
]

COMPLETION_WINDOWS = ("asap", "priority", "standard", "balanced", "flex")
RAW_PROMPT_PLACEHOLDER = "<raw token prompt; ignored when raw_prompt_tokens is set>"
MAX_PROMPT_TOKENS = 2000000
_MAX_TOKEN_ID = 2**31 - 1


def compact_json(value: Any) -> str:
    """Deterministic compact JSON: sorted keys, no spaces."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def build_metadata(
    metadata: Optional[Mapping[str, Any]],
    *,
    lora: Optional[str] = None,
    completion_window: Optional[str] = None,
    background: Optional[bool] = None,
) -> Optional[Dict[str, str]]:
    """The wire ``metadata`` object: string values only, LoRA and window rules applied.

    A dict or list value is JSON-encoded (wire.md: metadata values are
    strings); numbers and booleans are stringified; ``None`` values are
    dropped. ``lora`` and ``completion_window`` land in ``metadata`` and win
    over the same keys there. ``background=False`` with ``flex`` is refused
    (flex is background only), and so is a LoRA with ``asap``.
    """
    if metadata is not None and not isinstance(metadata, Mapping):
        raise InvalidRequestError("metadata must be a mapping of str to str, got {}".format(type(metadata).__name__))
    result: Dict[str, str] = {}
    for key, value in (metadata or {}).items():
        if not isinstance(key, str):
            raise InvalidRequestError("metadata keys must be strings, got {!r}".format(key))
        if value is None:
            continue
        if isinstance(value, str):
            result[key] = value
        elif isinstance(value, (Mapping, list, tuple)):
            result[key] = compact_json(value)
        elif isinstance(value, bool):
            result[key] = "true" if value else "false"
        elif isinstance(value, (int, float)):
            result[key] = str(value)
        else:
            raise InvalidRequestError(
                "metadata[{!r}] must be a string (or JSON-encodable), got {}".format(key, type(value).__name__)
            )
    if lora is not None:
        if not isinstance(lora, str) or not lora.strip():
            raise InvalidRequestError("lora must be a LoRA name or id (a non-empty string), got {!r}".format(lora))
        result["lora"] = lora
    if completion_window is not None:
        result["completion_window"] = completion_window
    window = result.get("completion_window")
    if window is not None and window not in COMPLETION_WINDOWS:
        raise InvalidRequestError(
            "completion_window {!r} is not one of {}".format(window, ", ".join(COMPLETION_WINDOWS))
        )
    if window == "asap" and result.get("lora"):
        raise InvalidRequestError(
            "LoRA requests cannot use the asap completion window: use priority, standard or flex"
        )
    if window == "flex" and background is False:
        raise InvalidRequestError("the flex completion window needs background=True")
    return result or None


def positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidRequestError("{} must be an int >= 1, got {!r}".format(name, value))
    return value


def positive_seconds(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        raise InvalidRequestError("{} must be a number of seconds > 0, got {!r}".format(name, value))
    return float(value)


def number_in(name: str, value: Any, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
        raise InvalidRequestError("{} must be a number from {} to {}, got {!r}".format(name, low, high, value))
    return float(value)


def check_prompt_tokens(tokens: Any) -> List[int]:
    """A raw-token prompt as a list: 1..2,000,000 ints, each 0..2^31-1."""
    if isinstance(tokens, (str, bytes)) or not hasattr(tokens, "__iter__"):
        raise InvalidRequestError("the prompt must be a sequence of token ids (ints), got {}".format(type(tokens).__name__))
    result = list(tokens)
    if not result:
        raise InvalidRequestError("the prompt is empty: pass at least one token id")
    if len(result) > MAX_PROMPT_TOKENS:
        raise InvalidRequestError(
            "the prompt has {} tokens; at most {} are accepted".format(len(result), MAX_PROMPT_TOKENS)
        )
    for position, token in enumerate(result):
        if isinstance(token, bool) or not isinstance(token, int) or not 0 <= token <= _MAX_TOKEN_ID:
            raise InvalidRequestError(
                "token id at position {} is {!r}: every token id must be an int from 0 to {}".format(
                    position, token, _MAX_TOKEN_ID
                )
            )
    return result


def normalize_stop(stop: Any) -> Optional[List[Union[str, int]]]:
    """``stop`` as the wire list: a string, a list of strings, or a list of token ids."""
    if stop is None:
        return None
    if isinstance(stop, str):
        if not stop:
            raise InvalidRequestError("a stop string must not be empty")
        return [stop]
    if isinstance(stop, (bytes, Mapping)) or not hasattr(stop, "__iter__"):
        raise InvalidRequestError("stop must be a string, a list of strings or a list of token ids")
    items = list(stop)
    if not items:
        return None
    if all(isinstance(item, str) and item for item in items):
        return items
    if all(isinstance(item, int) and not isinstance(item, bool) and 0 <= item <= _MAX_TOKEN_ID for item in items):
        return items
    raise InvalidRequestError(
        "stop must be a non-empty string, a list of non-empty strings, or a list of token ids (ints "
        "0..2^31-1), not a mix; got {!r}".format(items[:8])
    )
