"""``sail_lite.Journal``: a durable record of a pipeline's requests, so a crash never loses or re-bills one.

One SQLite file (standard library ``sqlite3``). For each logical request of a job it
records a deterministic idempotency key (:mod:`.codec`), the request's fingerprint (a changed
prompt or parameter under the same key is a :class:`JournalMismatchError`, never a silent mix),
the response id as soon as the server accepted the create, the status (``pending``: the create
may have been sent; ``accepted``; ``completed``; ``failed``; ``cancelled``) and the result or
the error once terminal.

The file. Created ``0600`` whatever the umask (SQLite gives the ``-journal`` beside it the
database's mode). Only ``Journal(path)`` on a missing path creates one, and atomically (built
under a temporary name, then linked into place). An existing file is read and checked (SQLite
header, application id, schema version) before anything is written: a file that is not a
journal (another program's database, an empty file, a symlink to either, a dangling symlink) is
refused with :class:`JournalError` and left byte for byte as it was. No signed-URL query string
is stored (:func:`.codec.at_rest`). ``Journal(path, read_only=True)`` never writes the file.

Durability. Every record is committed before the step that depends on it proceeds: a
``pending`` row before its create is sent, a result before it is yielded. A commit is atomic
whatever instant the process dies at (SIGKILL included). The journal is a rollback journal
kept in place (``journal_mode=PERSIST``), not WAL, and maps no file into memory
(``mmap_size=0``): WAL's shared-memory index is a mapped ``-shm`` file, and a mapped page of a
file made immutable under a running job faults with SIGBUS, which kills the process with no
Python error. Here that is a :class:`JournalError` at the next write. ``synchronous="NORMAL"``
(default) syncs nothing per commit: every commit is in the operating system's cache when it
returns, which survives any death of the process; a power loss or kernel crash may lose the
last commits or leave the file unreadable. That is harmless because keys are deterministic: the
next run (with a new journal file if need be, under the same job name) re-sends under the same
keys and the server replays what it ran, within its key retention. ``"FULL"`` syncs every commit
to disk (1 to 13 ms each here) for a journal that must itself survive a power cut. Several processes may open the same file; a write waits for another
holding it up to ``timeout`` seconds. Each write first checks that the file is still the one
opened (not deleted, replaced or overwritten): if not, it raises :class:`JournalError` (and
logs a warning the first time) instead of writing into a file nobody will read.

Key retention. The server remembers an idempotency key only for its retention window
(``idempotency_retention``, 24 h by default). Every row records when its current key was first
claimed (``key_at``); a ``pending`` row older than the window is re-sent with its key on
resume (and a server past its window runs and bills it again): the journal warns, and
``sail-lite jobs status`` counts them.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import secrets
import sqlite3
import stat
import tempfile
import threading
import time
import urllib.parse
from dataclasses import dataclass
from typing import Any, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple

from .._checks import DEFAULT_IDEMPOTENCY_RETENTION
from ..errors import InvalidRequestError
from .codec import (
    JournalError,
    JournalMismatchError,
    at_rest,
    canonical_json,
    check_job_name,
    digest,
    encode_error,
    encode_result,
    format_duration,
    load_json,
    sent_key,
)

__all__ = [
    "APPLICATION_ID",
    "Journal",
    "JournalEntry",
    "JournalRow",
    "MemoryOccurrences",
    "PRIVATE_MODE",
    "SCHEMA_VERSION",
    "STATUSES",
    "UNFINISHED",
    "check_retention",
]

_logger = logging.getLogger(__name__)

SCHEMA_VERSION = "1"
#: ``PRAGMA application_id`` of every journal ("SAIL"), and ``PRAGMA user_version`` (the schema).
APPLICATION_ID = 0x5341494C
USER_VERSION = 1
PRIVATE_MODE = 0o600
STATUSES = ("pending", "accepted", "completed", "failed", "cancelled")
UNFINISHED = ("pending", "accepted", "cancelled")
_SQLITE_MAGIC = b"SQLite format 3\x00"
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


# --- rows ---------------------------------------------------------------------------------------


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


def _row(values: Sequence[Any]) -> JournalRow:
    return JournalRow(*values)


# --- arguments ----------------------------------------------------------------------------------


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


def _check_timeout(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        ok = False
    else:
        ok = 0 <= value <= 86400
    if not ok:
        raise InvalidRequestError(
            "timeout must be a number of seconds from 0 to 86400 (how long a write waits for "
            f"another process holding the file), got {value!r}"
        )
    return float(value)


def _check_path(path: Any) -> str:
    if isinstance(path, os.PathLike):
        path = os.fspath(path)
    if not isinstance(path, str) or not path:
        raise InvalidRequestError(
            f"a journal path must be a non-empty str or os.PathLike, got {type(path).__name__}"
        )
    if "\0" in path:
        raise InvalidRequestError(f"a journal path cannot hold a NUL character: {path!r}")
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidRequestError(f"a journal path must be valid text, got {path!r}") from None
    return path


# --- the file -----------------------------------------------------------------------------------


def _refuse(path: str, why: str) -> JournalError:
    return JournalError(f"{path!r} is not a sail_lite journal: {why}; it was left as it was")


def _read_header(path: str) -> bytes:
    """The first 100 bytes of the file at ``path`` (after symlinks), checked to be a regular file."""
    try:
        link = os.lstat(path)
    except FileNotFoundError:
        return b""
    try:
        target = os.stat(path)
    except FileNotFoundError:
        raise _refuse(path, "it is a symlink to nothing") from None
    if not stat.S_ISREG(target.st_mode):
        kind = "a folder" if stat.S_ISDIR(target.st_mode) else "not a regular file"
        raise _refuse(path, kind)
    with open(path, "rb") as handle:
        header = handle.read(100)
    if not header:
        extra = " (a symlink to an empty file)" if stat.S_ISLNK(link.st_mode) else ""
        raise _refuse(path, "the file is empty" + extra)
    return header


def _legacy_journal(path: str) -> bool:
    """A journal written before journals carried an application id: its tables, read without writing."""
    uri = "file:" + urllib.parse.quote(os.path.abspath(path)) + "?immutable=1"
    try:
        db = sqlite3.connect(uri, uri=True)
        try:
            tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
            if "meta" not in tables:
                return False
            meta = dict(db.execute("SELECT name, value FROM meta").fetchall())
        finally:
            db.close()
    except sqlite3.Error:
        return False
    if meta.get("schema") != SCHEMA_VERSION:
        raise _refuse(
            path,
            f"it has schema {meta.get('schema')!r} and this sail_lite reads schema {SCHEMA_VERSION}",
        )
    return "journal_id" in meta and {"jobs", "requests"} <= tables


def inspect_file(path: str) -> str:
    """``"missing"``, ``"journal"`` or ``"legacy"`` (a journal from before application ids).

    Reads only. Anything else raises :class:`JournalError` (and the file is not touched).
    """
    header = _read_header(path)
    if not header:
        return "missing"
    if len(header) < 100 or not header.startswith(_SQLITE_MAGIC):
        raise _refuse(path, "it is not an SQLite database")
    application_id = int.from_bytes(header[68:72], "big")
    user_version = int.from_bytes(header[60:64], "big")
    if application_id == APPLICATION_ID:
        if user_version != USER_VERSION:
            raise JournalError(
                f"the journal {path!r} has schema {user_version}; this sail_lite reads schema "
                f"{USER_VERSION} (written by a newer sail_lite?)"
            )
        return "journal"
    if application_id == 0 and user_version == 0 and _legacy_journal(path):
        return "legacy"
    raise _refuse(path, "it is another program's SQLite database")


def _build(db: sqlite3.Connection) -> None:
    db.executescript(_SCHEMA)
    db.execute(f"PRAGMA application_id = {APPLICATION_ID}")
    db.execute(f"PRAGMA user_version = {USER_VERSION}")
    db.executemany(
        "INSERT INTO meta (name, value) VALUES (?, ?)",
        [("schema", SCHEMA_VERSION), ("journal_id", secrets.token_hex(8))],
    )
    db.commit()


def create_file(path: str) -> None:
    """Create a journal at ``path``, 0600, atomically; a file that appeared meanwhile is kept."""
    folder = os.path.dirname(os.path.abspath(path))
    fd, temporary = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", dir=folder)
    try:
        os.fchmod(fd, PRIVATE_MODE)
        os.close(fd)
        db = sqlite3.connect(temporary)
        try:
            _build(db)
        finally:
            db.close()
        try:
            os.link(temporary, path)
        except FileExistsError:
            pass  # created by another process meanwhile: it is inspected like any existing file
    finally:
        os.unlink(temporary)


def _make_private(path: str) -> None:
    """An older journal (or its -wal) found with wider permissions is made 0600."""
    for suffix in ("", "-wal", "-shm", "-journal"):
        try:
            if stat.S_IMODE(os.stat(path + suffix).st_mode) != PRIVATE_MODE:
                os.chmod(path + suffix, PRIVATE_MODE)
        except FileNotFoundError:
            pass


def _stamp_legacy(db: sqlite3.Connection) -> None:
    """Bring a legacy journal to this schema: the key_at column, then the application id."""
    columns = {row[1] for row in db.execute("PRAGMA table_info(requests)")}
    db.execute("BEGIN IMMEDIATE")
    try:
        if "key_at" not in columns:
            db.execute("ALTER TABLE requests ADD COLUMN key_at REAL")
        db.execute(f"PRAGMA application_id = {APPLICATION_ID}")
        db.execute(f"PRAGMA user_version = {USER_VERSION}")
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise


def _connect_writer(path: str, timeout: float, synchronous: str, state: str) -> sqlite3.Connection:
    db = sqlite3.connect(path, timeout=timeout, isolation_level=None, check_same_thread=False)
    try:
        # No memory-mapped file at all: neither mmap I/O nor WAL's shared-memory -shm index, whose
        # pages fault with SIGBUS once the file is made immutable under us. A rollback journal kept
        # in place (PERSIST) still commits atomically, whatever instant the process dies at.
        db.execute("PRAGMA mmap_size = 0")
        db.execute("PRAGMA journal_mode = PERSIST")
        # NORMAL: no sync per commit (a rollback journal's NORMAL syncs twice, 1-13 ms here).
        db.execute("PRAGMA synchronous = " + ("OFF" if synchronous == "NORMAL" else "FULL"))
        if state == "legacy":
            _stamp_legacy(db)
        return db
    except BaseException:
        db.close()
        raise


def _connect_reader(path: str, timeout: float) -> sqlite3.Connection:
    """A read-only connection (``mode=ro``): it never writes the file."""
    uri = "file:" + urllib.parse.quote(os.path.abspath(path)) + "?mode=ro"
    db = sqlite3.connect(uri, uri=True, timeout=timeout, check_same_thread=False)
    db.execute("PRAGMA mmap_size = 0")
    return db


class _FileWatch:
    """Notices, before each write, that the journal file was deleted, replaced or overwritten."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._fd = os.open(path, os.O_RDONLY)
        info = os.fstat(self._fd)
        self._identity = (info.st_dev, info.st_ino)
        self._warned = False

    def problem(self) -> Optional[str]:
        try:
            info = os.stat(self.path)
        except OSError:
            return "was deleted"
        if (info.st_dev, info.st_ino) != self._identity:
            return "was replaced by another file"
        header = os.pread(self._fd, 100, 0)
        if not header.startswith(_SQLITE_MAGIC) or header[68:72] != APPLICATION_ID.to_bytes(
            4, "big"
        ):
            return "was overwritten"
        return None

    def check(self) -> None:
        why = self.problem()
        if why is None:
            return
        message = (
            f"the journal {self.path!r} {why} while in use: records from now on would not be "
            "durable, so none is written (results already returned are not affected)"
        )
        if not self._warned:
            self._warned = True
            _logger.warning("%s", message)
        raise JournalError(message)

    def close(self) -> None:
        os.close(self._fd)


