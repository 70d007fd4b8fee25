"""``sail_lite.Journal``: a durable record of a pipeline's requests, so a crash never loses or re-bills one.

One SQLite file (standard library ``sqlite3``, WAL mode). For each logical
request of a job it records:

- a deterministic idempotency key, derived from the job name, the item's
  content fingerprint and its occurrence number among equal items (so
  re-ordered input does not re-bill, and the same prompt eight times is eight
  samples);
- the request fingerprint (a SHA-256 of the job's parameters and the item),
  so a changed prompt or parameter under the same key is a
  :class:`JournalMismatchError`, never a silent mix;
- the response id, as soon as the server accepted the create;
- the status (``pending``: the create may have been sent; ``accepted``: the
  response id is known; ``completed``; ``failed``; ``cancelled``);
- the result once terminal (the response JSON, or the raw-token result's
  fields, so it is rebuilt exactly) or the error (type, code, status,
  message).

Durability. Every record is committed before the step that depends on it
proceeds: a ``pending`` row before its create is sent, a result before it is
yielded. The journal runs WAL with ``synchronous=NORMAL`` by default: a
commit is in the operating system's page cache when it returns, so it
survives SIGKILL of the process at any instant (SQLite's WAL commit is
atomic); what NORMAL gives up is only the last transactions on a power loss
or kernel crash. That loss is harmless here because keys are deterministic:
a lost ``pending``/``accepted``/``completed`` row makes the next run re-send
the create with the same key, and the server replays the stored response
instead of running inference again (within its idempotency retention; see
the README). ``synchronous="FULL"`` fsyncs every commit (about 3x slower
for a whole journaled map here) for those who want the journal itself to
survive a power cut.

Threads. One connection, shared under a lock (``check_same_thread=False``).
SQLite serializes writers anyway; ``bench/journal_writes.py`` measured a
connection per thread about 10% faster on raw writes from 8 threads (16k vs
18k records/s), which is noise next to one HTTP round trip per record, and a
single connection keeps :meth:`Journal.close` deterministic (no connection
left open in a pool thread) and lets a run keep its per-run occurrence
counter in a temporary table. Several processes may open the same file; they
wait for each other up to ``timeout`` seconds. ``synchronous="FULL"``
measured about 3x slower than NORMAL for a whole journaled map.

Key retention. The server remembers an idempotency key only for its
retention window (``idempotency_retention``, 24 h by default: wire.md names
none). Every row records when its current key was first claimed
(``key_at``); a ``pending`` row older than the window (its create may have
reached the server, its response id was never recorded) is re-sent with its
key on resume, and a server past its window runs and bills it again. The
journal warns when it re-sends one, and :func:`summarize` counts them
(``past_retention``). Finished rows are unaffected (they come from the file)
and ``accepted`` ones are re-attached by response id.

Functions for the command line: :func:`summarize` (``sail-lite jobs status
FILE``) and :func:`resume` (``sail-lite jobs resume FILE``), which runs a
job's unfinished requests from the journal alone, without the original
script.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import secrets
import sqlite3
import stat
import threading
import time
from dataclasses import dataclass
from typing import Any, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple

from . import errors as _errors
from ._checks import DEFAULT_IDEMPOTENCY_RETENTION, encode_json
from ._redact import redact_secrets, redact_url
from .errors import InvalidRequestError, SailError
from .types import Response, SampledTokens, Usage

__all__ = [
    "Journal",
    "JournalError",
    "JournalMismatchError",
    "JournalEntry",
    "JournalRow",
    "STATUSES",
    "DEFAULT_IDEMPOTENCY_RETENTION",
    "canonical_json",
    "encode_result",
    "decode_result",
    "encode_error",
    "decode_error",
    "is_terminal_failure",
    "summarize",
    "resume",
]

_logger = logging.getLogger(__name__)

SCHEMA_VERSION = "1"
STATUSES = ("pending", "accepted", "completed", "failed", "cancelled")
UNFINISHED = ("pending", "accepted", "cancelled")
MAX_KEY_CHARS = 255
_JOB_PREFIX_CHARS = 64
_UNSAFE = re.compile(r"[^A-Za-z0-9_.:-]+")
_MISSING = object()

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS jobs (
    job TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    params TEXT NOT NULL,
    total INTEGER,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS requests (
    key TEXT PRIMARY KEY,
    job TEXT NOT NULL,
    position INTEGER NOT NULL,
    fingerprint TEXT NOT NULL,
    attempt INTEGER NOT NULL DEFAULT 0,
    status TEXT NOT NULL,
    response_id TEXT,
    item TEXT,
    result TEXT,
    error TEXT,
    error_type TEXT,
    error_code TEXT,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    key_at REAL
);
CREATE INDEX IF NOT EXISTS requests_by_job ON requests (job, status, position);
"""


class JournalError(SailError):
    """The journal cannot be used as asked: an unreadable or foreign file, a failed write, a job it cannot resume."""


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


# --- canonical forms --------------------------------------------------------------------------------------------


