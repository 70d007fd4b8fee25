"""Request-building rules shared by the resources: windows, metadata, prompts, stops, messages.

Everything here checks arguments before any I/O and raises
:class:`~sail_lite.errors.InvalidRequestError` with a message that says
what to change.
"""

from __future__ import annotations

import math
import sys
import warnings
from typing import Any, Dict, List, Optional, Sequence, Union

from .._checks import Mapping, encode_json, model_id, number_in, positive_int, shown
from ..errors import InvalidRequestError, MalformedResponseError

__all__ = [
    "COMPLETION_WINDOWS",
    "DEFAULT_WINDOW",
    "RETIRED_WINDOWS",
    "RAW_PROMPT_PLACEHOLDER",
    "MAX_PROMPT_TOKENS",
    "build_metadata",
    "check_prompt_tokens",
    "check_window",
    "compact_json",
    "extra_fields",
    "list_data",
    "list_like",
    "message_body",
    "message_list",
    "normalize_stop",
    "sampling_fields",
    "string_list",
    "system_prompt",
]

# Sail's catalogue as of the official sail SDK 0.17.1 (October 2026) and the newer docs:
# asap (immediate, no queue), balanced (the default), flex (best effort). "standard" is still
# accepted as an alias of balanced. "priority" and "15m" (an older docs page, the seed) are retired.
COMPLETION_WINDOWS = ("asap", "balanced", "flex", "standard")
RETIRED_WINDOWS = ("priority", "15m")
DEFAULT_WINDOW = "balanced"
RAW_PROMPT_PLACEHOLDER = "<raw token prompt; ignored when raw_prompt_tokens is set>"
MAX_PROMPT_TOKENS = 2000000
_MAX_TOKEN_ID = 2**31 - 1


def compact_json(value: Any) -> str:
    """Deterministic compact JSON text: sorted keys, no spaces (checked encodable)."""
    return encode_json(value).decode("utf-8")


def check_window(window: Any, *, background: Optional[bool], lora: bool) -> Optional[str]:
    """A completion window as the service takes it today.

    A retired name (``priority``, ``15m``) becomes ``balanced`` with one
    ``DeprecationWarning``; ``asap`` is refused for background requests and
    for LoRA requests (the service answers 400 to both); ``flex`` needs
    ``background=True``.
    """
    if window is None:
        return None
    if window in RETIRED_WINDOWS:
        warnings.warn(
            f"the {window!r} completion window is retired (Sail docs and SDK 0.17.1): sending {DEFAULT_WINDOW!r} instead; "
            f"pass completion_window={DEFAULT_WINDOW!r} to silence this",
            DeprecationWarning,
            stacklevel=_caller_stacklevel(),
        )
        return DEFAULT_WINDOW
    if window not in COMPLETION_WINDOWS:
        raise InvalidRequestError(
            "completion_window {} is not one of {}".format(
                shown(window), ", ".join(COMPLETION_WINDOWS)
            )
        )
    if window == "asap" and lora:
        raise InvalidRequestError(
            "LoRA requests cannot use the asap completion window: use balanced or flex"
        )
    if window == "asap" and background:
        raise InvalidRequestError(
            "background requests (and all raw-token sampling) cannot use the asap completion window: "
            "use balanced (the default) or flex"
        )
    if window == "flex" and background is False:
        raise InvalidRequestError("the flex completion window needs background=True")
    return window


