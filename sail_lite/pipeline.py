"""The one map engine behind every ``map``: bounded, ordered, lazy, and resumable from a :class:`Journal`.

:func:`run_map` takes a ``submit(item, idempotency_key) -> Future`` and an
``attach(response_id) -> Future`` and streams results in input order:

- input is read lazily and at most ``max_in_flight`` requests are in flight,
  with at most ``max_buffered`` finished results held behind a slow earlier
  one, so memory stays flat for a generator of millions of items;
- with a ``job`` name every item gets a deterministic idempotency key (job,
  item content, occurrence among equal items): re-running the job, even on
  re-ordered input, re-sends the same keys and the server replays instead of
  billing again;
- with a ``journal`` a re-run resumes: finished items come from the journal
  with no request, in-flight ones are re-attached by response id, ones that
  may have reached the server are re-sent with the same key, the rest are
  sent;
- a failure is raised at its place in the order, after every earlier result
  (or yielded as the exception object with ``return_exceptions=True``, so a
  ten-million-item job does not stop for one bad prompt);
- stopping early (Ctrl-C, ``break``, an exception in the loop body, a raised
  failure) follows ``on_interrupt``: ``"leave"`` (the default with a journal:
  the requests in flight keep running on the server, their journal rows stay
  ``pending``/``accepted``, and a re-run collects them without paying again)
  or ``"cancel"`` (the default without a journal, where nobody could ever
  collect them: each is cancelled on the server and journaled ``cancelled``,
  so a re-run sends it again under a new attempt key). One flag covers every
  early stop because a generator cannot tell a Ctrl-C in the caller's loop
  body from a ``break``: both just close it.

:meth:`Tokens.map` and :meth:`Responses.map` (also as :func:`map_tokens` and
:func:`map_responses`, which take a :class:`~sail_lite.Client`) bind the engine
to a client (they record the job's kind and parameters, so ``sail-lite jobs
resume FILE`` can finish a job without its script).
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
from collections import deque
from concurrent.futures import Future, InvalidStateError
from dataclasses import dataclass
from typing import (
    Any,
    Callable,
    Deque,
    Dict,
    Iterable,
    Iterator,
    List,
    Mapping,
    Optional,
    Sequence,
    Tuple,
    Union,
)

from ._future import ResponseFuture
from ._redact import redact_secrets
from .errors import InvalidRequestError, NotFoundError, ResponseCancelledError, SailError
from .journal import (
    Journal,
    JournalEntry,
    JournalError,
    JournalRow,
    _MemoryOccurrences,
    canonical_json,
    check_job_name,
    decode_error,
    decode_result,
    identity_digest,
    is_terminal_failure,
    key_from_digest,
    request_fingerprint,
)

__all__ = [
    "Progress",
    "run_map",
    "map_tokens",
    "map_responses",
    "submit_request",
    "resume_rows",
    "ON_INTERRUPT",
]

_logger = logging.getLogger(__name__)

ON_INTERRUPT = ("cancel", "leave")
Submit = Callable[[Any, Optional[str]], "Future[Any]"]
Attach = Callable[[str], "Future[Any]"]


@dataclass(frozen=True)
class Progress:
    """A snapshot for a progress display.

    ``done`` counts results delivered (``failed`` of them errors;
    ``from_journal`` of them read back from the journal without a request),
    ``in_flight`` the requests running now, ``total`` the input's length when
    known. ``rate`` is results per second over this run (requests only, not
    journal reads); ``eta`` the seconds left at that rate (None when unknown).
    """

    done: int
    failed: int
    in_flight: int
    total: Optional[int]
    from_journal: int
    elapsed: float
    rate: float
    eta: Optional[float]


class _Slot:
    """One input item on its way through the window."""

    __slots__ = (
        "position",
        "item",
        "key",
        "row",
        "entry",
        "future",
        "ready",
        "result",
        "error",
        "fatal",
        "attached",
        "resubmit",
    )

    def __init__(
        self, position: int, item: Any, key: Optional[str], row: Optional[JournalRow]
    ) -> None:
        self.position = position
        self.item = item
        self.key = key  # the base key (journal primary key); the sent key adds the attempt
        self.row = row
        self.entry: Optional[JournalEntry] = None
        self.future: Optional[Future[Any]] = None
        self.ready = False
        self.result: Any = None
        self.error: Optional[BaseException] = None
        self.fatal = False  # a journal failure: always raised, even with return_exceptions
        self.attached = False
        self.resubmit = False


class _Prepared:
    __slots__ = ("position", "item", "entry", "error")

    def __init__(
        self,
        position: int,
        item: Any,
        entry: Optional[JournalEntry],
        error: Optional[BaseException],
    ):
        self.position, self.item, self.entry, self.error = position, item, entry, error


def _positive(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidRequestError(f"{name} must be an int >= 1, got {value!r}")
    return value


def run_map(
    items: Iterable[Any],
    *,
    submit: Submit,
    attach: Optional[Attach] = None,
    journal: Optional[Journal] = None,
    job: Optional[str] = None,
    kind: str = "custom",
    params: Optional[Mapping[str, Any]] = None,
    identity: Optional[Callable[[Any], Any]] = None,
    max_in_flight: int = 64,
    max_buffered: Optional[int] = None,
    progress: Optional[Callable[[Progress], None]] = None,
    progress_interval: float = 0.5,
    on_interrupt: Optional[str] = None,
    return_exceptions: bool = False,
    retry_failed: bool = False,
    total: Optional[int] = None,
    clock: Callable[[], float] = time.monotonic,
) -> Iterator[Any]:
    """Run ``submit`` over ``items`` and yield the results in input order (see the module docstring).

    - ``submit(item, idempotency_key)`` starts one request and returns a
      future of its result at once (``idempotency_key`` is None when there
      is neither ``job`` nor ``journal``: the client mints one). If the
      future has ``add_accepted_callback`` (a :class:`ResponseFuture`), the
      response id is journaled as soon as the create is accepted.
    - ``attach(response_id)`` re-attaches to a journaled response; without
      it, an accepted item is re-sent with its key (the server replays it).
    - ``journal`` and ``job``: see the module docstring. Without ``job``, a
      journal uses its own :attr:`Journal.default_job`. ``kind`` and
      ``params`` (JSON) are recorded with the job and folded into every
      request's fingerprint: a later run with other parameters raises
      :class:`~sail_lite.journal.JournalMismatchError`. Items must be JSON
      when journaled or keyed. ``identity(item)`` overrides what names an
      item in its key (default: the item itself), e.g. a row id: then a
      changed prompt under the same id is a mismatch, not a new request.
    - ``max_in_flight`` requests at most run at once; ``max_buffered``
      (default ``4 * max_in_flight``) finished results at most wait behind
      a slower earlier one.
    - ``progress(Progress)`` is called at most every ``progress_interval``
      seconds of ``clock`` and once at the end.
    - ``on_interrupt``: what an early stop (Ctrl-C, ``break``, an exception,
      a raised failure) does to the requests in flight: ``"leave"`` them
      running, resumable (default with a journal) or ``"cancel"`` them on
      the server (default without).
    - ``return_exceptions``: yield a failed item's exception instead of
      raising it (journal errors are always raised).
    - ``retry_failed``: items journaled as failed are sent again under a new
      attempt key (else their recorded error is raised again, no request).

    Arguments are checked (and the job recorded) when this is called; the
    requests start at the first ``next()``.
    """
    _positive("max_in_flight", max_in_flight)
    buffered = (
        4 * max_in_flight if max_buffered is None else _positive("max_buffered", max_buffered)
    )
    if on_interrupt is None:
        on_interrupt = "leave" if journal is not None else "cancel"
    if on_interrupt not in ON_INTERRUPT:
        raise InvalidRequestError(f"on_interrupt must be 'cancel' or 'leave', got {on_interrupt!r}")
    if not callable(submit) or (attach is not None and not callable(attach)):
        raise InvalidRequestError("submit (and attach, if given) must be callables")
    if progress_interval < 0:
        raise InvalidRequestError("progress_interval must be >= 0 seconds")
    job = _journal_job(journal, job)
    if total is None:
        try:
            total = len(items)  # type: ignore[arg-type]
        except TypeError:
            total = None
    params_json = canonical_json(dict(params or {}), "params")
    if journal is not None:
        assert job is not None
        params_json = journal.begin_job(job, kind=kind, params=params or {}, total=total)
    prepared = _prepare(items, journal, job, params_json, identity)
    return _run(
        prepared,
        submit=submit,
        attach=attach,
        journal=journal,
        job=job,
        max_in_flight=max_in_flight,
        cap=max_in_flight + buffered,
        progress=progress,
        progress_interval=progress_interval,
        on_interrupt=on_interrupt,
        return_exceptions=return_exceptions,
        retry_failed=retry_failed,
        total=total,
        clock=clock,
    )


def _journal_job(journal: Optional[Journal], job: Optional[str]) -> Optional[str]:
    """The job a map or submit runs under: ``job`` (checked), else the journal's default; the journal checked."""
    if journal is not None and not isinstance(journal, Journal):
        raise InvalidRequestError(
            f"journal must be a sail_lite.Journal (Journal(path)), got {type(journal).__name__}"
        )
    if job is not None:
        return check_job_name(job)
    return journal.default_job if journal is not None else None