def canonical_json(value: Any, what: str = "value") -> str:
    """Deterministic JSON (sorted keys, no spaces, tuples as lists); non-JSON input is an InvalidRequestError."""
    return encode_json(value, what).decode("utf-8")


_JSON_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')


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


def _digest(*parts: str) -> str:
    sha = hashlib.sha256()
    for part in parts:
        sha.update(part.encode("utf-8"))
        sha.update(b"\0")
    return sha.hexdigest()


def check_job_name(job: Any) -> str:
    """A job name: a non-empty string without newlines, at most 200 characters."""
    if not isinstance(job, str) or not job.strip() or "\n" in job or "\r" in job or len(job) > 200:
        raise InvalidRequestError(
            "job must be a non-empty one-line string of at most 200 characters (it names the idempotency keys), "
            f"got {job!r}"
        )
    return job


def identity_digest(job: str, identity: str) -> str:
    """128 bits of SHA-256(job, identity): which item this is, whatever its position."""
    return _digest(job, identity)[:32]


def derive_key(job: str, identity: str, occurrence: int) -> str:
    """The idempotency key of the ``occurrence``-th item (0-based) with content ``identity`` in ``job``.

    ``<job, made safe, at most 64 chars>.<128 bits of SHA-256(job, identity)>.<occurrence>``: at most
    255 latin-1 characters, no newline (wire.md), unique per (job, identity, occurrence) even when two
    job names look alike once made safe.
    """
    return key_from_digest(job, identity_digest(job, identity), occurrence)


def key_from_digest(job: str, digest: str, occurrence: int) -> str:
    prefix = _UNSAFE.sub("_", job)[:_JOB_PREFIX_CHARS]
    return f"{prefix}.{digest}.{occurrence}"


def sent_key(key: str, attempt: int) -> str:
    """The key sent for ``attempt`` (0: the key itself; a cancelled or retried request gets ``.aN``)."""
    return key if attempt == 0 else f"{key}.a{attempt}"


def request_fingerprint(params_json: str, item_json: str) -> str:
    """SHA-256 of the job's parameters and one item: equal requests, equal fingerprints."""
    return _digest(params_json, item_json)


# --- results and errors as JSON ---------------------------------------------------------------------------------


def encode_result(result: Any) -> str:
    """A terminal result as JSON: a :class:`Response` as its wire payload, :class:`SampledTokens` as its fields."""
    if isinstance(result, Response):
        return canonical_json({"type": "Response", "payload": result.raw}, "the response")
    if isinstance(result, SampledTokens):
        return canonical_json(
            {
                "type": "SampledTokens",
                "tokens": list(result.tokens),
                "logprobs": None if result.logprobs is None else list(result.logprobs),
                "stop_reason": result.stop_reason,
                "response_id": result.response_id,
                "usage": {
                    "input_tokens": result.usage.input_tokens,
                    "output_tokens": result.usage.output_tokens,
                    "total_tokens": result.usage.total_tokens,
                },
                "text": result.text,
            },
            "the result",
        )
    return canonical_json({"type": "json", "value": result}, "a map result")


def decode_result(text: str) -> Any:
    """The inverse of :func:`encode_result` (equal to the original: same type, same fields)."""
    try:
        data = json.loads(text)
        kind = data["type"]
        if kind == "Response":
            return Response.from_dict(data["payload"])
        if kind == "SampledTokens":
            logprobs = data["logprobs"]
            return SampledTokens(
                tokens=tuple(data["tokens"]),
                logprobs=None if logprobs is None else tuple(float(v) for v in logprobs),
                stop_reason=data["stop_reason"],
                response_id=data["response_id"],
                usage=Usage(**data["usage"]),
                text=data["text"],
            )
        if kind == "json":
            return data["value"]
    except (ValueError, KeyError, TypeError) as exc:
        raise JournalError(
            f"a journaled result is unreadable ({exc}): was the file edited?"
        ) from None
    raise JournalError(
        f"a journaled result has unknown type {kind!r}: written by a newer sail_lite?"
    )


_TERMINAL_FAILURES = (
    _errors.ResponseFailedError,  # failed, expired, cancelled by someone else: the server's final word
    _errors.InvalidRequestError,  # bad item, caught before any I/O
    _errors.BadRequestError,  # 400, including idempotency_error
    _errors.RequestTooLargeError,
    _errors.UnprocessableEntityError,
)


def is_terminal_failure(exc: BaseException) -> bool:
    """True when retrying the same request cannot help: record it as ``failed``.

    Anything else (connection errors, 5xx and 429 after the client's retries,
    deadlines, a closed client, an unreadable reply) leaves the request
    resumable: the next run re-attaches or re-sends it with the same key.
    """
    return isinstance(exc, _TERMINAL_FAILURES) and not isinstance(exc, JournalError)


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


