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


def redact_secrets(value: Any) -> Any:
    """A copy of ``value`` (str, or dicts/lists/tuples of them) with http(s) URL queries redacted.

    Only queries of absolute URLs are touched, so ordinary text ("2+2?")
    stays as it is. Other values are returned unchanged.
    """
    if isinstance(value, str):
        return _URL_QUERY.sub(lambda match: match.group(1) + _REDACTED, value) if "://" in value else value
    if isinstance(value, dict):
        return {key: redact_secrets(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(redact_secrets(item) for item in value)
    return value