def _identity_name(named: Any, what: str) -> str:
    """What names an item in its key when the caller names it: a string as it is, anything else as JSON."""
    return named if isinstance(named, str) else canonical_json(named, what)


def _prepare(
    items: Iterable[Any],
    journal: Optional[Journal],
    job: Optional[str],
    params_json: str,
    identity: Optional[Callable[[Any], Any]],
) -> Iterator[_Prepared]:
    """Each item with its journal entry (key, fingerprint, JSON): lazily, one at a time."""
    if job is None:
        for position, item in enumerate(items):
            yield _Prepared(position, item, None, None)
        return
    occurrences = journal.occurrence_counter() if journal is not None else _MemoryOccurrences()
    try:
        for position, item in enumerate(items):
            try:
                item_json = canonical_json(item, "each item of a keyed or journaled map")
                name = (
                    item_json
                    if identity is None
                    else _identity_name(identity(item), "identity(item)")
                )
            except InvalidRequestError as exc:
                yield _Prepared(position, item, None, exc)
                continue
            digest = identity_digest(job, name)
            key = key_from_digest(job, digest, occurrences.next(digest))
            entry = JournalEntry(
                key,
                request_fingerprint(params_json, item_json),
                position,
                item_json if journal is not None else None,
            )
            yield _Prepared(position, item, entry, None)
    finally:
        occurrences.close()