def decode_error(text: str) -> SailError:
    """Rebuild a journaled error as its own sail_lite class (or :class:`SailError` for a foreign one)."""
    try:
        data = json.loads(text)
        name = data.get("type")
        message = data.get("message") or "a journaled request failed"
    except (ValueError, AttributeError):
        return JournalError("a journaled error is unreadable: was the file edited?")
    cls = getattr(_errors, name, None) if isinstance(name, str) else None
    if not (isinstance(cls, type) and issubclass(cls, SailError)):
        cls = SailError
        message = f"{name}: {message}"
    error = cls.__new__(cls)
    Exception.__init__(error, message)
    state: Dict[str, Any] = dict(vars(SailError(message)))  # every base field, at its default
    if issubclass(cls, _errors.APIConnectionError):
        state["request_sent"] = True
    for name in _ERROR_FIELDS:
        if name in data:
            state[name] = data[name]
    if issubclass(cls, _errors.ResponseFailedError):
        payload = data.get("response")
        state["response"] = Response.from_dict(payload) if isinstance(payload, Mapping) else None
    if issubclass(cls, _errors.AdapterError):
        state["problems"] = ()
    if issubclass(cls, _errors.LoRAValidationError):
        state.update(lora=None, model=None, result_code=state["code"], result_message=message)
    error.__dict__.update(state)
    return error


# --- rows -------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class JournalEntry:
    """One logical request about to be claimed: its base key, fingerprint, input position and item JSON."""

    key: str
    fingerprint: str
    position: int
    item_json: Optional[str] = None


@dataclass(frozen=True)
class JournalRow:
    """One logical request as recorded.

    ``fresh`` is True when this claim created the row (or re-armed a cancelled
    one): nothing was sent for this attempt yet. ``key_at`` is when the
    current attempt's key was first claimed (the server's retention window
    for it starts at about that time).
    """

    key: str
    job: str
    position: int
    fingerprint: str
    attempt: int
    status: str
    response_id: Optional[str] = None
    item_json: Optional[str] = None
    result_json: Optional[str] = None
    error_json: Optional[str] = None
    key_at: Optional[float] = None
    fresh: bool = False

    @property
    def idempotency_key(self) -> str:
        """The key to send for this attempt."""
        return sent_key(self.key, self.attempt)


_ROW_COLUMNS = (
    "key, job, position, fingerprint, attempt, status, response_id, item, result, error, "
    "COALESCE(key_at, created_at)"
)


def _row(values: Sequence[Any], fresh: bool = False) -> JournalRow:
    return JournalRow(*values, fresh=fresh)


def check_retention(value: Any) -> float:
    """A retention window: a positive, finite number of seconds."""
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not value > 0
        or value == float("inf")
    ):
        raise InvalidRequestError(
            "idempotency_retention must be a positive number of seconds (the server's key "
            f"retention window; 86400 for 24 h), got {value!r}"
        )
    return float(value)


def format_duration(seconds: float) -> str:
    if seconds >= 3600 and seconds % 3600 == 0:
        return f"{seconds / 3600:g} h"
    return f"{seconds:g} s"


PRIVATE_MODE = 0o600
_SIDE_FILES = ("", "-wal", "-shm", "-journal")


def _make_private(path: str) -> None:
    """Create ``path`` 0600 when missing; make an existing journal and its side files 0600.

    SQLite creates ``-wal``, ``-shm`` and ``-journal`` with the database file's own mode, so the
    database's mode is the one that matters; the umask is not consulted.
    """
    try:
        fd = os.open(
            path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), PRIVATE_MODE
        )
    except FileExistsError:
        fd = None
    if fd is not None:
        try:
            os.fchmod(fd, PRIVATE_MODE)
        finally:
            os.close(fd)
        return
    for suffix in _SIDE_FILES:
        try:
            if stat.S_IMODE(os.stat(path + suffix).st_mode) != PRIVATE_MODE:
                os.chmod(path + suffix, PRIVATE_MODE)
        except FileNotFoundError:
            pass


# --- the journal ------------------------------------------------------------------------------------------------


