"""What the journal stores, as text: idempotency keys, fingerprints, results and errors.

Pure functions, no I/O. Keys are deterministic (job, item identity, occurrence), so a re-run
re-sends a request under the key the server already knows. Results and errors round-trip to
their own types; errors are rebuilt through :func:`sail_lite.errors.rebuild_error`, the one
rebuild. :func:`at_rest` is what every text column passes through: no signed-URL query string
is ever stored.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any, Dict, Mapping, Optional

from .. import errors as _errors
from .._checks import encode_json
from .._redact import redact_secrets
from ..errors import InvalidRequestError, SailError, rebuild_error
from ..retry import is_final
from ..types import Response, SampledTokens, Usage

__all__ = [
    "JournalError",
    "JournalMismatchError",
    "MAX_KEY_CHARS",
    "at_rest",
    "canonical_json",
    "check_job_name",
    "decode_error",
    "decode_result",
    "derive_key",
    "encode_error",
    "encode_result",
    "format_duration",
    "identity_digest",
    "is_terminal_failure",
    "key_from_digest",
    "load_json",
    "request_fingerprint",
    "sent_key",
]

MAX_KEY_CHARS = 255
_JOB_PREFIX_CHARS = 64
_UNSAFE = re.compile(r"[^A-Za-z0-9_.:-]+")
_JSON_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')


class JournalError(SailError):
    """The journal cannot be used as asked: a file that is not a journal, a failed write, a job it cannot resume."""


class JournalMismatchError(JournalError, ValueError):
    """The same idempotency key (or job) was recorded with a different request.

    The prompt or a parameter changed under a job name that already ran:
    use a new job name (or a new journal file) for a new experiment.
    ``key`` and ``job`` say which; ``recorded`` and ``given`` are the two
    fingerprints.
    """

    def __init__(
        self,
        message: str,
        *,
        key: Optional[str] = None,
        job: Optional[str] = None,
        recorded: Optional[str] = None,
        given: Optional[str] = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(message, **kwargs)
        self.key = key
        self.job = job
        self.recorded = recorded
        self.given = given


# --- keys and fingerprints ----------------------------------------------------------------------


def canonical_json(value: Any, what: str = "value") -> str:
    """Deterministic JSON (sorted keys, no spaces, tuples as lists); non-JSON input is an InvalidRequestError."""
    return encode_json(value, what).decode("utf-8")


def digest(*parts: str) -> str:
    """SHA-256 (hex) of ``parts``, each followed by a NUL."""
    sha = hashlib.sha256()
    for part in parts:
        sha.update(part.encode("utf-8"))
        sha.update(b"\0")
    return sha.hexdigest()


def check_job_name(job: Any) -> str:
    """A job name: a non-empty one-line string of at most 200 characters, valid UTF-8, no NUL."""
    ok = isinstance(job, str) and job.strip() and len(job) <= 200
    if ok and not any(c in job for c in "\n\r\0"):
        try:
            job.encode("utf-8")
            return job
        except UnicodeEncodeError:
            pass
    raise InvalidRequestError(
        "job must be a non-empty one-line string of at most 200 characters, valid UTF-8 without "
        f"NUL (it names the idempotency keys), got {job!r}"
    )


def identity_digest(job: str, identity: str) -> str:
    """128 bits of SHA-256(job, identity): which item this is, whatever its position."""
    return digest(job, identity)[:32]


def derive_key(job: str, identity: str, occurrence: int) -> str:
    """The idempotency key of the ``occurrence``-th item (0-based) with content ``identity`` in ``job``.

    ``<job, made safe, at most 64 chars>.<128 bits of SHA-256(job, identity)>.<occurrence>``: at most
    255 latin-1 characters, no newline (wire.md), unique per (job, identity, occurrence) even when two
    job names look alike once made safe.
    """
    return key_from_digest(job, identity_digest(job, identity), occurrence)


def key_from_digest(job: str, digest: str, occurrence: int) -> str:
    """The key of ``occurrence`` of the item whose :func:`identity_digest` is ``digest``."""
    prefix = _UNSAFE.sub("_", job)[:_JOB_PREFIX_CHARS]
    return f"{prefix}.{digest}.{occurrence}"


def sent_key(key: str, attempt: int) -> str:
    """The key sent for ``attempt`` (0: the key itself; a cancelled or retried request gets ``.aN``)."""
    return key if attempt == 0 else f"{key}.a{attempt}"


def request_fingerprint(params_json: str, item_json: str) -> str:
    """SHA-256 of the job's parameters and one item: equal requests, equal fingerprints."""
    return digest(params_json, item_json)


# --- text at rest -----------------------------------------------------------------------------


def _redact_token(token: str) -> str:
    if "://" not in token and "\\" not in token:
        return token
    value = json.loads(token)
    redacted = redact_secrets(value)
    return token if redacted == value else json.dumps(redacted, ensure_ascii=False)


def at_rest(text: Optional[str]) -> Optional[str]:
    """``text`` (JSON, or a plain string) as it may be stored: every signed-URL query string redacted.

    JSON strings are redacted token by token (no recursion: any depth), so valid JSON stays valid.
    """
    if text is None or ("://" not in text and "\\" not in text):
        return text
    if not text.startswith(("{", "[", '"')):
        return redact_secrets(text)
    return _JSON_STRING.sub(lambda match: _redact_token(match.group(0)), text)


def load_json(text: Any, what: str) -> Any:
    """Stored JSON back as data; anything unreadable (not text, not JSON, nested past Python's stack)
    is a :class:`JournalError` naming ``what`` (e.g. "the params of job 'eval'")."""
    if not isinstance(text, str):
        raise JournalError(f"{what} is not text in the journal (was the file edited?)")
    try:
        return json.loads(text)
    except RecursionError:
        reason = "nested too deeply"
    except ValueError as exc:
        reason = f"not JSON ({str(exc)[:80]})"
    raise JournalError(f"{what} is unreadable: {reason} (was the file edited?)")