def _run(
    prepared: Iterator[_Prepared],
    *,
    submit: Submit,
    attach: Optional[Attach],
    journal: Optional[Journal],
    job: Optional[str],
    max_in_flight: int,
    cap: int,
    progress: Optional[Callable[[Progress], None]],
    progress_interval: float,
    on_interrupt: str,
    return_exceptions: bool,
    retry_failed: bool,
    total: Optional[int],
    clock: Callable[[], float],
) -> Iterator[Any]:
    window: Deque[_Slot] = deque()
    events: queue.SimpleQueue[_Slot] = queue.SimpleQueue()
    counters = {"in_flight": 0, "done": 0, "failed": 0, "from_journal": 0, "network_done": 0}
    started = clock()
    last_report = [started - progress_interval]
    exhausted = False

    def report(force: bool = False) -> None:
        if progress is None:
            return
        now = clock()
        if not force and now - last_report[0] < progress_interval:
            return
        last_report[0] = now
        elapsed = max(now - started, 0.0)
        rate = counters["network_done"] / elapsed if elapsed > 0 else 0.0
        eta = None
        if total is not None and rate > 0:
            eta = max(total - counters["done"], 0) / rate
        progress(
            Progress(
                done=counters["done"],
                failed=counters["failed"],
                in_flight=counters["in_flight"],
                total=total,
                from_journal=counters["from_journal"],
                elapsed=elapsed,
                rate=rate,
                eta=eta,
            )
        )

    def finish(slot: _Slot, future: Future[Any]) -> None:
        """Done-callback (any thread): journal the outcome, then wake the main loop."""
        try:
            what, value, row = _record_outcome(
                journal, job, slot.key, slot.entry, future, slot.attached, retry_failed
            )
            if what == "result":
                slot.result = value
            elif what == "error":
                slot.error = value
            else:
                slot.resubmit = True
                if row is not None:
                    slot.row = row
        except BaseException as exc:  # a journal write failed: never yield what is not recorded
            slot.error, slot.fatal = exc, True
        if not slot.resubmit:
            slot.ready = True
        events.put(slot)

    def accepted(slot: _Slot, future: Any) -> None:
        try:
            if journal is not None and slot.key is not None and future.response_id:
                journal.record_accepted(slot.key, future.response_id)
        except BaseException as exc:  # surfaced when the result arrives
            _logger.warning(
                "could not journal response %s: %s", getattr(future, "response_id", None), exc
            )
            slot.error, slot.fatal = exc, True

    def start(slot: _Slot, response_id: Optional[str]) -> None:
        """Send (or re-attach) one slot's request; a synchronous failure fails the slot in order."""
        slot.resubmit = False
        try:
            if response_id is not None and attach is not None:
                slot.attached = True
                future = attach(response_id)
            else:
                slot.attached = False
                key = slot.row.idempotency_key if slot.row is not None else slot.key
                future = submit(slot.item, key)
                if journal is not None and hasattr(future, "add_accepted_callback"):
                    future.add_accepted_callback(lambda f, s=slot: accepted(s, f))
        except Exception as exc:  # bad input raised by submit: a failed future keeps the order
            future = Future()
            future.set_exception(exc)
        slot.future = future
        future.add_done_callback(lambda f, s=slot: finish(s, f))

    def fill() -> None:
        nonlocal exhausted
        while not exhausted:
            space = min(max_in_flight - counters["in_flight"], cap - len(window))
            if space <= 0:
                return
            # With a journal, items are claimed a batch per transaction; without one, each is
            # started as soon as it is read (a slow source never holds back what it already gave).
            take = space if journal is not None else 1
            batch: List[_Prepared] = []
            for prep in prepared:
                batch.append(prep)
                if len(batch) >= take:
                    break
            else:
                exhausted = True
            if not batch:
                return
            keyed = [p for p in batch if p.entry is not None]
            rows: Dict[int, JournalRow] = {}
            if journal is not None and keyed:
                assert job is not None
                claimed = journal.claim(job, [p.entry for p in keyed], retry_failed=retry_failed)
                rows = {p.position: row for p, row in zip(keyed, claimed)}
            for prep in batch:
                row = rows.get(prep.position)
                slot = _Slot(prep.position, prep.item, prep.entry.key if prep.entry else None, row)
                slot.entry = prep.entry
                window.append(slot)
                if prep.error is not None:
                    slot.error, slot.ready = prep.error, True
                elif row is not None and row.status == "completed":
                    slot.result, slot.ready = decode_result(row.result_json or ""), True
                    counters["from_journal"] += 1
                elif row is not None and row.status == "failed":
                    slot.error, slot.ready = decode_error(row.error_json or "{}"), True
                    counters["from_journal"] += 1
                else:
                    counters["in_flight"] += 1
                    start(
                        slot,
                        row.response_id if row is not None and row.status == "accepted" else None,
                    )

    def drain(block: bool) -> None:
        try:
            slot = (
                events.get(timeout=min(progress_interval, 0.5) or 0.05)
                if block
                else events.get_nowait()
            )
        except queue.Empty:
            return
        while True:
            if slot.resubmit:
                start(slot, None)
            else:
                counters["in_flight"] -= 1
                counters["network_done"] += 1
            try:
                slot = events.get_nowait()
            except queue.Empty:
                return

    try:
        while True:
            fill()
            drain(False)
            if not window:
                break
            head = window[0]
            if not head.ready:
                report()
                drain(True)
                continue
            window.popleft()
            counters["done"] += 1
            if head.error is not None:
                counters["failed"] += 1
                report()
                if return_exceptions and not head.fatal:
                    yield head.error
                    continue
                raise head.error
            report()
            yield head.result
        report(force=True)
    finally:
        # Any early stop lands here: Ctrl-C (in our wait, or in the caller's loop body, which we only see
        # as the generator being closed), a break, an exception, a raised failure.
        if on_interrupt == "cancel":
            for slot in window:
                if slot.future is not None and not slot.future.done():
                    slot.future.cancel()  # cancels on the server; the callback journals "cancelled"
        prepared.close()  # type: ignore[attr-defined]