class Journal:
    """A durable, thread-safe record of a pipeline's requests in one SQLite file (see the module docstring).

    ``Journal(path)`` creates the file (and its parent folder must exist) or
    opens an existing one; ``synchronous`` is ``"NORMAL"`` (default: survives
    SIGKILL; a power loss may drop the last commits, which deterministic keys
    make harmless) or ``"FULL"`` (fsync per commit). ``timeout`` is how long a
    write waits for another process holding the file. ``idempotency_retention``
    is how long (seconds) the server is taken to remember a key: re-sending a
    ``pending`` request claimed longer ago than that logs a warning (the
    server will run and bill it again). ``clock`` (wall seconds,
    ``time.time``) stamps the records. Use it as a context manager or call
    :meth:`close`. Not picklable: open one per process.
    """

    def __init__(
        self,
        path: os.PathLike[str] | str,
        *,
        synchronous: str = "NORMAL",
        timeout: float = 30.0,
        idempotency_retention: float = DEFAULT_IDEMPOTENCY_RETENTION,
        clock: Any = time.time,
    ) -> None:
        if synchronous not in ("NORMAL", "FULL"):
            raise InvalidRequestError(
                f"synchronous must be 'NORMAL' or 'FULL', got {synchronous!r}"
            )
        self.idempotency_retention = check_retention(idempotency_retention)
        self.path = os.fspath(path)
        self._clock = clock
        self._begun: Dict[
            str, Tuple[str, str]
        ] = {}  # job -> (kind, params JSON) already checked here
        self._warned_late: set = set()  # jobs whose late re-sends were already warned about
        self._submit_occurrences: Optional[_OccurrenceTable] = None
        self._lock = threading.RLock()
        self._closed = False
        try:
            _make_private(self.path)
            self._db = sqlite3.connect(
                self.path, timeout=timeout, isolation_level=None, check_same_thread=False
            )
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute(f"PRAGMA synchronous={synchronous}")
            with self._transaction():
                for statement in _SCHEMA.split(";"):
                    if statement.strip():
                        self._db.execute(statement)
                columns = {row[1] for row in self._db.execute("PRAGMA table_info(requests)")}
                if (
                    "key_at" not in columns
                ):  # a file from before key retention was tracked: same schema, one more column
                    self._db.execute("ALTER TABLE requests ADD COLUMN key_at REAL")
                rows = dict(self._db.execute("SELECT name, value FROM meta").fetchall())
                if not rows:
                    rows = {"schema": SCHEMA_VERSION, "journal_id": secrets.token_hex(8)}
                    self._db.executemany(
                        "INSERT INTO meta (name, value) VALUES (?, ?)", list(rows.items())
                    )
        except sqlite3.DatabaseError as exc:
            raise JournalError(
                f"cannot open the journal {self.path!r}: {exc} (is it a sail_lite journal?)"
            ) from None
        if rows.get("schema") != SCHEMA_VERSION:
            self._db.close()
            raise JournalError(
                "the journal {!r} has schema {!r}; this sail_lite reads schema {}".format(
                    self.path, rows.get("schema"), SCHEMA_VERSION
                )
            )
        self.journal_id = rows["journal_id"]
        self._temp_tables = 0

    def __repr__(self) -> str:
        return f"Journal({self.path!r})"

    def __reduce__(self) -> Any:
        raise TypeError(
            "a Journal holds an open database: open Journal(path) in each process instead"
        )

    # -- lifecycle ---------------------------------------------------------------------------------------------

    def close(self) -> None:
        """Close the file (idempotent). Every record written so far is already committed."""
        with self._lock:
            if not self._closed:
                self._closed = True
                self._db.close()

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    @property
    def default_job(self) -> str:
        """The job name used when none is given: unique to this journal file."""
        return "job-" + self.journal_id

    # -- transactions ------------------------------------------------------------------------------------------

    class _Tx:
        def __init__(self, journal: Journal) -> None:
            self.journal = journal

        def __enter__(self) -> sqlite3.Connection:
            journal = self.journal
            journal._lock.acquire()
            if journal._closed:
                journal._lock.release()
                raise JournalError(f"the journal {journal.path!r} is closed")
            try:
                journal._db.execute("BEGIN IMMEDIATE")
            except BaseException:
                journal._lock.release()
                raise
            return journal._db

        def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
            db = self.journal._db
            try:
                if exc_type is None:
                    db.execute("COMMIT")
                else:
                    db.execute("ROLLBACK")
            finally:
                self.journal._lock.release()

    def _transaction(self) -> Journal._Tx:
        return Journal._Tx(self)

    def _write(self, what: str, sql: str, args: Sequence[Any]) -> int:
        try:
            with self._transaction() as db:
                return db.execute(sql, args).rowcount
        except sqlite3.Error as exc:
            raise JournalError(f"could not record {what} in {self.path!r}: {exc}") from None

    # -- jobs --------------------------------------------------------------------------------------------------

    def begin_job(
        self, job: str, *, kind: str, params: Mapping[str, Any], total: Optional[int] = None
    ) -> str:
        """Record ``job``'s kind and parameters (first run), or check them (later runs); returns the params JSON.

        Raises :class:`JournalMismatchError` when the job was recorded with
        other parameters or another kind.
        """
        check_job_name(job)
        params_json = canonical_json(dict(params), "the job's parameters")
        if total is None and self._begun.get(job) == (kind, params_json):
            return params_json  # checked already by this journal (a submit per request must not cost a commit)
        now = self._clock()
        try:
            with self._transaction() as db:
                found = db.execute(
                    "SELECT kind, params, total FROM jobs WHERE job = ?", (job,)
                ).fetchone()
                if found is None:
                    db.execute(
                        "INSERT INTO jobs (job, kind, params, total, created_at, updated_at) "
                        "VALUES (?, ?, ?, ?, ?, ?)",
                        (job, kind, at_rest(params_json), total, now, now),
                    )
                    self._begun[job] = (kind, params_json)
                    return params_json
                if found[0] != kind or found[1] != at_rest(params_json):
                    # Name what differs, never the values: a parameter may hold a signed URL.
                    recorded = json.loads(found[1])
                    given = json.loads(params_json)
                    changed = sorted(
                        name
                        for name in set(recorded) | set(given)
                        if recorded.get(name, _MISSING) != given.get(name, _MISSING)
                    )
                    what = (
                        f"kind ({found[0]} then {kind})"
                        if found[0] != kind
                        else "parameters {}".format(", ".join(changed))
                    )
                    raise JournalMismatchError(
                        f"job {job!r} in {self.path} was recorded with other {what}. Use a new job name (or journal file) for a "
                        "new experiment, or the recorded parameters to resume it",
                        job=job,
                        recorded=_digest(found[1]),
                        given=_digest(params_json),
                    )
                db.execute(
                    "UPDATE jobs SET total = COALESCE(?, total), updated_at = ? WHERE job = ?",
                    (total, now, job),
                )
                self._begun[job] = (kind, params_json)
                return params_json
        except sqlite3.Error as exc:
            raise JournalError(f"could not record job {job!r} in {self.path!r}: {exc}") from None

    def job(self, job: str) -> Optional[Dict[str, Any]]:
        """``{"job", "kind", "params", "total"}`` as recorded, or None."""
        with self._lock:
            found = self._db.execute(
                "SELECT kind, params, total FROM jobs WHERE job = ?", (job,)
            ).fetchone()
        if found is None:
            return None
        return {"job": job, "kind": found[0], "params": json.loads(found[1]), "total": found[2]}

    def jobs(self) -> List[str]:
        """Every job name recorded, oldest first."""
        with self._lock:
            return [r[0] for r in self._db.execute("SELECT job FROM jobs ORDER BY created_at, job")]

    # -- claiming requests -------------------------------------------------------------------------------------

    def claim(
        self,
        job: str,
        entries: Sequence[JournalEntry],
        *,
        retry_failed: bool = False,
        append: bool = False,
    ) -> List[JournalRow]:
        """Look every entry up, in one transaction, and record the new ones as ``pending``.

        Returns one row per entry, in order. A new entry (or a ``cancelled``
        one, or a ``failed`` one with ``retry_failed``) comes back ``fresh``
        and ``pending`` (a re-armed one with the next ``attempt``, hence a new
        key): the caller sends it now, after this commit. An existing row with
        another fingerprint raises :class:`JournalMismatchError` and records
        nothing. With ``append`` a new row's position is the job's next one
        (its ``total`` counts the rows; for requests submitted one at a time)
        instead of the entry's. A ``pending`` row claimed longer ago than
        :attr:`idempotency_retention` is returned as it is (the caller re-sends
        it with its key) and logged: the server has forgotten that key.
        """
        rows: List[JournalRow] = []
        late = 0
        now = self._clock()
        try:
            with self._transaction() as db:
                for entry in entries:
                    found = db.execute(
                        f"SELECT {_ROW_COLUMNS} FROM requests WHERE key = ?", (entry.key,)
                    ).fetchone()
                    if found is None:
                        position = entry.position
                        if append:
                            total = db.execute(
                                "SELECT total FROM jobs WHERE job = ?", (job,)
                            ).fetchone()
                            position = int(total[0] or 0) if total is not None else 0
                            db.execute(
                                "UPDATE jobs SET total = ?, updated_at = ? WHERE job = ?",
                                (position + 1, now, job),
                            )
                        db.execute(
                            "INSERT INTO requests (key, job, position, fingerprint, attempt, status, item, "
                            "created_at, updated_at, key_at) VALUES (?, ?, ?, ?, 0, 'pending', ?, ?, ?, ?)",
                            (
                                entry.key,
                                job,
                                position,
                                entry.fingerprint,
                                at_rest(entry.item_json),
                                now,
                                now,
                                now,
                            ),
                        )
                        rows.append(
                            JournalRow(
                                entry.key,
                                job,
                                position,
                                entry.fingerprint,
                                0,
                                "pending",
                                item_json=entry.item_json,
                                key_at=now,
                                fresh=True,
                            )
                        )
                        continue
                    row = _row(found)
                    if row.fingerprint != entry.fingerprint or row.job != job:
                        raise JournalMismatchError(
                            f"idempotency key {entry.key} (job {job!r}, input position {row.position if append else entry.position}) was recorded for a different "
                            "request: the prompt or a parameter changed. Use a new job name (or journal file) "
                            "for a new experiment",
                            key=entry.key,
                            job=job,
                            recorded=row.fingerprint,
                            given=entry.fingerprint,
                        )
                    if row.status == "cancelled" or (retry_failed and row.status == "failed"):
                        attempt = row.attempt + 1
                        db.execute(
                            "UPDATE requests SET attempt = ?, status = 'pending', response_id = NULL, result = NULL,"
                            " error = NULL, error_type = NULL, error_code = NULL, item = COALESCE(?, item), "
                            "updated_at = ?, key_at = ? WHERE key = ?",
                            (attempt, at_rest(entry.item_json), now, now, entry.key),
                        )
                        rows.append(
                            JournalRow(
                                row.key,
                                job,
                                row.position,
                                row.fingerprint,
                                attempt,
                                "pending",
                                item_json=entry.item_json or row.item_json,
                                key_at=now,
                                fresh=True,
                            )
                        )
                        continue
                    if self.past_retention(row, now):
                        late += 1
                    rows.append(row)
        except sqlite3.Error as exc:
            raise JournalError(f"could not claim requests in {self.path!r}: {exc}") from None
        if late:
            self._warn_late(job, late)
        return rows

    def past_retention(self, row: JournalRow, now: Optional[float] = None) -> bool:
        """True for a ``pending`` row whose key was claimed longer ago than :attr:`idempotency_retention`.

        Its create may have reached the server, which has forgotten the key
        since: re-sending it runs (and bills) the request again.
        """
        if row.status != "pending" or row.key_at is None:
            return False
        return (self._clock() if now is None else now) - row.key_at >= self.idempotency_retention

    def count_past_retention(self, job: Optional[str] = None) -> int:
        """How many ``pending`` rows (of ``job``, or of every job) are past the retention window."""
        sql = "SELECT COUNT(*) FROM requests WHERE status = 'pending' AND COALESCE(key_at, created_at) <= ?"
        args: List[Any] = [self._clock() - self.idempotency_retention]
        if job is not None:
            sql += " AND job = ?"
            args.append(job)
        with self._lock:
            return int(self._db.execute(sql, args).fetchone()[0])

    def _warn_late(self, job: str, n: int) -> None:
        first = job not in self._warned_late
        self._warned_late.add(job)
        (_logger.warning if first else _logger.info)(
            "%d request(s) of job %r re-sent with keys claimed more than %s ago, past the server's idempotency "
            "retention window: if their first create reached the server, it runs and is billed again (a new "
            "sample, nothing lost or mixed)%s",
            n,
            job,
            format_duration(self.idempotency_retention),
            "" if first else " (more of them)",
        )

    def next_occurrence(self, digest: str) -> int:
        """The next occurrence number of ``digest`` (a job's item identity) among this journal's submits.

        One counter per :class:`Journal` object, in a temporary table (memory
        stays flat): the k-th equal request submitted through it gets ``k``.
        """
        with self._lock:
            if self._closed:
                raise JournalError(f"the journal {self.path!r} is closed")
            if self._submit_occurrences is None:
                self._submit_occurrences = self.occurrence_counter()
            counter = self._submit_occurrences
        return counter.next(digest)

    # -- recording progress ------------------------------------------------------------------------------------

    def record_accepted(self, key: str, response_id: str) -> None:
        """The create was accepted: remember the response id (a re-run re-attaches to it)."""
        self._write(
            "the response id of " + key,
            "UPDATE requests SET status = 'accepted', response_id = ?, updated_at = ? "
            "WHERE key = ? AND status IN ('pending', 'accepted')",
            (response_id, self._clock(), key),
        )

    def record_result(self, key: str, result: Any, response_id: Optional[str] = None) -> None:
        """The request completed: store its result (and drop the item, no longer needed to resume)."""
        self._write(
            "the result of " + key,
            "UPDATE requests SET status = 'completed', result = ?, response_id = COALESCE(?, response_id),"
            " item = NULL, error = NULL, error_type = NULL, error_code = NULL, updated_at = ? WHERE key = ?",
            (at_rest(encode_result(result)), response_id, self._clock(), key),
        )

    def record_failure(self, key: str, exc: BaseException) -> None:
        """The request failed for good: store the error (a re-run raises it again, or retries with a new key)."""
        code = getattr(exc, "code", None)
        self._write(
            "the failure of " + key,
            "UPDATE requests SET status = 'failed', error = ?, error_type = ?, error_code = ?, "
            "response_id = COALESCE(?, response_id), updated_at = ? WHERE key = ?",
            (
                at_rest(encode_error(exc)),
                type(exc).__name__,
                at_rest(code) if isinstance(code, str) else None,
                getattr(exc, "response_id", None),
                self._clock(),
                key,
            ),
        )

    def record_transient(self, key: str, exc: BaseException) -> None:
        """A retryable error: note it (``jobs status`` shows it) and keep the request resumable."""
        response_id = getattr(exc, "response_id", None)
        code = getattr(exc, "code", None)
        self._write(
            "the error of " + key,
            "UPDATE requests SET error = ?, error_type = ?, error_code = ?, "
            "status = CASE WHEN ? IS NOT NULL AND status = 'pending' THEN 'accepted' ELSE status END, "
            "response_id = COALESCE(?, response_id), updated_at = ? "
            "WHERE key = ? AND status IN ('pending', 'accepted')",
            (
                at_rest(encode_error(exc)),
                type(exc).__name__,
                at_rest(code) if isinstance(code, str) else None,
                response_id,
                response_id,
                self._clock(),
                key,
            ),
        )

    def record_cancelled(self, key: str) -> None:
        """We cancelled it: a re-run sends it again under a new attempt key (the old one would replay the cancel)."""
        self._write(
            "the cancellation of " + key,
            "UPDATE requests SET status = 'cancelled', updated_at = ? "
            "WHERE key = ? AND status IN ('pending', 'accepted')",
            (self._clock(), key),
        )

    def forget_response(self, key: str) -> None:
        """The server no longer knows the response id: back to ``pending`` (re-sent with the same key)."""
        self._write(
            "a lost response id of " + key,
            "UPDATE requests SET status = 'pending', response_id = NULL, updated_at = ? "
            "WHERE key = ? AND status = 'accepted'",
            (self._clock(), key),
        )

    # -- reading -----------------------------------------------------------------------------------------------

    def row(self, key: str) -> Optional[JournalRow]:
        with self._lock:
            found = self._db.execute(
                f"SELECT {_ROW_COLUMNS} FROM requests WHERE key = ?", (key,)
            ).fetchone()
        return None if found is None else _row(found)

    def rows(
        self,
        job: Optional[str] = None,
        *,
        statuses: Optional[Sequence[str]] = None,
        batch: int = 500,
    ) -> Iterator[JournalRow]:
        """Rows in input order (by position), read ``batch`` at a time so memory stays flat."""
        where, args = [], []  # type: List[str], List[Any]
        if job is not None:
            where.append("job = ?")
            args.append(job)
        if statuses is not None:
            where.append("status IN ({})".format(",".join("?" * len(statuses))))
            args.extend(statuses)
        clause = (" AND " + " AND ".join(where)) if where else ""
        last: Tuple[int, str] = (-1, "")
        while True:
            with self._lock:
                found = self._db.execute(
                    f"SELECT {_ROW_COLUMNS} FROM requests WHERE (position > ? OR (position = ? AND key > ?)){clause} "
                    "ORDER BY position, key LIMIT ?",
                    [last[0], last[0], last[1]] + args + [batch],
                ).fetchall()
            if not found:
                return
            for values in found:
                yield _row(values)
            last = (found[-1][2], found[-1][0])

    def counts(self, job: Optional[str] = None) -> Dict[str, int]:
        """Requests by status (every status present, zeros included)."""
        sql = "SELECT status, COUNT(*) FROM requests{} GROUP BY status".format(
            " WHERE job = ?" if job else ""
        )
        with self._lock:
            found = dict(self._db.execute(sql, (job,) if job else ()).fetchall())
        return {status: int(found.get(status, 0)) for status in STATUSES}

    # -- per-run occurrence counting ---------------------------------------------------------------------------

    def occurrence_counter(self) -> _OccurrenceTable:
        """A per-run counter of equal items, kept in a temporary table (memory stays flat on huge inputs)."""
        with self._lock:
            self._temp_tables += 1
            name = f"run_occurrences_{self._temp_tables}"
            self._db.execute(
                f"CREATE TEMP TABLE {name} (identity TEXT PRIMARY KEY, n INTEGER NOT NULL)"
            )
        return _OccurrenceTable(self, name)


