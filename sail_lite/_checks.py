"""Argument checks shared by the client and every resource.

Each check runs before any I/O and raises
:class:`~sail_lite.errors.InvalidRequestError` (or the error class it is
given, e.g. :class:`~sail_lite.errors.ConfigurationError` for settings) with
a message that says what to pass instead.
"""

from __future__ import annotations

import json
import re
import reprlib
import sys
from typing import Any, Optional, Type

if sys.version_info >= (
    3,
    9,
):  # isinstance(x, Mapping) on every request and reply: the abc's check is the fast one
    from collections.abc import Mapping
else:  # pragma: no cover - 3.8: typing's alias, so that annotations still resolve
    from typing import Mapping

from .errors import InvalidRequestError, MalformedResponseError, SailError

__all__ = [
    "DEFAULT_IDEMPOTENCY_RETENTION",
    "MAX_SECONDS",
    "Mapping",
    "decode_json",
    "encode_json",
    "header_value",
    "int_in",
    "model_id",
    "number_in",
    "path_id",
    "positive_int",
    "seconds",
    "shown",
    "string_mapping",
]

MAX_SECONDS = 1e7  # about 115 days: beyond it, threads and sockets refuse the number
#: Seconds a server remembers an idempotency key: wire.md names no window; 24 h, as Stripe and OpenAI-style APIs
#: keep keys. The journal assumes it of the service, and the emulator keeps keys that long.
DEFAULT_IDEMPOTENCY_RETENTION = 24 * 3600.0
_HEADER_VALUE = re.compile(r"[\x21-\x7e](?:[\x20-\x7e\xa0-\xff]*[\x21-\x7e\xa0-\xff])?\Z")


def _short_repr() -> reprlib.Repr:
    short = reprlib.Repr()
    short.maxlevel, short.maxstring, short.maxother = 3, 80, 80
    short.maxlist = short.maxtuple = short.maxdict = short.maxset = short.maxfrozenset = 8
    return short


_SHORT = _short_repr()
_HEADER_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+\Z")
# Headers that say how the message is framed or routed: a caller's value would desynchronise the connection.
_FRAMING_HEADERS = frozenset(
    {
        "content-length",
        "transfer-encoding",
        "host",
        "connection",
        "keep-alive",
        "te",
        "trailer",
        "upgrade",
        "expect",
    }
)


def shown(value: Any) -> str:
    """A user's value as an error message shows it: a repr bounded in length and depth.

    A plain ``{!r}`` of a 5,000-deep list raises RecursionError, and of a
    100 MB string makes a 100 MB message.
    """
    try:
        return _SHORT.repr(value)
    except Exception:  # a hostile __repr__
        return f"<{type(value).__name__} object>"


def positive_int(name: str, value: Any, error: Type[SailError] = InvalidRequestError) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise error(f"{name} must be an int >= 1, got {shown(value)}")
    return value


def seconds(name: str, value: Any, error: Type[SailError] = InvalidRequestError) -> float:
    """A finite number of seconds in (0, MAX_SECONDS]."""
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not (0 < value <= MAX_SECONDS)
    ):  # also refuses NaN
        raise error(
            f"{name} must be a number of seconds > 0 and <= {MAX_SECONDS:.0f}, got {shown(value)}"
        )
    return float(value)


def number_in(
    name: str, value: Any, low: float, high: float, error: Type[SailError] = InvalidRequestError
) -> float:
    """A real number (not a bool, not NaN) from ``low`` to ``high``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
        raise error(f"{name} must be a number from {low} to {high}, got {shown(value)}")
    return float(value)


def int_in(
    name: str, value: Any, low: int, high: int, error: Type[SailError] = InvalidRequestError
) -> int:
    """An int (not a bool) from ``low`` to ``high``."""
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise error(f"{name} must be an int from {low} to {high}, got {shown(value)}")
    return value


def model_id(model: Any) -> str:
    if not isinstance(model, str) or not model.strip():
        raise InvalidRequestError(
            f"model must be a non-empty model id, like 'moonshotai/Kimi-K2.6', got {shown(model)}"
        )
    return model


def path_id(value: Any, what: str) -> str:
    """An id or name that goes into a URL path segment."""
    if (
        not isinstance(value, str)
        or not value
        or any(c in value for c in "/?#%")
        or not value.isprintable()
    ):
        raise InvalidRequestError(
            f"{what} must be a non-empty string without '/', '?', '#', '%' or control characters, got {shown(value)}"
        )
    return value


def header_value(
    name: str,
    value: Any,
    *,
    secret: bool = False,
    error: Type[SailError] = InvalidRequestError,
    max_length: Optional[int] = None,
) -> str:
    """A string that can travel as an HTTP header value: visible latin-1, no line breaks.

    A ``secret`` (an API key) is never echoed in the message.
    """
    shown = "it" if secret else repr(value)
    if not isinstance(value, str):
        raise error(f"{name} must be a string, got {type(value).__name__}")
    if max_length is not None and not 0 < len(value) <= max_length:
        raise error(f"{name} must be 1 to {max_length} characters, got {len(value)} characters")
    if not _HEADER_VALUE.match(value):
        raise error(
            f"{name} cannot be sent as an HTTP header: it must be non-empty visible latin-1 text without line breaks, "
            f"control characters or surrounding spaces; check {shown}"
        )
    return value


def string_mapping(name: str, value: Any) -> Mapping[str, str]:
    """``extra_headers``: a mapping of header names to header values."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise InvalidRequestError(
            f"{name} must be a mapping of header names to values, got {type(value).__name__}"
        )
    result = {}
    for key, item in value.items():
        if not isinstance(key, str) or not _HEADER_NAME.match(key):
            raise InvalidRequestError(
                f"{name} names must be HTTP header names (letters, digits and !#$%&'*+-.^_`|~), "
                f"got {shown(key)}"
            )
        if key.lower() in _FRAMING_HEADERS:
            raise InvalidRequestError(
                f"{name} cannot set {key}: the client frames each request itself"
            )
        result[key] = header_value(f"{name}[{key!r}]", item)
    return result


# One encoder for every body: json.dumps with options builds a new one per call. It keeps no state between calls.
_ENCODER = json.JSONEncoder(
    sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
)


def encode_json(body: Any, what: str = "the request") -> bytes:
    """``body`` as compact UTF-8 JSON with sorted keys: the one encoding for bodies, metadata and fingerprints.

    Deterministic, so replays and journal fingerprints compare alike.
    """
    try:
        return _ENCODER.encode(body).encode("utf-8")
    except (TypeError, ValueError, UnicodeEncodeError, RecursionError) as exc:
        raise InvalidRequestError(
            f"{what} cannot be sent as JSON ({type(exc).__name__}: {str(exc)[:200]}): pass only strings, numbers, booleans, None, lists "
            "and dicts with string keys, no NaN or infinity, no lone surrogates"
        ) from None


def decode_json(data: bytes, what: str, **error_fields: Any) -> Any:
    """Parse a reply body, turning every way it can fail into :class:`MalformedResponseError`."""
    try:
        return json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        reason = "nested too deeply" if isinstance(exc, RecursionError) else "not JSON"
        raise MalformedResponseError(
            f"{what} ({len(data)} bytes) is {reason}", **error_fields
        ) from None