def _record_outcome(
    journal: Optional[Journal],
    job: Optional[str],
    key: Optional[str],
    entry: Optional[JournalEntry],
    future: Future[Any],
    attached: bool,
    retry_failed: bool,
) -> Tuple[str, Any, Optional[JournalRow]]:
    """Journal one finished request; what to do next: ``("result", value, None)``, ``("error", exc, None)``, or
    ``("resend", None, row)`` (send the create again, with ``row``'s key when a new attempt was claimed).

    Shared by :func:`run_map` and :func:`submit_request`: one definition of what each outcome means.
    """
    recording = journal is not None and key is not None
    if future.cancelled():
        if recording:
            journal.record_cancelled(key)  # type: ignore[union-attr,arg-type]
        return "error", SailError("request cancelled"), None
    exc = future.exception()
    if exc is None:
        result = future.result()
        if recording:
            journal.record_result(
                key,
                result,
                getattr(result, "response_id", None)  # type: ignore[union-attr,arg-type]
                or getattr(future, "response_id", None),
            )
        return "result", result, None
    if attached and isinstance(exc, NotFoundError):
        # The server forgot the response: send the create again with the same key.
        if recording:
            journal.forget_response(key)  # type: ignore[union-attr,arg-type]
        return "resend", None, None
    if attached and isinstance(exc, ResponseCancelledError) and recording and entry is not None:
        # A response left behind by a run that cancelled it (e.g. Ctrl-C with "cancel" whose journal
        # closed first) is not this item's result: send it again under the next attempt.
        journal.record_cancelled(key)  # type: ignore[union-attr,arg-type]
        return "resend", None, journal.claim(job, [entry], retry_failed=retry_failed)[0]  # type: ignore
    if recording:
        if is_terminal_failure(exc):
            journal.record_failure(key, exc)  # type: ignore[union-attr,arg-type]
        else:
            journal.record_transient(key, exc)  # type: ignore[union-attr,arg-type]
    return "error", exc, None