class _OccurrenceTable:
    def __init__(self, journal: Journal, name: str) -> None:
        self._journal = journal
        self._name = name

    def next(self, identity_digest: str) -> int:
        journal = self._journal
        with journal._lock:
            # RETURNING needs SQLite 3.35; an upsert then a read works on every SQLite Python ships with.
            journal._db.execute(
                f"INSERT INTO {self._name} (identity, n) VALUES (?, 0) ON CONFLICT(identity) DO UPDATE SET n = n + 1",
                (identity_digest,),
            )
            return int(
                journal._db.execute(
                    f"SELECT n FROM {self._name} WHERE identity = ?", (identity_digest,)
                ).fetchone()[0]
            )

    def close(self) -> None:
        journal = self._journal
        with journal._lock:
            if not journal._closed:
                journal._db.execute(f"DROP TABLE IF EXISTS temp.{self._name}")


class _MemoryOccurrences:
    """The occurrence counter without a journal: a dict (grows with the number of distinct items)."""

    def __init__(self) -> None:
        self._seen: Dict[str, int] = {}

    def next(self, identity_digest: str) -> int:
        n = self._seen.get(identity_digest, -1) + 1
        self._seen[identity_digest] = n
        return n

    def close(self) -> None:
        self._seen.clear()


# --- the command line's entry points ----------------------------------------------------------------------------


