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
import time
from collections import deque
from concurrent.futures import Future
from dataclasses import dataclass, replace
from functools import partial
from typing import (
    TYPE_CHECKING,
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

from ._checks import seconds, string_mapping
from ._redact import redact_secrets
from .errors import InvalidRequestError
from .journal import (
    Journal,
    JournalEntry,
    JournalError,
    JournalRow,
    canonical_json,
    decode_error,
    decode_result,
    identity_digest,
    key_from_digest,
    request_fingerprint,
)
from .submission import (
    INTERRUPTS,
    SUBMIT_KINDS,
    InFlight,
    Interruption,
    identity_name,
    journal_job,
    record_outcome,
    submit_request,
)

if TYPE_CHECKING:  # pragma: no cover
    from .submission import Submitter

__all__ = [
    "Progress",
    "run_map",
    "map_job",
    "map_tokens",
    "map_responses",
    "submit_request",
    "resume_rows",
    "ON_INTERRUPT",
    "SUBMIT_KINDS",
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


@dataclass(frozen=True)
class _Prepared:
    """One input item as read: its position, its journal entry (key, fingerprint, JSON), or why it is bad."""

    position: int
    item: Any
    entry: Optional[JournalEntry]
    error: Optional[BaseException] = None


@dataclass(eq=False)
class _Slot:
    """One input item on its way through the window."""

    position: int
    item: Any
    entry: Optional[JournalEntry]
    row: Optional[JournalRow]
    future: Optional[Future[Any]] = None
    ready: bool = False
    result: Any = None
    error: Optional[BaseException] = None
    fatal: bool = False  # a journal failure: always raised, even with return_exceptions
    attached: bool = False
    resubmit: bool = False

    @property
    def key(self) -> Optional[str]:
        """The base key (the journal's primary key); the sent key adds the attempt."""
        return self.entry.key if self.entry is not None else None


@dataclass
class _Counters:
    in_flight: int = 0
    done: int = 0
    failed: int = 0
    from_journal: int = 0
    finished: int = 0  # requests that finished in this run (the rate counts these)


@dataclass(frozen=True)
class _Settings:
    """What one run does, checked: the calls, the journal, the bounds and the policies."""

    submit: Submit
    attach: Optional[Attach]
    journal: Optional[Journal]
    job: Optional[str]
    max_in_flight: int
    cap: int  # slots in the window at most: in flight plus finished ones waiting for their turn
    on_interrupt: str
    return_exceptions: bool
    retry_failed: bool


class _Reporter:
    """Calls ``progress(Progress)`` at most every ``interval`` seconds of ``clock`` (and when forced)."""

    def __init__(
        self,
        progress: Optional[Callable[[Progress], None]],
        interval: float,
        total: Optional[int],
        clock: Callable[[], float],
    ) -> None:
        self.progress, self.interval, self.total, self.clock = progress, interval, total, clock
        self.started = clock()
        self.last = self.started - interval

    def report(self, counters: _Counters, force: bool = False) -> None:
        if self.progress is None:
            return
        now = self.clock()
        if not force and now - self.last < self.interval:
            return
        self.last = now
        elapsed = max(now - self.started, 0.0)
        rate = counters.finished / elapsed if elapsed > 0 else 0.0
        eta = None
        if self.total is not None and rate > 0:
            eta = max(self.total - counters.done, 0) / rate
        self.progress(
            Progress(
                done=counters.done,
                failed=counters.failed,
                in_flight=counters.in_flight,
                total=self.total,
                from_journal=counters.from_journal,
                elapsed=elapsed,
                rate=rate,
                eta=eta,
            )
        )


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

    ``submit(item, idempotency_key)`` starts one request and returns a future
    at once (the key is None without ``job`` and ``journal``: the client
    mints one); a future with ``add_accepted_callback`` has its response id
    journaled as soon as the create is accepted. ``attach(response_id)``
    re-attaches to a journaled response (without it, the item is re-sent
    with its key). Without ``job`` a journal uses its ``default_job``;
    ``kind`` and ``params`` (JSON) are recorded with the job and folded into
    every fingerprint (other parameters later: ``JournalMismatchError``).
    Items must be JSON when keyed; ``identity(item)`` names an item in its
    key instead of its content. At most ``max_in_flight`` requests run and
    ``max_buffered`` (default ``4 * max_in_flight``) finished results wait
    behind a slower earlier one. ``progress(Progress)`` is called at most
    every ``progress_interval`` seconds of ``clock`` and at the end.
    ``on_interrupt`` (``"leave"``, the default with a journal, or
    ``"cancel"``) says what an early stop does to the requests in flight;
    ``return_exceptions`` yields a failure instead of raising it (journal
    errors are always raised); ``retry_failed`` re-sends journaled failures.
    Arguments are checked (:class:`InvalidRequestError`) and the job recorded
    at the call; the requests start at the first ``next()``.
    """
    on_interrupt = _check_run_options(
        items, submit, attach, identity, progress, progress_interval, on_interrupt, journal
    )
    _positive("max_in_flight", max_in_flight)
    buffered = (
        4 * max_in_flight if max_buffered is None else _positive("max_buffered", max_buffered)
    )
    job = journal_job(journal, job)
    if total is None:
        total = len(items) if hasattr(items, "__len__") else None  # type: ignore[arg-type]
    params_json = canonical_json(dict(params or {}), "params")
    if journal is not None:
        assert job is not None
        params_json = journal.begin_job(job, kind=kind, params=params or {}, total=total)
    settings = _Settings(
        submit=submit,
        attach=attach,
        journal=journal,
        job=job,
        max_in_flight=max_in_flight,
        cap=max_in_flight + buffered,
        on_interrupt=on_interrupt,
        return_exceptions=return_exceptions,
        retry_failed=retry_failed,
    )
    prepared = _prepare(items, journal, job, params_json, identity)
    reporter = _Reporter(progress, progress_interval, total, clock)
    return _MapRun(prepared, settings, reporter).results()


def _check_run_options(
    items: Any,
    submit: Any,
    attach: Any,
    identity: Any,
    progress: Any,
    progress_interval: Any,
    on_interrupt: Optional[str],
    journal: Optional[Journal],
) -> str:
    """Check what :func:`run_map` is given; return the ``on_interrupt`` policy that applies."""
    if not hasattr(items, "__iter__"):
        raise InvalidRequestError(f"items must be an iterable, got {type(items).__name__}")
    if not callable(submit) or (attach is not None and not callable(attach)):
        raise InvalidRequestError("submit (and attach, if given) must be callables")
    for name, value in (("identity", identity), ("progress", progress)):
        if value is not None and not callable(value):
            raise InvalidRequestError(f"{name} must be a callable, got {type(value).__name__}")
    if (
        isinstance(progress_interval, bool)
        or not isinstance(progress_interval, (int, float))
        or not progress_interval >= 0
    ):
        raise InvalidRequestError("progress_interval must be >= 0 seconds")
    if on_interrupt is None:
        return "leave" if journal is not None else "cancel"
    if on_interrupt not in ON_INTERRUPT:
        raise InvalidRequestError(f"on_interrupt must be 'cancel' or 'leave', got {on_interrupt!r}")
    return on_interrupt


class _Occurrences:
    """The occurrence counter without a journal: a dict (grows with the number of distinct items)."""

    def __init__(self) -> None:
        self.seen: Dict[str, int] = {}

    def next(self, digest: str) -> int:
        n = self.seen.get(digest, -1) + 1
        self.seen[digest] = n
        return n

    def close(self) -> None:
        self.seen.clear()


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
            yield _Prepared(position, item, None)
        return
    occurrences = journal.occurrence_counter() if journal is not None else _Occurrences()
    try:
        for position, item in enumerate(items):
            try:
                item_json = canonical_json(item, "each item of a keyed or journaled map")
                name = (
                    item_json
                    if identity is None
                    else identity_name(identity(item), "identity(item)")
                )
            except InvalidRequestError as exc:
                yield _Prepared(position, item, None, exc)
                continue
            digest = identity_digest(job, name)
            entry = JournalEntry(
                key_from_digest(job, digest, occurrences.next(digest)),
                request_fingerprint(params_json, item_json),
                position,
                item_json if journal is not None else None,
            )
            yield _Prepared(position, item, entry)
    finally:
        occurrences.close()


class _MapRun:
    """One run of the engine: a window of slots, filled from the input, emptied in input order.

    The done-callbacks (any thread) only record an outcome and post the slot
    on ``events``; everything else (starting, counting, yielding) happens in
    the thread that iterates :meth:`results`. The futures in flight are kept
    in ``in_flight``, the one place an early stop finds them.
    """

    def __init__(
        self, prepared: Iterator[_Prepared], settings: _Settings, reporter: _Reporter
    ) -> None:
        self.prepared = prepared
        self.settings = settings
        self.reporter = reporter
        self.window: Deque[_Slot] = deque()
        self.events: queue.SimpleQueue[_Slot] = queue.SimpleQueue()
        self.counters = _Counters()
        self.in_flight = InFlight()
        self.exhausted = False
        self.wait = min(reporter.interval, 0.5) or 0.05

    def results(self) -> Iterator[Any]:
        interrupted = False
        try:
            while True:
                # Creates (and resubmits) are tracked before they are queued; never across a
                # yield, so what the caller's loop body submits stays the caller's.
                with self.in_flight.collecting():
                    self.fill()
                    self.drain(block=False)
                if not self.window:
                    break
                head = self.window[0]
                if not head.ready:
                    self.reporter.report(self.counters)
                    with self.in_flight.collecting():
                        self.drain(block=True)
                    continue
                self.window.popleft()
                self.counters.done += 1
                if head.error is not None:
                    self.counters.failed += 1
                    self.reporter.report(self.counters)
                    if self.settings.return_exceptions and not head.fatal:
                        yield head.error
                        continue
                    raise head.error
                self.reporter.report(self.counters)
                yield head.result
            self.reporter.report(self.counters, force=True)
        except INTERRUPTS as exc:  # Ctrl-C in our wait: stop, then raise it from here, annotated
            interrupted = True
            interruption = self.stop()
            raise interruption.annotate(exc).with_traceback(None) from None
        finally:
            # Any other early stop lands here: Ctrl-C in the caller's loop body (which we only see as
            # the generator being closed), a break, an exception, a raised failure.
            if not interrupted:
                self.stop().log()

    def stop(self) -> Interruption:
        """Cancel (bounded, see InFlight.interrupt) or leave what is in flight, as ``on_interrupt`` says."""
        try:
            if self.settings.on_interrupt == "cancel":
                interruption = self.in_flight.interrupt()  # the callbacks journal "cancelled"
            else:
                interruption = self.in_flight.leave()
        finally:
            self.prepared.close()  # type: ignore[attr-defined]
        # Results that arrived but were never yielded (some while the cancels ran): named, so nothing
        # is lost without a word.
        unreturned = [
            getattr(slot.future, "response_id", None)
            for slot in self.window
            if slot.ready and slot.error is None
        ]
        settled = {response_id for response_id in unreturned if response_id}
        if not settled:
            return interruption
        return replace(
            interruption,
            finished=tuple(dict.fromkeys(interruption.finished + tuple(sorted(settled)))),
            uncancelled=tuple(i for i in interruption.uncancelled if i not in settled),
            left=tuple(i for i in interruption.left if i not in settled),
        )

    def fill(self) -> None:
        """Read and start items while the window has room."""
        settings = self.settings
        while not self.exhausted:
            space = min(
                settings.max_in_flight - self.counters.in_flight, settings.cap - len(self.window)
            )
            if space <= 0:
                return
            # With a journal, items are claimed a batch per transaction; without one, each is
            # started as soon as it is read (a slow source never holds back what it already gave).
            batch = self.read(space if settings.journal is not None else 1)
            if not batch:
                return
            rows = self.claim(batch)
            for prepared in batch:
                self.admit(prepared, rows.get(prepared.position))

    def read(self, size: int) -> List[_Prepared]:
        batch: List[_Prepared] = []
        for prepared in self.prepared:
            batch.append(prepared)
            if len(batch) >= size:
                return batch
        self.exhausted = True
        return batch

    def claim(self, batch: List[_Prepared]) -> Dict[int, JournalRow]:
        """The journal rows of a batch's keyed items, claimed in one transaction."""
        journal, job = self.settings.journal, self.settings.job
        keyed = [p for p in batch if p.entry is not None]
        if journal is None or not keyed:
            return {}
        assert job is not None
        entries = [p.entry for p in keyed]
        claimed = journal.claim(job, entries, retry_failed=self.settings.retry_failed)  # type: ignore[arg-type]
        return {p.position: row for p, row in zip(keyed, claimed)}

    def admit(self, prepared: _Prepared, row: Optional[JournalRow]) -> None:
        """Put an item in the window: failed at once, finished from the journal, or started."""
        slot = _Slot(prepared.position, prepared.item, prepared.entry, row)
        self.window.append(slot)
        if prepared.error is not None:
            slot.error, slot.ready = prepared.error, True
        elif row is not None and row.status == "completed":
            slot.result, slot.ready = decode_result(row.result_json or ""), True
            self.counters.from_journal += 1
        elif row is not None and row.status == "failed":
            slot.error, slot.ready = decode_error(row.error_json or "{}"), True
            self.counters.from_journal += 1
        else:
            self.counters.in_flight += 1
            accepted = row is not None and row.status == "accepted"
            self.start(slot, row.response_id if accepted else None)  # type: ignore[union-attr]

    def start(self, slot: _Slot, response_id: Optional[str]) -> None:
        """Send (or re-attach) one slot's request; a synchronous failure fails the slot in order."""
        settings = self.settings
        slot.resubmit = False
        try:
            if response_id is not None and settings.attach is not None:
                slot.attached = True
                future = settings.attach(response_id)
            else:
                slot.attached = False
                key = slot.row.idempotency_key if slot.row is not None else slot.key
                future = settings.submit(slot.item, key)
                if settings.journal is not None and hasattr(future, "add_accepted_callback"):
                    future.add_accepted_callback(partial(self.accepted, slot))
        except Exception as exc:  # bad input raised by submit: a failed future keeps the order
            future = Future()
            future.set_exception(exc)
        slot.future = future
        self.in_flight.track(future)
        future.add_done_callback(partial(self.finish, slot))

    def accepted(self, slot: _Slot, future: Any) -> None:
        """Accepted-callback (a pool thread): journal the response id before any poll."""
        journal = self.settings.journal
        try:
            if journal is not None and slot.key is not None and future.response_id:
                journal.record_accepted(slot.key, future.response_id)
        except BaseException as exc:  # surfaced when the result arrives
            _logger.warning(
                "could not journal response %s: %s", getattr(future, "response_id", None), exc
            )
            slot.error, slot.fatal = exc, True

    def finish(self, slot: _Slot, future: Future[Any]) -> None:
        """Done-callback (any thread): journal the outcome, then wake the iterating thread."""
        settings = self.settings
        try:
            outcome = record_outcome(
                settings.journal,
                settings.job,
                slot.key,
                slot.entry,
                future,
                slot.attached,
                settings.retry_failed,
            )
            if outcome.resend:
                slot.resubmit = True
                slot.row = outcome.row or slot.row
            elif outcome.error is not None:
                slot.error = outcome.error
            else:
                slot.result = outcome.result
        except BaseException as exc:  # a journal write failed: never yield what is not recorded
            slot.error, slot.fatal = exc, True
        if not slot.resubmit:
            slot.ready = True
        self.events.put(slot)

    def drain(self, block: bool) -> None:
        """Handle the finished slots posted so far (waiting a little for the first when ``block``)."""
        try:
            slot = self.events.get(timeout=self.wait) if block else self.events.get_nowait()
        except queue.Empty:
            return
        while True:
            if slot.resubmit:
                self.start(slot, None)
            else:
                self.counters.in_flight -= 1
                self.counters.finished += 1
            try:
                slot = self.events.get_nowait()
            except queue.Empty:
                return


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


_ITEMS = {
    "tokens": "prompts must be an iterable of prompts (lists of token ids, or mappings with "
    "'prompt_tokens')",
    "responses": "requests must be an iterable of input strings or mappings of submit arguments",
}


def map_job(
    kind: str,
    resource: Any,
    items: Iterable[Any],
    arguments: Mapping[str, Any],
    *,
    journal: Optional[Journal],
    job: Optional[str],
    max_in_flight: int,
    progress: Optional[Callable[[Progress], None]],
    on_interrupt: Optional[str],
    return_exceptions: bool,
    retry_failed: bool,
    timeout: Optional[float],
    deadline: Optional[float],
    extra_headers: Optional[Mapping[str, str]] = None,
) -> Iterator[Any]:
    """``Tokens.map`` / ``Responses.map`` (``kind``): :func:`run_map` over ``resource``'s submit.

    ``arguments`` (the shared submit arguments, checked by the caller) are
    recorded with the job, signed-URL query strings redacted, so
    ``sail-lite jobs resume`` can finish it; ``timeout``, ``deadline`` and
    ``extra_headers`` are per request, checked here, and not part of the job.
    """
    if isinstance(items, (str, bytes, Mapping)) or not hasattr(items, "__iter__"):
        raise InvalidRequestError(f"{_ITEMS[kind]}, got {type(items).__name__}")
    per_request = _PerRequest(
        timeout=None if timeout is None else seconds("timeout", timeout),
        deadline=None if deadline is None else seconds("deadline", deadline),
        extra_headers=string_mapping("extra_headers", extra_headers) or None,
    )
    calls = _token_calls if kind == "tokens" else _response_calls
    submit, attach = calls(resource, arguments, per_request)
    return run_map(
        items,
        submit=submit,
        attach=attach,
        kind=kind,
        params=redact_secrets(arguments),
        journal=journal,
        job=job,
        max_in_flight=max_in_flight,
        progress=progress,
        on_interrupt=on_interrupt,
        return_exceptions=return_exceptions,
        retry_failed=retry_failed,
    )


@dataclass(frozen=True)
class _PerRequest:
    """A map's per-request call options: given to every request, never recorded with the job."""

    timeout: Optional[float] = None
    deadline: Optional[float] = None
    extra_headers: Optional[Mapping[str, str]] = None


def _token_calls(
    tokens: Any, sampling: Mapping[str, Any], per_request: _PerRequest
) -> Tuple[Submit, Attach]:
    """The ``submit``/``attach`` pair of a tokens job: one definition for a run and its resume."""
    timeout, deadline, headers = (
        per_request.timeout,
        per_request.deadline,
        per_request.extra_headers,
    )

    def submit(item: Any, key: Optional[str]) -> Future[Any]:
        prompt, overrides = _split_prompt(item)
        merged = dict(sampling, timeout=timeout, deadline=deadline, extra_headers=headers)
        merged.update(overrides)
        return tokens.submit(prompt, idempotency_key=key, **merged)

    def attach(response_id: str) -> Future[Any]:
        return tokens.attach(response_id, timeout=timeout, deadline=deadline, extra_headers=headers)

    return submit, attach


def _response_calls(
    responses: Any, create_args: Mapping[str, Any], per_request: _PerRequest
) -> Tuple[Submit, Attach]:
    """The ``submit``/``attach`` pair of a responses job: one definition for a run and its resume."""
    timeout, deadline, headers = (
        per_request.timeout,
        per_request.deadline,
        per_request.extra_headers,
    )

    def submit(item: Any, key: Optional[str]) -> Future[Any]:
        merged = dict(create_args, timeout=timeout, deadline=deadline, extra_headers=headers)
        merged.update({"input": item} if isinstance(item, str) else dict(item))
        return responses.submit(idempotency_key=key, **merged)

    def attach(response_id: str) -> Future[Any]:
        return responses.attach(
            response_id, timeout=timeout, deadline=deadline, extra_headers=headers
        )

    return submit, attach


def _body_calls(submission: Submitter, kind: str, job: str) -> Tuple[Submit, Attach]:
    """The ``submit``/``attach`` pair that re-sends a submitted job's recorded wire bodies."""
    transform = SUBMIT_KINDS[kind]

    def submit(item: Any, key: Optional[str]) -> Future[Any]:
        if "?<redacted>" in json.dumps(item):
            raise JournalError(
                f"a request of job {job!r} samples through a signed URL, which the journal does not keep "
                "(it expires, and it is a credential): resume it by submitting it again with a fresh "
                "URL"
            )
        return submission.submit(dict(item), transform, submission.call(idempotency_key=key))

    def attach(response_id: str) -> Future[Any]:
        return submission.attach(response_id, transform, submission.call())

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
    """Run ``job``'s unfinished journaled requests again; ``{"ran", "completed", "failed"}`` counts.

    Finished rows come from the journal, accepted ones are re-attached, the
    rest re-sent with their keys (the server replays what it already ran).
    Raises :class:`~sail_lite.journal.JournalError` for a job the journal
    cannot finish alone (unknown, a custom ``run_map``, a signed URL).
    """
    submit, attach = _resume_calls(journal, job, client)
    statuses = ("pending", "accepted", "cancelled") + (("failed",) if retry_failed else ())
    # A snapshot of the keys first: claiming re-arms rows while we read.
    keys = [row.key for row in journal.rows(job, statuses=statuses)]
    settings = _Settings(
        submit=submit,
        attach=attach,
        journal=journal,
        job=job,
        max_in_flight=_positive("max_in_flight", max_in_flight),
        cap=5 * max_in_flight,
        on_interrupt=on_interrupt,
        return_exceptions=True,
        retry_failed=retry_failed,
    )
    reporter = _Reporter(progress, 0.5, len(keys), time.monotonic)
    stats = {"ran": 0, "completed": 0, "failed": 0}
    for outcome in _MapRun(_journaled_items(journal, keys), settings, reporter).results():
        stats["ran"] += 1
        stats["failed" if isinstance(outcome, BaseException) else "completed"] += 1
    return stats


def _resume_calls(journal: Journal, job: str, client: Any) -> Tuple[Submit, Attach]:
    """The calls that finish ``job`` from what the journal recorded of it."""
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
        return _token_calls(client.tokens, params, _PerRequest())
    if kind == "responses":
        return _response_calls(client.responses, params, _PerRequest())
    if kind in SUBMIT_KINDS:
        return _body_calls(client.responses.submission, kind, job)
    raise JournalError(
        f"job {job!r} was recorded by a custom run_map (kind {kind!r}): resume it by running its script "
        "again"
    )


def _journaled_items(journal: Journal, keys: List[str]) -> Iterator[_Prepared]:
    """The rows under ``keys`` as input items (a row gone meanwhile is skipped)."""
    for key in keys:
        row = journal.row(key)
        if row is None:
            continue
        item = json.loads(row.item_json) if row.item_json is not None else None
        entry = JournalEntry(row.key, row.fingerprint, row.position, row.item_json)
        yield _Prepared(row.position, item, entry)