# --- one request at a time: submit(..., journal=, job=) ----------------------------------------------------------


def submit_request(
    body: Mapping[str, Any],
    *,
    kind: str,
    send: Callable[[str], Future[Any]],
    attach: Attach,
    journal: Optional[Journal] = None,
    job: Optional[str] = None,
    identity: Any = None,
    occurrence: Optional[int] = None,
    retry_failed: bool = False,
    convert: Optional[Callable[[Any], Any]] = None,
) -> ResponseFuture:
    """One journaled (or job-keyed) request, as ``submit(..., journal=, job=)`` makes it; returns at once.

    ``body`` is the request's wire body: with signed-URL queries redacted it
    is the recorded item, its fingerprint and (unless ``identity`` names the
    request, e.g. a row id) what its key derives from, together with ``job``
    and ``occurrence``. ``send(idempotency_key)`` starts the create and
    ``attach(response_id)`` re-attaches, each returning a future.
    ``occurrence`` defaults, with a journal, to the journal's count of equal
    requests it submitted before (the k-th equal submit through one
    :class:`Journal` object is occurrence k, as the k-th equal item of one
    ``map``); without a journal it must be given. ``convert`` maps the
    journaled result to what the caller gets.

    With a journal, the row (key, fingerprint, item) is committed before the
    create is sent, the response id as soon as it is accepted (before the
    future's accepted-callbacks run), the result before the future resolves.
    A request the journal has finished comes back as a done future with no
    request (a failure raised again, or re-sent under a new attempt key with
    ``retry_failed``); an accepted one is re-attached by response id; a
    pending one (its create may have reached the server) is re-sent with its
    key. A recorded request with another fingerprint raises
    :class:`~sail_lite.journal.JournalMismatchError` here, recording nothing.
    Cancelling the returned future cancels the response on the server and
    journals it ``cancelled`` (the next submit sends a new attempt).
    """
    job = _journal_job(journal, job)
    if occurrence is not None and (
        isinstance(occurrence, bool) or not isinstance(occurrence, int) or occurrence < 0
    ):
        raise InvalidRequestError(
            "occurrence must be an int >= 0 (which of several equal requests this is), got "
            f"{occurrence!r}"
        )
    if job is None:
        raise InvalidRequestError("submit needs job= or journal= to derive an idempotency key")
    item_json = canonical_json(
        redact_secrets(dict(body)), "the request"
    )  # a signed URL's query is a credential
    name = item_json if identity is None else _identity_name(identity, "identity")
    digest = identity_digest(job, name)
    if journal is None:
        if occurrence is None:
            raise InvalidRequestError(
                "submit(job=...) without a journal needs occurrence= (0 for the first of equal requests, 1 for "
                "the second, ...): without a journal nothing counts equal requests, and one key for all of "
                "them would replay one sample"
            )
        request = _Request(None, job, None, send, attach, retry_failed, convert)
        return request.begin(None, key_from_digest(job, digest, occurrence))
    params_json = journal.begin_job(job, kind=kind, params={})
    if occurrence is None:
        occurrence = journal.next_occurrence(digest)
    entry = JournalEntry(
        key_from_digest(job, digest, occurrence),
        request_fingerprint(params_json, item_json),
        0,
        item_json,
    )
    row = journal.claim(job, [entry], retry_failed=retry_failed, append=True)[0]
    return _Request(journal, job, entry, send, attach, retry_failed, convert).begin(row, entry.key)