def _caller_stacklevel() -> int:
    """The ``stacklevel`` that points a warning at the first frame outside sail_lite."""
    level, frame = 1, sys._getframe(1)
    while frame is not None and frame.f_globals.get("__name__", "").startswith("sail_lite"):
        level += 1
        frame = frame.f_back  # type: ignore[assignment]
    return level


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
    over the same keys there; the window is checked by :func:`check_window`.
    """
    if metadata is not None and not isinstance(metadata, Mapping):
        raise InvalidRequestError(
            f"metadata must be a mapping of str to str, got {type(metadata).__name__}"
        )
    result: Dict[str, str] = {}
    for key, value in (metadata or {}).items():
        if not isinstance(key, str):
            raise InvalidRequestError(f"metadata keys must be strings, got {shown(key)}")
        if value is None:
            continue
        if isinstance(value, str):
            result[key] = value
        elif isinstance(value, (Mapping, list, tuple)):
            result[key] = compact_json(value)
        elif isinstance(value, bool):
            result[key] = "true" if value else "false"
        elif isinstance(value, (int, float)) and math.isfinite(value):
            result[key] = str(value)
        else:
            raise InvalidRequestError(
                f"metadata[{key!r}] must be a string (or a finite number, a bool, a list or dict), got {shown(value)}"
            )
    if lora is not None:
        if not isinstance(lora, str) or not lora.strip():
            raise InvalidRequestError(
                f"lora must be a LoRA name or id (a non-empty string), got {shown(lora)}"
            )
        result["lora"] = lora
    if completion_window is not None:
        result["completion_window"] = completion_window
    window = check_window(
        result.get("completion_window"), background=background, lora=bool(result.get("lora"))
    )
    if window is not None:
        result["completion_window"] = window
    return result or None


def list_like(value: Any) -> bool:
    """Whether ``value`` may stand for a list: an iterable, but not a string, bytes or a mapping."""
    return not isinstance(value, (str, bytes, Mapping)) and hasattr(value, "__iter__")


def check_prompt_tokens(tokens: Any) -> List[int]:
    """A raw-token prompt as a list: 1..2,000,000 ints, each 0..2^31-1."""
    if not list_like(tokens):
        raise InvalidRequestError(
            f"the prompt must be a sequence of token ids (ints), got {type(tokens).__name__}"
        )
    result = list(tokens)
    if not result:
        raise InvalidRequestError("the prompt is empty: pass at least one token id")
    if len(result) > MAX_PROMPT_TOKENS:
        raise InvalidRequestError(
            f"the prompt has {len(result)} tokens; at most {MAX_PROMPT_TOKENS} are accepted"
        )
    for position, token in enumerate(result):
        if isinstance(token, bool) or not isinstance(token, int) or not 0 <= token <= _MAX_TOKEN_ID:
            raise InvalidRequestError(
                f"token id at position {position} is {shown(token)}: every token id must be an int from 0 to {_MAX_TOKEN_ID}"
            )
    return result


def normalize_stop(stop: Any) -> Optional[List[Union[str, int]]]:
    """``stop`` as the wire list: a string, a list of strings, a token id (one-token stop) or a list of ids."""
    if stop is None:
        return None
    if isinstance(stop, int) and not isinstance(stop, bool):
        stop = [stop]  # as the completer (and the official SDK) take it
    if isinstance(stop, str):
        if not stop:
            raise InvalidRequestError("a stop string must not be empty")
        return [stop]
    if not list_like(stop):  # a str was taken above
        raise InvalidRequestError("stop must be a string, a list of strings or a list of token ids")
    items = list(stop)
    if not items:
        return None
    if all(isinstance(item, str) and item for item in items):
        return items
    if all(
        isinstance(item, int) and not isinstance(item, bool) and 0 <= item <= _MAX_TOKEN_ID
        for item in items
    ):
        return items
    raise InvalidRequestError(
        "stop must be a non-empty string, a list of non-empty strings, or a list of token ids (ints "
        f"0..2^31-1), not a mix; got {shown(items)}"
    )


def string_list(name: str, value: Any, *, non_empty: bool = False) -> List[str]:
    """A list of non-empty strings from any iterable but a bare string."""
    if not list_like(value):
        raise InvalidRequestError(f"{name} must be a list of strings, got {type(value).__name__}")
    items = list(value)
    if non_empty and not items:
        raise InvalidRequestError(f"{name} must not be empty")
    if not all(isinstance(item, str) and item for item in items):
        raise InvalidRequestError(f"{name} must contain only non-empty strings, got {shown(items)}")
    return items


def message_list(messages: Any) -> List[Dict[str, Any]]:
    """Chat/Messages ``messages``: a non-empty list of ``{"role": str, "content": ...}`` objects."""
    if not list_like(messages):
        raise InvalidRequestError(
            "messages must be a list of {'role': ..., 'content': ...} objects"
        )
    result = [dict(m) if isinstance(m, Mapping) else m for m in messages]
    if not result or not all(
        isinstance(m, dict) and isinstance(m.get("role"), str) for m in result
    ):
        raise InvalidRequestError(
            "messages must be a non-empty list of {'role': ..., 'content': ...} objects"
        )
    return result


def system_prompt(system: Any) -> Union[str, List[Dict[str, Any]]]:
    """The Messages ``system``: a string, or a list of content blocks (objects)."""
    if isinstance(system, str):
        return system
    if not list_like(system):  # a str was taken above
        raise InvalidRequestError(
            f"system must be a string or a list of content blocks, got {type(system).__name__}"
        )
    blocks = list(system)
    if not all(isinstance(block, Mapping) for block in blocks):
        raise InvalidRequestError(
            "system blocks must be objects like {'type': 'text', 'text': ...}"
        )
    return [dict(block) for block in blocks]


def message_body(extra_body: Any, model: Any, messages: Any, system: Any = None) -> Dict[str, Any]:
    """A Chat Completions or Messages body: ``extra_body``'s fields, then the checked model, messages, system."""
    body = extra_fields(extra_body)
    body["model"] = model_id(model)
    body["messages"] = message_list(messages)
    if system is not None:
        body["system"] = system_prompt(system)
    return body


_RANGES = {"temperature": (0.0, 2.0), "top_p": (0.0, 1.0)}


def sampling_fields(
    body: Dict[str, Any],
    *,
    metadata: Any = None,
    lora: Any = None,
    completion_window: Any = None,
    background: bool = False,
    **numbers: Any,
) -> Dict[str, Any]:
    """``body`` with each sampling number that is not ``None`` and the wire metadata (:func:`build_metadata`).

    ``temperature`` is checked to lie in 0..2 and ``top_p`` in 0..1; any
    other number is a token limit, an int >= 1. Checked in the order given.
    """
    for name, value in numbers.items():
        if value is not None:
            body[name] = (
                number_in(name, value, *_RANGES[name])
                if name in _RANGES
                else positive_int(name, value)
            )
    wire_metadata = build_metadata(
        metadata, lora=lora, completion_window=completion_window, background=background
    )
    if wire_metadata:
        body["metadata"] = wire_metadata
    return body


def extra_fields(extra_body: Any) -> Dict[str, Any]:
    """``extra_body``: more top-level body fields, sent as given (known fields win over them)."""
    if extra_body is None:
        return {}
    if not isinstance(extra_body, Mapping) or not all(isinstance(key, str) for key in extra_body):
        raise InvalidRequestError(
            f"extra_body must be a mapping of field names to values, got {type(extra_body).__name__}"
        )
    return dict(extra_body)


def list_data(payload: Any, what: str) -> Sequence[Any]:
    """The ``data`` array of an ``{"object": "list", "data": [...]}`` reply."""
    data = payload.get("data") if isinstance(payload, Mapping) else None
    if not isinstance(data, list):
        raise MalformedResponseError(f"expected a list object with a 'data' array of {what}")
    return data