# --- results ---------------------------------------------------------------------------------


def encode_result(result: Any) -> str:
    """A terminal result as JSON: a :class:`Response` as its wire payload, :class:`SampledTokens` as its fields."""
    if isinstance(result, Response):
        return canonical_json({"type": "Response", "payload": result.raw}, "the response")
    if isinstance(result, SampledTokens):
        usage = result.usage
        fields = {
            "type": "SampledTokens",
            "tokens": list(result.tokens),
            "logprobs": None if result.logprobs is None else list(result.logprobs),
            "stop_reason": result.stop_reason,
            "response_id": result.response_id,
            "usage": {
                "input_tokens": usage.input_tokens,
                "output_tokens": usage.output_tokens,
                "total_tokens": usage.total_tokens,
            },
            "text": result.text,
        }
        return canonical_json(fields, "the result")
    return canonical_json({"type": "json", "value": result}, "a map result")


def _decode_tokens(data: Mapping[str, Any]) -> SampledTokens:
    logprobs = data["logprobs"]
    return SampledTokens(
        tokens=tuple(data["tokens"]),
        logprobs=None if logprobs is None else tuple(float(v) for v in logprobs),
        stop_reason=data["stop_reason"],
        response_id=data["response_id"],
        usage=Usage(**data["usage"]),
        text=data["text"],
    )


def decode_result(text: str, what: str = "a journaled result") -> Any:
    """The inverse of :func:`encode_result` (equal to the original: same type, same fields)."""
    data = load_json(text, what)
    try:
        kind = data["type"]
        if kind == "Response":
            return Response.from_dict(data["payload"])
        if kind == "SampledTokens":
            return _decode_tokens(data)
        if kind == "json":
            return data["value"]
    except (ValueError, KeyError, TypeError, RecursionError) as exc:
        raise JournalError(
            f"{what} is unreadable ({type(exc).__name__}): was the file edited?"
        ) from None
    raise JournalError(f"{what} has unknown type {kind!r}: written by a newer sail_lite?")


# --- errors ----------------------------------------------------------------------------------


def is_terminal_failure(exc: BaseException) -> bool:
    """True when retrying the same request cannot help: record it as ``failed``.

    The rule is :func:`sail_lite.retry.is_final`. Anything else (connection
    errors, 5xx and 429 after the client's retries, deadlines, a closed
    client, an unreadable reply) leaves the request resumable: the next run
    re-attaches or re-sends it with the same key. A journal's own error is
    never a verdict on the request.
    """
    return is_final(exc) and not isinstance(exc, JournalError)


_ERROR_FIELDS = (
    "status",
    "code",
    "param",
    "request_id",
    "response_id",
    "attempts",
    "idempotency_key",
)


def encode_error(exc: BaseException) -> str:
    """An error as JSON: its class name, message and data (and the failed response's payload, if any)."""
    data: Dict[str, Any] = {
        "type": type(exc).__name__,
        "message": str(getattr(exc, "message", exc)),
    }
    for name in _ERROR_FIELDS:
        value = getattr(exc, name, None)
        if isinstance(value, (str, int)) and not isinstance(value, bool):
            data[name] = value
    response = getattr(exc, "response", None)
    if isinstance(response, Response):
        data["response"] = response.raw
    return canonical_json(redact_secrets(data), "the error")


def _error_state(cls: type, message: str, data: Mapping[str, Any]) -> Dict[str, Any]:
    state: Dict[str, Any] = dict(vars(SailError(message)))  # every base field, at its default
    if issubclass(cls, _errors.APIConnectionError):
        state["request_sent"] = True
    for name in _ERROR_FIELDS:
        value = data.get(name)
        if isinstance(value, (str, int)) and not isinstance(value, bool):
            state[name] = value
    if issubclass(cls, _errors.ResponseFailedError):
        payload = data.get("response")
        state["response"] = Response.from_dict(payload) if isinstance(payload, Mapping) else None
    if issubclass(cls, _errors.AdapterError):
        state["problems"] = ()
    if issubclass(cls, _errors.LoRAValidationError):
        state.update(lora=None, model=None, result_code=state["code"], result_message=message)
    return state


def decode_error(text: str, what: str = "a journaled error") -> SailError:
    """Rebuild a journaled error as its own sail_lite class (or :class:`SailError` for a foreign one).

    An unreadable record comes back as a :class:`JournalError` saying so (it is returned, not
    raised: the error it stands for is what a caller raises).
    """
    try:
        data = load_json(text, what)
    except JournalError as exc:
        return exc
    if not isinstance(data, Mapping):
        return JournalError(f"{what} is not an object: was the file edited?")
    name = data.get("type")
    message = data.get("message")
    message = message if isinstance(message, str) and message else "a journaled request failed"
    cls = getattr(_errors, name, None) if isinstance(name, str) else None
    if not (isinstance(cls, type) and issubclass(cls, SailError)):
        cls = SailError
        message = f"{name}: {message}"
    try:
        state = _error_state(cls, message, data)
    except (ValueError, TypeError, KeyError, RecursionError):
        return JournalError(f"{what} is unreadable: was the file edited?")
    return rebuild_error(cls, message, state)


def format_duration(seconds: float) -> str:
    """``86400`` -> ``"24 h"``, ``90`` -> ``"90 s"``."""
    if seconds >= 3600 and seconds % 3600 == 0:
        return f"{seconds / 3600:g} h"
    return f"{seconds:g} s"
