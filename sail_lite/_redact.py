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

# A query follows a URL or a path: a run without spaces holding a "/" ("GET /v1/x?k=v", "s3://b/k?sig").
# A "?" after a plain word ("a journal?") is a question, not a query.
_TOKEN = re.compile(r"[^\s'\"]+")
_URL_QUERY = re.compile(r"(https?://[^\s?#'\"]*)\?[^\s#'\"]*", re.IGNORECASE)
_REDACTED = "?<redacted>"


def redact_url(text: str) -> str:
    """``text`` with the query string of every URL or path (``/x?...`` up to whitespace or a quote) replaced.

    Ordinary text is kept: a ``?`` counts as a query only right after a run
    of non-space characters that holds a ``/`` (a URL, or a bare path as an
    HTTP library's message shows it).
    """
    return _TOKEN.sub(_redact_token, text) if "?" in text else text


def _redact_token(match: Any) -> str:
    token: str = match.group(0)
    mark = token.find("?")
    if mark < 0 or "/" not in token[:mark]:
        return token
    fragment = token.find("#", mark)
    return token[:mark] + _REDACTED + (token[fragment:] if fragment >= 0 else "")


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