class _Request:
    """One submitted request behind the future its caller holds: sends, re-attaches, re-sends, journals."""

    def __init__(
        self,
        journal: Optional[Journal],
        job: str,
        entry: Optional[JournalEntry],
        send: Callable[[str], Future[Any]],
        attach: Attach,
        retry_failed: bool,
        convert: Optional[Callable[[Any], Any]],
    ) -> None:
        self.journal, self.job, self.entry = journal, job, entry
        self.send, self.attach, self.retry_failed, self.convert = (
            send,
            attach,
            retry_failed,
            convert,
        )
        self.lock = threading.Lock()
        self.inner: Optional[Future[Any]] = None
        self.attached = False
        self.key = ""
        self.sent_key = ""
        self.outer = ResponseFuture()

    def begin(self, row: Optional[JournalRow], key: str) -> ResponseFuture:
        self.key = key
        outer = self.outer
        outer.idempotency_key = self.sent_key = row.idempotency_key if row is not None else key
        if row is not None and row.status in ("completed", "failed"):
            outer.response_id = row.response_id
            if row.status == "completed":
                self.settle("result", decode_result(row.result_json or ""))
            else:
                self.settle("error", decode_error(row.error_json or "{}"))
            return outer
        response_id = row.response_id if row is not None and row.status == "accepted" else None
        outer.response_id = response_id
        outer.add_done_callback(self._cancel_inner)
        self.start(response_id)
        return outer

    def start(self, response_id: Optional[str]) -> None:
        self.attached = response_id is not None
        try:
            if response_id is not None:
                inner = self.attach(response_id)
            else:
                inner = self.send(self.sent_key)
                if hasattr(inner, "add_accepted_callback"):
                    inner.add_accepted_callback(self.accepted)
        except Exception as exc:  # e.g. the client is closed: the future carries it
            inner = Future()
            inner.set_exception(exc)
        with self.lock:
            self.inner = inner
        inner.add_done_callback(self.finish)
        if self.outer.cancelled():
            inner.cancel()

    def accepted(self, inner: Any) -> None:
        try:
            if self.journal is not None:
                self.journal.record_accepted(self.key, inner.response_id)
        except (
            BaseException
        ) as exc:  # the id is not durable: fail now, leave the request to a re-run's key
            _logger.warning("could not journal response %s: %s", inner.response_id, exc)
            self.settle("error", exc)
            return
        self.outer._set_accepted(inner.response_id)

    def finish(self, inner: Future[Any]) -> None:
        try:
            what, value, row = _record_outcome(
                self.journal,
                self.job,
                self.key,
                self.entry,
                inner,
                self.attached,
                self.retry_failed,
            )
        except BaseException as exc:  # a journal write failed: never hand out what is not recorded
            what, value, row = "error", exc, None
        if what == "resend":
            if row is not None:
                self.outer.idempotency_key = self.sent_key = row.idempotency_key
            if not self.outer.done():
                self.start(None)
            return
        self.settle(what, value)

    def settle(self, what: str, value: Any) -> None:
        outer = self.outer
        if outer.done():
            return
        try:
            if what == "result":
                outer.set_result(self.convert(value) if self.convert is not None else value)
            else:
                outer.set_exception(value)
        except InvalidStateError:
            pass  # cancelled (or failed by a journal error) meanwhile
        except Exception as exc:  # convert raised: the caller gets that
            try:
                outer.set_exception(exc)
            except InvalidStateError:
                pass

    def _cancel_inner(self, outer: Future[Any]) -> None:
        if not outer.cancelled():
            return
        with self.lock:
            inner = self.inner
        if inner is not None:
            inner.cancel()  # cancels the response on the server; finish() journals "cancelled"


