"""``sail_lite.journal``: the durable record of a pipeline's requests (storage and codecs only).

:mod:`.store` is the SQLite file (:class:`Journal`); :mod:`.codec` turns keys, results and
errors into the text it stores. ``sail-lite jobs status`` / ``resume`` live in
:mod:`sail_lite.jobs` (``summarize``, ``resume``).
"""

from __future__ import annotations

from .._checks import DEFAULT_IDEMPOTENCY_RETENTION
from .codec import (
    MAX_KEY_CHARS,
    JournalError,
    JournalMismatchError,
    at_rest,
    canonical_json,
    check_job_name,
    decode_error,
    decode_result,
    derive_key,
    encode_error,
    encode_result,
    format_duration,
    identity_digest,
    is_terminal_failure,
    key_from_digest,
    load_json,
    request_fingerprint,
    sent_key,
)
from .store import (
    APPLICATION_ID,
    PRIVATE_MODE,
    SCHEMA_VERSION,
    STATUSES,
    UNFINISHED,
    Journal,
    JournalEntry,
    JournalRow,
    MemoryOccurrences,
    check_retention,
)

__all__ = [
    "Journal",
    "JournalError",
    "JournalMismatchError",
    "JournalEntry",
    "JournalRow",
    "MemoryOccurrences",
    "STATUSES",
    "UNFINISHED",
    "SCHEMA_VERSION",
    "APPLICATION_ID",
    "PRIVATE_MODE",
    "MAX_KEY_CHARS",
    "DEFAULT_IDEMPOTENCY_RETENTION",
    "at_rest",
    "canonical_json",
    "check_job_name",
    "check_retention",
    "derive_key",
    "identity_digest",
    "key_from_digest",
    "request_fingerprint",
    "sent_key",
    "load_json",
    "encode_result",
    "decode_result",
    "encode_error",
    "decode_error",
    "is_terminal_failure",
    "format_duration",
]