def _open_existing(path: os.PathLike[str] | str, **options: Any) -> Journal:
    if not os.path.isfile(os.fspath(path)):
        raise JournalError(f"no journal at {os.fspath(path)!r}")
    return Journal(path, **options)


def summarize(
    path: os.PathLike[str] | str,
    *,
    max_failures: int = 20,
    idempotency_retention: float = DEFAULT_IDEMPOTENCY_RETENTION,
    clock: Any = time.time,
) -> Dict[str, Any]:
    """What ``sail-lite jobs status FILE`` prints, as data.

    Returns ``{"path", "idempotency_retention", "counts": {status: n},
    "past_retention", "jobs": [{"job", "kind", "params", "total", "counts",
    "unfinished", "past_retention", "failure_codes": {code: n},
    "failures": [{"key", "position", "type", "code", "message",
    "response_id"}] (the first ``max_failures`` in input order),
    "errors": {type: n} (retryable errors seen on unfinished requests)}]}``.
    ``past_retention`` counts the ``pending`` requests whose key was claimed
    more than ``idempotency_retention`` seconds (by ``clock``) ago: a resume
    re-sends them, and if their first create reached the server, the server
    (which has forgotten the key) runs and bills them again.
    Raises :class:`JournalError` when ``path`` is not a journal.
    """
    with _open_existing(path, idempotency_retention=idempotency_retention, clock=clock) as journal:
        jobs = []
        totals = {status: 0 for status in STATUSES}
        for name in journal.jobs():
            info = journal.job(name) or {}
            counts = journal.counts(name)
            for status, n in counts.items():
                totals[status] += n
            with journal._lock:
                codes = journal._db.execute(
                    "SELECT COALESCE(error_code, error_type), COUNT(*) FROM requests WHERE job = ? AND "
                    "status = 'failed' GROUP BY 1 ORDER BY 2 DESC",
                    (name,),
                ).fetchall()
                errors = journal._db.execute(
                    "SELECT error_type, COUNT(*) FROM requests WHERE job = ? AND status IN ('pending', 'accepted')"
                    " AND error_type IS NOT NULL GROUP BY 1 ORDER BY 2 DESC",
                    (name,),
                ).fetchall()
                failed = journal._db.execute(
                    "SELECT key, position, error, response_id FROM requests WHERE job = ? AND status = 'failed' "
                    "ORDER BY position LIMIT ?",
                    (name, max_failures),
                ).fetchall()
            failures = []
            for key, position, error_json, response_id in failed:
                error = decode_error(error_json or "{}")
                failures.append(
                    {
                        "key": key,
                        "position": position,
                        "type": type(error).__name__,
                        "code": error.code,
                        "message": error.message,
                        "response_id": response_id,
                    }
                )
            params = {
                k: (
                    redact_url(v)
                    if isinstance(v, str) and v.startswith(("http://", "https://"))
                    else v
                )
                for k, v in (info.get("params") or {}).items()
            }  # a signed URL's query is a credential
            jobs.append(
                {
                    "job": name,
                    "kind": info.get("kind"),
                    "params": params,
                    "total": info.get("total"),
                    "counts": counts,
                    "unfinished": sum(counts[s] for s in UNFINISHED),
                    "past_retention": journal.count_past_retention(name),
                    "failure_codes": {str(code): int(n) for code, n in codes},
                    "failures": failures,
                    "errors": {str(t): int(n) for t, n in errors},
                }
            )
        return {
            "path": journal.path,
            "idempotency_retention": journal.idempotency_retention,
            "counts": totals,
            "past_retention": sum(job["past_retention"] for job in jobs),
            "jobs": jobs,
        }