# --- bindings to a Client ----------------------------------------------------------------------------------------


def map_tokens(
    source: Any, prompts: Iterable[Union[Sequence[int], Mapping[str, Any]]], **options: Any
) -> Iterator[Any]:
    """``source.tokens.map(prompts, **options)``: ``source`` is a :class:`~sail_lite.Client` (or its ``tokens``).

    Takes the arguments of :meth:`Tokens.map <sail_lite.resources.tokens.Tokens.map>` and yields its
    ``SampledTokens`` in input order.
    """
    return getattr(source, "tokens", source).map(prompts, **options)


def map_responses(
    source: Any, requests: Iterable[Union[str, Mapping[str, Any]]], **options: Any
) -> Iterator[Any]:
    """``source.responses.map(requests, **options)``: ``source`` is a :class:`~sail_lite.Client` (or its ``responses``).

    Takes the arguments of :meth:`Responses.map <sail_lite.resources.responses.Responses.map>` and yields its
    ``Response`` objects in input order.
    """
    return getattr(source, "responses", source).map(requests, **options)


def _map_job(
    kind: str,
    resource: Any,
    items: Iterable[Any],
    arguments: Mapping[str, Any],
    *,
    timeout: Optional[float],
    deadline: Optional[float],
    **run_options: Any,
) -> Iterator[Any]:
    """``Tokens.map`` / ``Responses.map`` (``kind``): :func:`run_map` over ``resource``'s submit.

    ``arguments`` (the shared submit arguments) are recorded with the job,
    signed-URL query strings redacted, so ``sail-lite jobs resume`` can
    finish it; ``timeout`` and ``deadline`` are per request and not part of
    the job.
    """
    calls = _token_calls if kind == "tokens" else _response_calls
    submit, attach = calls(resource, arguments, timeout, deadline)
    return run_map(
        items,
        submit=submit,
        attach=attach,
        kind=kind,
        params=redact_secrets(arguments),
        **run_options,
    )


def _token_calls(
    tokens: Any, sampling: Mapping[str, Any], timeout: Optional[float], deadline: Optional[float]
) -> Tuple[Submit, Attach]:
    """The ``submit``/``attach`` pair of a tokens job: one definition for a run and its resume."""

    def submit(item: Any, key: Optional[str]) -> Future[Any]:
        prompt, overrides = _split_prompt(item)
        merged = dict(sampling)
        merged.update(overrides)
        return tokens.submit(
            prompt, idempotency_key=key, timeout=timeout, deadline=deadline, **merged
        )

    def attach(response_id: str) -> Future[Any]:
        return tokens.attach(response_id, timeout=timeout, deadline=deadline)

    return submit, attach


def _response_calls(
    responses: Any,
    create_args: Mapping[str, Any],
    timeout: Optional[float],
    deadline: Optional[float],
) -> Tuple[Submit, Attach]:
    """The ``submit``/``attach`` pair of a responses job: one definition for a run and its resume."""

    def submit(item: Any, key: Optional[str]) -> Future[Any]:
        merged = dict(create_args)
        merged.update({"input": item} if isinstance(item, str) else dict(item))
        return responses.submit(idempotency_key=key, timeout=timeout, deadline=deadline, **merged)

    def attach(response_id: str) -> Future[Any]:
        return responses.attach(response_id, timeout=timeout, deadline=deadline)

    return submit, attach


