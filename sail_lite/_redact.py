"""Keeping credentials out of what we render: signed-URL query strings.

A signed URL (a Tinker checkpoint archive, external weights) carries its
signature in the query string, and the server echoes it back (e.g. in a
response's ``metadata.lora``). Everything sail_lite renders or pickles goes
through here first.
"""

from __future__ import annotations

import re
from typing import Any

__all__ = ["redact_url", "redact_secrets"]

_ANY_QUERY = re.compile(r"\?[^\s'\"]*")
_URL_QUERY = re.compile(r"(https?://[^\s?#'\"]*)\?[^\s#'\"]*", re.IGNORECASE)
_REDACTED = "?<redacted>"


def redact_url(text: str) -> str:
    """``text`` with every query string (``?...`` up to whitespace or a quote) replaced.

    For texts that hold no user content, such as an HTTP library's exception
    message, where a query may follow a bare path.
    """
    return _ANY_QUERY.sub(_REDACTED, text)


_MAX_DEPTH = 64  # deeper than any wire object: what lies below is returned as it is


def redact_secrets(value: Any, _depth: int = 0) -> Any:
    """A copy of ``value`` (str, or dicts/lists/tuples of them) with http(s) URL queries redacted.

    Only queries of absolute URLs are touched, so ordinary text ("2+2?")
    stays as it is. Containers come back as plain dicts, lists and tuples;
    other values are returned unchanged, and so is anything nested deeper
    than any wire object is (a hostile value must not exhaust the stack).
    """
    if isinstance(value, str):
        return (
            _URL_QUERY.sub(lambda match: match.group(1) + _REDACTED, value)
            if "://" in value
            else value
        )
    if _depth >= _MAX_DEPTH:
        return value
    if isinstance(value, dict):
        return {key: redact_secrets(item, _depth + 1) for key, item in value.items()}
    if isinstance(value, list):
        return [redact_secrets(item, _depth + 1) for item in value]
    if isinstance(value, tuple):
        return tuple(redact_secrets(item, _depth + 1) for item in value)
    return value