def resume(
    path: os.PathLike[str] | str,
    client: Any,
    *,
    job: Optional[str] = None,
    max_in_flight: int = 64,
    retry_failed: bool = False,
    progress: Any = None,
    on_interrupt: str = "leave",
) -> Dict[str, Any]:
    """Finish a journaled job from the journal alone (``sail-lite jobs resume FILE``).

    Runs every unfinished request the journal knows (``pending``: re-sent
    with its key, so the server replays it if it got it; ``accepted``:
    re-attached by response id; ``cancelled``: re-sent under the next
    attempt key; ``failed`` too with ``retry_failed``), in input order, with
    the parameters recorded at the job's first run, for jobs recorded by
    :func:`sail_lite.pipeline.map_tokens` / ``map_responses`` (kinds
    ``tokens`` and ``responses``) and by ``tokens.submit`` /
    ``responses.submit`` with a journal (kinds ``tokens.submit`` and
    ``responses.submit``: each request's recorded wire body). Items the original run never read are not
    in the journal: re-run the script for those. ``job`` picks one job (all
    resumable jobs by default). ``progress`` is the callback of
    :func:`sail_lite.pipeline.run_map`. Returns ``{"jobs": {job: {"ran",
    "completed", "failed"}}, "summary": summarize(path)}``; failures are
    recorded, not raised.
    """
    from .pipeline import resume_rows  # the engine imports this module

    outcome: Dict[str, Any] = {}
    with _open_existing(path) as journal:
        names = [job] if job is not None else journal.jobs()
        for name in names:
            info = journal.job(name)
            if info is None:
                raise JournalError(f"no job {name!r} in {journal.path}")
            outcome[name] = resume_rows(
                journal,
                name,
                client,
                max_in_flight=max_in_flight,
                retry_failed=retry_failed,
                progress=progress,
                on_interrupt=on_interrupt,
            )
    return {"jobs": outcome, "summary": summarize(path)}