#: The kinds of jobs recorded by ``tokens.submit`` / ``responses.submit`` (and the completer's submit):
#: each row's item is its wire body, signed-URL queries redacted.
SUBMIT_KINDS = ("tokens.submit", "responses.submit")


def _body_calls(responses: Any, kind: str, job: str) -> Tuple[Submit, Attach]:
    """The ``submit``/``attach`` pair that re-sends a submitted job's recorded wire bodies."""
    from .resources.responses import check_result
    from .resources.tokens import to_sampled_tokens

    transform = to_sampled_tokens if kind == "tokens.submit" else check_result

    def submit(item: Any, key: Optional[str]) -> Future[Any]:
        if "?<redacted>" in json.dumps(item):
            raise JournalError(
                f"a request of job {job!r} samples through a signed URL, which the journal does not keep "
                "(it expires, and it is a credential): resume it by submitting it again with a fresh "
                "URL"
            )
        return responses._submit(
            dict(item), transform, responses._requester.call(idempotency_key=key)
        )

    def attach(response_id: str) -> Future[Any]:
        return responses._attach(response_id, transform, responses._requester.call())

    return submit, attach


def _split_prompt(item: Any) -> Tuple[Any, Dict[str, Any]]:
    if isinstance(item, Mapping):
        if "prompt_tokens" not in item:
            raise InvalidRequestError(
                "a prompt given as a mapping needs 'prompt_tokens' (and optional overrides)"
            )
        overrides = {k: v for k, v in item.items() if k != "prompt_tokens"}
        return item["prompt_tokens"], overrides
    return item, {}


def resume_rows(
    journal: Journal,
    job: str,
    client: Any,
    *,
    max_in_flight: int = 64,
    retry_failed: bool = False,
    progress: Optional[Callable[[Progress], None]] = None,
    on_interrupt: str = "leave",
) -> Dict[str, int]:
    """Run ``job``'s unfinished journaled requests (see :func:`sail_lite.journal.resume`)."""
    info = journal.job(job)
    if info is None:
        raise JournalError(f"no job {job!r} in {journal.path}")
    kind, params = info["kind"], info["params"]
    if redact_secrets(params) != params or "?<redacted>" in json.dumps(params):
        raise JournalError(
            f"job {job!r} samples through a signed URL, which the journal does not keep (it expires, "
            "and it is a credential): resume it by running its script again with a fresh URL"
        )
    if kind == "tokens":
        submit, attach = _token_calls(client.tokens, params, None, None)
    elif kind == "responses":
        submit, attach = _response_calls(client.responses, params, None, None)
    elif kind in SUBMIT_KINDS:
        submit, attach = _body_calls(client.responses, kind, job)
    else:
        raise JournalError(
            f"job {job!r} was recorded by a custom run_map (kind {kind!r}): resume it by running its script "
            "again"
        )
    statuses = (
        ("pending", "accepted", "cancelled", "failed")
        if retry_failed
        else ("pending", "accepted", "cancelled")
    )
    # A snapshot of the keys first: claiming re-arms rows while we read.
    keys = [row.key for row in journal.rows(job, statuses=statuses)]

    def prepared() -> Iterator[_Prepared]:
        for key in keys:
            row = journal.row(key)
            if row is None:
                continue
            item = json.loads(row.item_json) if row.item_json is not None else None
            yield _Prepared(
                row.position,
                item,
                JournalEntry(row.key, row.fingerprint, row.position, row.item_json),
                None,
            )

    stats = {"ran": 0, "completed": 0, "failed": 0}
    results = _run(
        prepared(),
        submit=submit,
        attach=attach,
        journal=journal,
        job=job,
        max_in_flight=_positive("max_in_flight", max_in_flight),
        cap=5 * max_in_flight,
        progress=progress,
        progress_interval=0.5,
        on_interrupt=on_interrupt,
        return_exceptions=True,
        retry_failed=retry_failed,
        total=len(keys),
        clock=time.monotonic,
    )
    for outcome in results:
        stats["ran"] += 1
        stats["failed" if isinstance(outcome, BaseException) else "completed"] += 1
    return stats