# --- claiming, one entry at a time (inside the caller's transaction) ---------------------------

_ROW_COLUMNS = (
    "key, job, position, fingerprint, attempt, status, response_id, item, result, error, "
    "COALESCE(key_at, created_at)"
)
_LEGACY_ROW_COLUMNS = _ROW_COLUMNS.replace("COALESCE(key_at, created_at)", "created_at")


def _insert(db: Any, job: str, entry: JournalEntry, now: float, append: bool) -> JournalRow:
    position = entry.position
    if append:
        total = db.execute("SELECT total FROM jobs WHERE job = ?", (job,)).fetchone()
        position = int(total[0] or 0) if total is not None else 0
        db.execute(
            "UPDATE jobs SET total = ?, updated_at = ? WHERE job = ?", (position + 1, now, job)
        )
    db.execute(
        "INSERT INTO requests (key, job, position, fingerprint, attempt, status, item, "
        "created_at, updated_at, key_at) VALUES (?, ?, ?, ?, 0, 'pending', ?, ?, ?, ?)",
        (entry.key, job, position, entry.fingerprint, at_rest(entry.item_json), now, now, now),
    )
    return JournalRow(
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


def _rearm(db: Any, row: JournalRow, entry: JournalEntry, now: float) -> JournalRow:
    attempt = row.attempt + 1
    db.execute(
        "UPDATE requests SET attempt = ?, status = 'pending', response_id = NULL, result = NULL,"
        " error = NULL, error_type = NULL, error_code = NULL, item = COALESCE(?, item), "
        "updated_at = ?, key_at = ? WHERE key = ?",
        (attempt, at_rest(entry.item_json), now, now, entry.key),
    )
    return JournalRow(
        row.key,
        row.job,
        row.position,
        row.fingerprint,
        attempt,
        "pending",
        item_json=entry.item_json or row.item_json,
        key_at=now,
        fresh=True,
    )


def _mismatch(job: str, row: JournalRow, entry: JournalEntry, append: bool) -> JournalMismatchError:
    position = row.position if append else entry.position
    return JournalMismatchError(
        f"idempotency key {entry.key} (job {job!r}, input position {position}) was recorded for "
        "a different request: the prompt or a parameter changed. Use a new job name (or "
        "journal file) for a new experiment",
        key=entry.key,
        job=job,
        recorded=row.fingerprint,
        given=entry.fingerprint,
    )


def _params_mismatch(path: str, job: str, found: Sequence[Any], kind: str, params_json: str) -> Any:
    # Name what differs, never the values: a parameter may hold a signed URL.
    recorded = load_json(found[1], f"the params of job {job!r}")
    given = json.loads(params_json)
    if found[0] != kind:
        what = f"kind ({found[0]} then {kind})"
    elif isinstance(recorded, dict):
        changed = sorted(
            name
            for name in set(recorded) | set(given)
            if recorded.get(name, _MISSING) != given.get(name, _MISSING)
        )
        what = "parameters " + ", ".join(changed)
    else:
        what = "parameters"
    return JournalMismatchError(
        f"job {job!r} in {path} was recorded with other {what}. Use a new job name (or journal "
        "file) for a new experiment, or the recorded parameters to resume it",
        job=job,
        recorded=digest(found[1]),
        given=digest(params_json),
    )


# --- the journal ---------------------------------------------------------------------------------


class _JournalFile:
    """The open journal file: opening and checking it, transactions, reads, occurrence counters
    (the base of :class:`Journal`, which documents the arguments)."""

    def __init__(
        self,
        path: os.PathLike[str] | str,
        *,
        synchronous: str = "NORMAL",
        timeout: float = 30.0,
        idempotency_retention: float = DEFAULT_IDEMPOTENCY_RETENTION,
        clock: Any = time.time,
        read_only: bool = False,
        create: bool = True,
    ) -> None:
        if synchronous not in ("NORMAL", "FULL"):
            raise InvalidRequestError(
                f"synchronous must be 'NORMAL' or 'FULL', got {synchronous!r}"
            )
        timeout = _check_timeout(timeout)
        self.idempotency_retention = check_retention(idempotency_retention)
        self.path = _check_path(path)
        self.read_only = bool(read_only)
        self._create = bool(create) and not self.read_only
        self._clock = clock
        self._begun: Dict[str, Tuple[str, str]] = {}  # job -> (kind, params JSON) checked here
        self._warned_late: set = set()  # jobs whose late re-sends were already warned about
        self._submit_occurrences: Optional[_OccurrenceTable] = None
        self._lock = threading.RLock()
        self._closed = False
        self._temp_tables = 0
        self._watch: Optional[_FileWatch] = None
        self._open(timeout, synchronous)

    def _open(self, timeout: float, synchronous: str) -> None:
        try:
            state = inspect_file(self.path)
            if state == "missing" and not self._create:
                raise JournalError(f"no journal at {self.path!r}")
            if state == "missing":
                create_file(self.path)
                state = inspect_file(self.path)
            if self.read_only:
                self._db = _connect_reader(self.path, timeout)
            else:
                _make_private(self.path)
                self._db = _connect_writer(self.path, timeout, synchronous, state)
                self._watch = _FileWatch(self.path)
            columns = {row[1] for row in self._db.execute("PRAGMA table_info(requests)")}
            self._columns = _ROW_COLUMNS if "key_at" in columns else _LEGACY_ROW_COLUMNS
            meta = dict(self._db.execute("SELECT name, value FROM meta").fetchall())
        except sqlite3.Error as exc:
            self.close()
            raise JournalError(f"cannot open the journal {self.path!r}: {exc}") from None
        except OSError as exc:
            self.close()
            raise JournalError(
                f"cannot open the journal {self.path!r}: {exc.strerror or exc}"
            ) from None
        except BaseException:
            self.close()
            raise
        self.journal_id = str(meta.get("journal_id") or "")

    def __repr__(self) -> str:
        return f"Journal({self.path!r})"

    def __reduce__(self) -> Any:
        raise TypeError(
            "a Journal holds an open database: open Journal(path) in each process instead"
        )

    # -- lifecycle ------------------------------------------------------------------------------

    def close(self) -> None:
        """Close the file (idempotent). Every record written so far is already committed."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            db = getattr(self, "_db", None)
            if db is not None:
                try:
                    db.close()
                except sqlite3.Error:  # a file gone bad under us: nothing more to save
                    pass
            if self._watch is not None:
                self._watch.close()

    def __enter__(self) -> _JournalFile:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    @property
    def default_job(self) -> str:
        """The job name used when none is given: unique to this journal file."""
        return "job-" + self.journal_id

    # -- transactions ---------------------------------------------------------------------------

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """One write transaction, under the lock: committed on success, rolled back on error."""
        with self._lock:
            if self._closed:
                raise JournalError(f"the journal {self.path!r} is closed")
            if self.read_only:
                raise JournalError(f"the journal {self.path!r} is open read-only")
            if self._watch is not None:
                self._watch.check()
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
                self._db.execute("COMMIT")
            except BaseException:
                if self._db.in_transaction:
                    try:
                        self._db.execute("ROLLBACK")
                    except sqlite3.Error:  # the file went bad under us: the error above says so
                        pass
                raise

    def _write(self, what: str, sql: str, args: Sequence[Any]) -> int:
        try:
            with self._transaction() as db:
                return db.execute(sql, args).rowcount
        except sqlite3.Error as exc:
            raise JournalError(f"could not record {what} in {self.path!r}: {exc}") from None

    def _read(self, sql: str, args: Sequence[Any] = ()) -> List[Any]:
        with self._lock:
            if self._closed:
                raise JournalError(f"the journal {self.path!r} is closed")
            try:
                return self._db.execute(sql, args).fetchall()
            except sqlite3.Error as exc:
                raise JournalError(f"could not read the journal {self.path!r}: {exc}") from None

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
        since = "key_at" if self._columns == _ROW_COLUMNS else "NULL"
        sql = f"SELECT COUNT(*) FROM requests WHERE status = 'pending' AND COALESCE({since}, created_at) <= ?"
        args: List[Any] = [self._clock() - self.idempotency_retention]
        if job is not None:
            sql += " AND job = ?"
            args.append(job)
        return int(self._read(sql, args)[0][0])

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

    # -- per-run occurrence counting ------------------------------------------------------------

    def occurrence_counter(self) -> _OccurrenceTable:
        """A per-run counter of equal items, kept in a temporary table (memory stays flat on huge inputs)."""
        with self._lock:
            self._temp_tables += 1
            name = f"run_occurrences_{self._temp_tables}"
            self._db.execute(
                f"CREATE TEMP TABLE {name} (identity TEXT PRIMARY KEY, n INTEGER NOT NULL)"
            )
        return _OccurrenceTable(self, name)

    def count_occurrence(self, table: str, identity_digest: str) -> int:
        """Bump and return the count of ``identity_digest`` in ``table`` (an :meth:`occurrence_counter`'s)."""
        with self._lock:
            if self._closed:
                raise JournalError(f"the journal {self.path!r} is closed")
            # RETURNING needs SQLite 3.35; an upsert then a read works on every SQLite Python ships with.
            self._db.execute(
                f"INSERT INTO {table} (identity, n) VALUES (?, 0) "
                "ON CONFLICT(identity) DO UPDATE SET n = n + 1",
                (identity_digest,),
            )
            found = self._db.execute(
                f"SELECT n FROM {table} WHERE identity = ?", (identity_digest,)
            )
            return int(found.fetchone()[0])

    def drop_counter(self, table: str) -> None:
        """Drop an :meth:`occurrence_counter`'s table (nothing to do once closed)."""
        with self._lock:
            if not self._closed:
                self._db.execute(f"DROP TABLE IF EXISTS temp.{table}")


class Journal(_JournalFile):
    """A durable, thread-safe record of a pipeline's requests in one SQLite file (see the module docstring).

    ``Journal(path)`` creates the journal when ``path`` is missing (its folder must exist) or
    opens an existing one after checking it is a journal (else :class:`JournalError`, the file
    untouched). ``read_only`` opens an existing journal without ever writing it; ``create=False``
    refuses a missing one.
    ``synchronous`` is ``"NORMAL"`` (default: survives SIGKILL) or ``"FULL"`` (fsync per
    commit). ``timeout`` (seconds, 0 to 86400) is how long a write waits for another process
    holding the file. ``idempotency_retention`` is how long (seconds) the server is taken to
    remember a key. ``clock`` (wall seconds) stamps the records. Bad arguments raise
    :class:`~sail_lite.errors.InvalidRequestError` at the call. Use it as a context manager or
    call :meth:`close`. Not picklable: open one per process.
    """

    # -- jobs -----------------------------------------------------------------------------------

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
                elif found[0] != kind or found[1] != at_rest(params_json):
                    raise _params_mismatch(self.path, job, found, kind, params_json)
                else:
                    db.execute(
                        "UPDATE jobs SET total = COALESCE(?, total), updated_at = ? WHERE job = ?",
                        (total, now, job),
                    )
                self._begun[job] = (kind, params_json)
                return params_json
        except sqlite3.Error as exc:
            raise JournalError(f"could not record job {job!r} in {self.path!r}: {exc}") from None

    def job(self, job: str) -> Optional[Dict[str, Any]]:
        """``{"job", "kind", "params", "total"}`` as recorded, or None.

        Raises :class:`JournalError` naming the job when its record is unreadable (params that
        are not a JSON object, a total that is not a count).
        """
        found = self._read("SELECT kind, params, total FROM jobs WHERE job = ?", (job,))
        if not found:
            return None
        kind, params_text, total = found[0]
        params = load_json(params_text, f"the params of job {job!r} in {self.path}")
        if not isinstance(params, dict) or not isinstance(kind, str):
            raise JournalError(
                f"the record of job {job!r} in {self.path} is unreadable: its params are not a "
                "JSON object (was the file edited?)"
            )
        if total is not None and (isinstance(total, bool) or not isinstance(total, int)):
            raise JournalError(f"the total of job {job!r} in {self.path} is not a count")
        return {"job": job, "kind": kind, "params": params, "total": total}

    def jobs(self) -> List[str]:
        """Every job name recorded, oldest first."""
        return [str(r[0]) for r in self._read("SELECT job FROM jobs ORDER BY created_at, job")]

    # -- claiming requests ----------------------------------------------------------------------

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
                        f"SELECT {self._columns} FROM requests WHERE key = ?", (entry.key,)
                    ).fetchone()
                    if found is None:
                        rows.append(_insert(db, job, entry, now, append))
                        continue
                    row = _row(found)
                    if row.fingerprint != entry.fingerprint or row.job != job:
                        raise _mismatch(job, row, entry, append)
                    if row.status == "cancelled" or (retry_failed and row.status == "failed"):
                        rows.append(_rearm(db, row, entry, now))
                        continue
                    late += self.past_retention(row, now)
                    rows.append(row)
        except sqlite3.Error as exc:
            raise JournalError(f"could not claim requests in {self.path!r}: {exc}") from None
        if late:
            self._warn_late(job, late)
        return rows

    # -- recording progress ---------------------------------------------------------------------

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

    def _error_args(self, exc: BaseException) -> Tuple[Any, ...]:
        code = getattr(exc, "code", None)
        response_id = getattr(exc, "response_id", None)
        return (
            at_rest(encode_error(exc)),
            type(exc).__name__,
            at_rest(code) if isinstance(code, str) else None,
            response_id if isinstance(response_id, str) else None,
        )

    def record_failure(self, key: str, exc: BaseException) -> None:
        """The request failed for good: store the error (a re-run raises it again, or retries with a new key)."""
        self._write(
            "the failure of " + key,
            "UPDATE requests SET status = 'failed', error = ?, error_type = ?, error_code = ?, "
            "response_id = COALESCE(?, response_id), updated_at = ? WHERE key = ?",
            self._error_args(exc) + (self._clock(), key),
        )

    def record_transient(self, key: str, exc: BaseException) -> None:
        """A retryable error: note it (``jobs status`` shows it) and keep the request resumable."""
        error, kind, code, response_id = self._error_args(exc)
        self._write(
            "the error of " + key,
            "UPDATE requests SET error = ?, error_type = ?, error_code = ?, "
            "status = CASE WHEN ? IS NOT NULL AND status = 'pending' THEN 'accepted' ELSE status END, "
            "response_id = COALESCE(?, response_id), updated_at = ? "
            "WHERE key = ? AND status IN ('pending', 'accepted')",
            (error, kind, code, response_id, response_id, self._clock(), key),
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

    # -- reading --------------------------------------------------------------------------------

    def row(self, key: str) -> Optional[JournalRow]:
        """The row of ``key``, or None."""
        found = self._read(f"SELECT {self._columns} FROM requests WHERE key = ?", (key,))
        return _row(found[0]) if found else None

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
            found = self._read(
                f"SELECT {self._columns} FROM requests WHERE (position > ? OR (position = ? AND "
                f"key > ?)){clause} ORDER BY position, key LIMIT ?",
                [last[0], last[0], last[1]] + args + [batch],
            )
            if not found:
                return
            for values in found:
                yield _row(values)
            last = (found[-1][2], found[-1][0])

    def counts(self, job: Optional[str] = None) -> Dict[str, int]:
        """Requests by status (every status present, zeros included)."""
        where = " WHERE job = ?" if job else ""
        found = dict(
            self._read(
                f"SELECT status, COUNT(*) FROM requests{where} GROUP BY status",
                (job,) if job else (),
            )
        )
        return {status: int(found.get(status, 0)) for status in STATUSES}

    def failure_codes(self, job: str) -> Dict[str, int]:
        """``{code (or error type): n}`` of ``job``'s failed requests, most frequent first."""
        found = self._read(
            "SELECT COALESCE(error_code, error_type), COUNT(*) FROM requests WHERE job = ? AND "
            "status = 'failed' GROUP BY 1 ORDER BY 2 DESC",
            (job,),
        )
        return {str(code): int(n) for code, n in found}

    def transient_errors(self, job: str) -> Dict[str, int]:
        """``{error type: n}`` of the retryable errors last seen on ``job``'s unfinished requests."""
        found = self._read(
            "SELECT error_type, COUNT(*) FROM requests WHERE job = ? AND status IN "
            "('pending', 'accepted') AND error_type IS NOT NULL GROUP BY 1 ORDER BY 2 DESC",
            (job,),
        )
        return {str(kind): int(n) for kind, n in found}

    def failed_rows(self, job: str, limit: int) -> List[JournalRow]:
        """The first ``limit`` failed rows of ``job``, in input order."""
        found = self._read(
            f"SELECT {self._columns} FROM requests WHERE job = ? AND status = 'failed' "
            "ORDER BY position LIMIT ?",
            (job, limit),
        )
        return [_row(values) for values in found]


class _OccurrenceTable:
    def __init__(self, journal: _JournalFile, name: str) -> None:
        self._journal = journal
        self._name = name

    def next(self, identity_digest: str) -> int:
        return self._journal.count_occurrence(self._name, identity_digest)

    def close(self) -> None:
        self._journal.drop_counter(self._name)


class MemoryOccurrences:
    """The occurrence counter without a journal: a dict (grows with the number of distinct items)."""

    def __init__(self) -> None:
        self._seen: Dict[str, int] = {}

    def next(self, identity_digest: str) -> int:
        n = self._seen.get(identity_digest, -1) + 1
        self._seen[identity_digest] = n
        return n

    def close(self) -> None:
        self._seen.clear()
