"""The public seam for background work: submit a body, attach to a response id, the journaled submit.

Everything that starts or follows a background response goes through here:
the resources (``client.responses``, ``client.tokens``), the map engine
(:mod:`sail_lite.pipeline`), the completer (:mod:`sail_lite.tinker`) and
Ray's sampler. A client has one :class:`Submitter`
(``client.responses.submission``, shared with ``client.tokens``); it owns the
wire calls on a response (create, retrieve, cancel) and hands accepted
responses to the client's poller.

- :meth:`Submitter.submit` returns a :class:`~sail_lite.ResponseFuture` at
  once; the create runs on the client's pool, so a bad body raises in the
  caller and nothing is sent.
- :meth:`Submitter.attach` follows a response made anywhere by its id.
- :meth:`Submitter.submit` with ``journal``/``job`` (:func:`submit_request`)
  derives the key from a job and records the request in a
  :class:`~sail_lite.Journal`.
- :class:`InFlight` and :func:`block_on`: the one place a blocking call
  (``sample``, ``create``, ``wait``, ``map``) keeps the responses it has in
  flight, and what happens to them when the wait is interrupted: on
  ``KeyboardInterrupt`` (or ``SystemExit`` from a signal handler) they are
  cancelled on the server within :data:`CANCEL_BUDGET` seconds in all (a
  second Ctrl-C skips that), and the exception is raised again from the
  blocking call, carrying an :class:`Interruption` (see
  :meth:`Interruption.annotate`). Futures the caller holds from ``submit()``
  are never touched by an interrupt elsewhere.
- With a :class:`~sail_lite.webhooks.WebhookReceiver` (:meth:`Submitter.use_webhooks`,
  what ``Client(webhooks=...)`` does), background creates carry its
  ``completion_webhook`` and ``webhook_token`` and their futures complete
  when the webhook arrives; polling drops to the sparse safety schedule of
  :class:`~sail_lite.polling.PollPolicy` (``webhook_interval``).
"""

from __future__ import annotations

import contextlib
import contextvars
import hmac
import logging
import threading
import time
from collections import deque
from concurrent.futures import Future, InvalidStateError
from dataclasses import dataclass, replace
from functools import partial
from typing import (
    TYPE_CHECKING,
    Any,
    Callable,
    Deque,
    Dict,
    Iterator,
    List,
    Mapping,
    Optional,
    Tuple,
    TypeVar,
    Union,
)

from ._checks import encode_json, path_id
from ._future import ResponseFuture
from ._redact import redact_secrets
from ._requester import Call, Requester
from ._statuses import CANCELLED_STATUSES
from .errors import (
    InvalidRequestError,
    NotFoundError,
    ResponseCancelledError,
    ResponseExpiredError,
    ResponseFailedError,
    SailError,
)
from .journal import (
    Journal,
    JournalEntry,
    JournalRow,
    canonical_json,
    check_job_name,
    decode_error,
    decode_result,
    identity_digest,
    is_terminal_failure,
    key_from_digest,
    request_fingerprint,
)
from .types import Response, SampledTokens

if TYPE_CHECKING:  # the HTTP server module loads only for a client given a receiver
    from .webhooks import WebhookReceiver

__all__ = [
    "Submitter",
    "InFlight",
    "Interruption",
    "block_on",
    "CANCEL_BUDGET",
    "INTERRUPTS",
    "check_result",
    "to_sampled_tokens",
    "SUBMIT_KINDS",
    "Outcome",
    "record_outcome",
    "journal_job",
    "identity_name",
    "submit_request",
]

_logger = logging.getLogger(__name__)

T = TypeVar("T")
Transform = Callable[[Response], Any]
Attach = Callable[[str], "Future[Any]"]
_JSON = "application/json"


# --- what a terminal response means -----------------------------------------------------------------------------


def check_result(response: Response) -> Response:
    """Return a terminal ``response`` that has a result, or raise its typed error.

    ``completed`` and ``incomplete`` (partial output) are results;
    ``failed``, ``cancelled``/``canceled`` and ``expired`` raise
    :class:`ResponseFailedError` and subclasses carrying the response.
    """
    if response.has_result:
        return response
    error = response.error or {}
    code = error.get("code") if isinstance(error.get("code"), str) else None
    detail = error.get("message") if isinstance(error.get("message"), str) else None
    if response.status in ("cancelled", "canceled"):
        cls, what = ResponseCancelledError, "was cancelled"
    elif response.status == "expired":
        cls, what = ResponseExpiredError, "expired before it ran"
    else:
        cls, what = ResponseFailedError, "failed"
    message = f"response {response.id} {what}"
    if detail:
        message += ": " + redact_secrets(detail)
    raise cls(message, response=response, response_id=response.id, code=code)


def to_sampled_tokens(response: Response) -> SampledTokens:
    """The terminal response's raw-token result, or its typed error."""
    return SampledTokens.from_response(check_result(response))


#: The kinds of jobs ``tokens.submit`` / ``responses.submit`` (and the completer's submit) record, with the
#: transform that turns the terminal response into the recorded result. Each row's item is its wire body.
SUBMIT_KINDS: Mapping[str, Transform] = {
    "tokens.submit": to_sampled_tokens,
    "responses.submit": check_result,
}


# --- one place for what a blocking call has in flight, and what an interrupt does to it ----------------------

#: Seconds an interrupted blocking call spends, in all, cancelling what it has in flight.
CANCEL_BUDGET = 2.0
#: What counts as an interrupt of a wait: Ctrl-C, and ``sys.exit()`` from a signal handler.
INTERRUPTS = (KeyboardInterrupt, SystemExit)
_CANCEL_THREADS = 16  # cancels sent at once: a map's window is cancelled in one or two round trips


@dataclass(frozen=True)
class Interruption:
    """What stopping a blocking call did to the responses it had in flight (response ids).

    ``cancelled``: cancelled on the server now. ``finished``: had finished
    before the cancel arrived, or while the call was stopping, and its result
    was not returned (``client.responses.retrieve(id)`` has it).
    ``uncancelled``: still running on the server (``reason`` says why: the
    cancel failed, ran out of :data:`CANCEL_BUDGET`, or a second Ctrl-C
    skipped it). ``left``: left running on purpose (``on_interrupt="leave"``:
    a re-run of the journaled job collects them). ``unanswered``: the
    idempotency keys of creates whose reply had not come (if they reached the
    server, the client cancels them when it can).
    """

    cancelled: Tuple[str, ...] = ()
    finished: Tuple[str, ...] = ()
    uncancelled: Tuple[str, ...] = ()
    left: Tuple[str, ...] = ()
    unanswered: Tuple[str, ...] = ()
    reason: str = ""

    @property
    def response_ids(self) -> Tuple[str, ...]:
        """Every response id the call had in flight or had not returned."""
        return self.cancelled + self.finished + self.uncancelled + self.left

    def describe(self) -> str:
        """Lines naming each group of ids (empty when the call had nothing in flight)."""
        lines = []
        if self.cancelled:
            lines.append("cancelled on the server: " + ", ".join(self.cancelled))
        if self.finished:
            lines.append(
                "finished, result not returned (client.responses.retrieve(id) has it): "
                + ", ".join(self.finished)
            )
        if self.uncancelled:
            lines.append(
                f"still running on the server, not cancelled ({self.reason or 'the cancel failed'}); "
                "cancel with client.responses.cancel(id): " + ", ".join(self.uncancelled)
            )
        if self.left:
            lines.append(
                "left running on the server (on_interrupt='leave'; a re-run of the job collects "
                "them): " + ", ".join(self.left)
            )
        if self.unanswered:
            lines.append(
                "creates whose reply had not come (idempotency keys): " + ", ".join(self.unanswered)
            )
        return "\n".join(lines)

    def annotate(self, exc: BaseException) -> BaseException:
        """Put this on ``exc`` and log it; returns ``exc``.

        Attributes ``response_ids``, ``cancelled``, ``finished`` and
        ``uncancelled`` (still running: not cancelled, or left) are lists of
        ids; the text of :meth:`describe` is a note (``add_note``, Python
        3.11+) or, before 3.11, an argument-less ``KeyboardInterrupt``'s
        message. A WARNING names the ids not cancelled.
        """
        exc.response_ids = list(self.response_ids)
        exc.cancelled = list(self.cancelled)
        exc.finished = list(self.finished)
        exc.uncancelled = list(self.uncancelled + self.left)
        exc.interruption = self
        text = self.describe()
        if text:
            if hasattr(exc, "add_note"):
                exc.add_note("sail_lite: " + text.replace("\n", "\nsail_lite: "))
            elif isinstance(exc, KeyboardInterrupt) and not exc.args:
                exc.args = (text,)
        self.log()
        return exc

    def log(self) -> None:
        """One WARNING naming what was not cancelled (INFO when everything was, or was left by choice)."""
        text = self.describe()
        if not text:
            return
        worrying = self.uncancelled or self.finished or self.unanswered
        _logger.log(logging.WARNING if worrying else logging.INFO, "interrupted: %s", text)


# The InFlight that creates started in this thread (and context) are tracked in, while one collects:
# a context variable, as decimal's context is, so that a create is tracked before it is queued
# without every submit path taking the InFlight as an argument.
_COLLECTING: contextvars.ContextVar[Optional[InFlight]] = contextvars.ContextVar(
    "sail_lite_in_flight", default=None
)


class InFlight:
    """The futures one blocking call is waiting on, each until it is done. Thread-safe.

    ``sample``, ``create``, ``wait`` (through :func:`block_on`) and ``map``
    (one for the whole run) each keep one, so the response ids a call would
    leave running if it stopped now are known in one place, and
    :meth:`interrupt` cancels exactly those.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._futures: Dict[int, Future[Any]] = {}  # insertion order: oldest first

    def track(self, future: Future[T]) -> Future[T]:
        """Keep ``future`` until it is done; returns it."""
        with self._lock:
            self._futures[id(future)] = future
        future.add_done_callback(self._forget)  # runs at once if it is done already
        return future

    @contextlib.contextmanager
    def collecting(self) -> Iterator[InFlight]:
        """Within the block, every create this thread starts is tracked here before it is queued.

        So an interrupt landing anywhere in the block (inside a submit, between a submit and
        the line that would track its future) still finds, and withdraws or cancels, what the
        block started.
        """
        token = _COLLECTING.set(self)
        try:
            yield self
        finally:
            _COLLECTING.reset(token)

    @staticmethod
    def collect(future: Future[T]) -> Future[T]:
        """Track ``future`` in the InFlight collecting in this thread, if one is; returns it."""
        in_flight = _COLLECTING.get()
        return in_flight.track(future) if in_flight is not None else future

    def _forget(self, future: Future[Any]) -> None:
        with self._lock:
            self._futures.pop(id(future), None)

    def futures(self) -> List[Future[Any]]:
        """The futures not done yet, oldest first."""
        with self._lock:
            return list(self._futures.values())

    def response_ids(self) -> List[str]:
        """The response ids of those the server accepted so far (a create still on its way has none)."""
        ids = (getattr(future, "response_id", None) for future in self.futures())
        return [response_id for response_id in ids if response_id]

    def __len__(self) -> int:
        with self._lock:
            return len(self._futures)

    def interrupt(self, budget: float = CANCEL_BUDGET) -> Interruption:
        """Cancel on the server every response in flight here; blocks at most ``budget`` seconds.

        Cancels go out in parallel on short-lived threads, each bounded by
        what is left of the budget; a create not sent yet is never sent; one
        on its way is cancelled once its reply names the response. A future
        whose response was cancelled is cancelled too (a journal records it
        ``cancelled``); one whose response had finished is left to settle.
        A ``KeyboardInterrupt`` during the wait (a second Ctrl-C) stops it:
        what is not confirmed is reported ``uncancelled``. Never raises.
        """
        cancels = _Cancels(time.monotonic() + budget)
        futures = self.futures()
        added, answered = threading.Event(), threading.Event()

        def run() -> None:
            # On a thread of its own: a second Ctrl-C (raised in the main thread only) can end the
            # wait, but never stops a create from being withdrawn or a response from being named.
            try:
                for future in futures:
                    cancels.add(future)
                added.set()
                cancels.wait()
            finally:
                added.set()
                answered.set()

        try:
            threading.Thread(target=run, name="sail-lite-interrupt", daemon=True).start()
            answered.wait()
        except KeyboardInterrupt:
            cancels.stop("a second Ctrl-C skipped the cancel")
            added.wait(_WITHDRAW_BOUND)  # local work only: every future withdrawn or named
        return cancels.report()

    def leave(self) -> Interruption:
        """What stopping leaves running when nothing is cancelled (``on_interrupt="leave"``)."""
        return Interruption(left=tuple(self.response_ids()))


def block_on(
    future: Union[Future[T], Callable[[], Future[T]]], in_flight: Optional[InFlight] = None
) -> T:
    """Block until ``future`` settles and return its result (or raise its exception).

    The one place ``sample``, ``create`` and ``wait`` wait: ``future`` is in
    ``in_flight`` (a new one when not given) for as long as it runs. ``future``
    may also be a function that starts the work and returns its future: it
    runs while ``in_flight`` collects (:meth:`InFlight.collecting`), so an
    interrupt that lands while it starts is handled the same way. On
    ``KeyboardInterrupt`` (or ``SystemExit`` from a signal handler) what
    ``in_flight`` holds is cancelled (:meth:`InFlight.interrupt`, at most
    :data:`CANCEL_BUDGET` seconds) and the same exception is raised again
    from here, annotated (:meth:`Interruption.annotate`), without the frames
    of the wait inside ``concurrent.futures`` or ``threading``.
    """
    in_flight = in_flight if in_flight is not None else InFlight()
    started: Optional[Future[T]] = None
    try:
        if callable(future):
            with in_flight.collecting():
                started = future()
        else:
            started = future
        in_flight.track(started)
        return started.result()
    except INTERRUPTS as exc:
        interruption = in_flight.interrupt()
        unreturned = _unreturned(started) if started is not None else None
        if unreturned and unreturned not in interruption.response_ids:
            interruption = replace(interruption, finished=interruption.finished + (unreturned,))
        raise interruption.annotate(exc).with_traceback(None) from None


def _unreturned(future: Future[Any]) -> Optional[str]:
    """The response id of a future that settled with a result the interrupted caller never got."""
    if not future.done() or future.cancelled() or future.exception() is not None:
        return None
    return getattr(future, "response_id", None)


class _Handle(ResponseFuture):
    """A future this module made: the submitter that can cancel its response, and where its create is.

    ``submitter`` is ``None`` for a journaled request's outer future; its
    current attempt is ``inner``. The create goes ``queued`` -> ``sending``
    -> ``sent`` (or ``withdrawn``: cancelled before it was sent; a future
    made for a response that exists is ``sent`` from the start).
    """

    def __init__(
        self,
        submitter: Optional[Submitter] = None,
        *,
        idempotency_key: Optional[str] = None,
        response_id: Optional[str] = None,
        queued: bool = False,
    ) -> None:
        super().__init__(idempotency_key=idempotency_key, response_id=response_id)
        self.submitter = submitter
        self.inner: Optional[Future[Any]] = None
        self.create_lock = threading.Lock()
        self.create_state = "queued" if queued else "sent"
        self.on_sent: List[Callable[[], None]] = []

    def begin_create(self) -> bool:
        """Whether to send the create now (False: it was withdrawn, or the future cancelled)."""
        with self.create_lock:
            if self.create_state != "queued" or self.cancelled():
                return False
            self.create_state = "sending"
            return True

    def end_create(self) -> None:
        """The create is over (accepted or failed): run what waited for it."""
        with self.create_lock:
            self.create_state = "sent"
            callbacks, self.on_sent = self.on_sent, []
        for callback in callbacks:
            callback()

    def withdraw_or_follow(self, callback: Callable[[], None]) -> str:
        """Withdraw a create not sent yet (``"withdrawn"``), or call ``callback`` once one on its way is over
        (``"sending"``); ``"sent"`` when it is over already."""
        with self.create_lock:
            state = self.create_state
            if state == "queued":
                self.create_state = "withdrawn"
            elif state == "sending":
                self.on_sent.append(callback)
        if state == "queued":
            self.cancel()
            return "withdrawn"
        return state


def _sender(future: Future[Any]) -> Optional[_Handle]:
    """The future whose submitter can cancel its response: ``future`` itself or a journaled request's attempt."""
    for _ in range(4):  # outer -> attempt; never deeper, but a bound costs nothing
        if not isinstance(future, _Handle):
            return None
        if future.submitter is not None:
            return future
        if future.inner is None:
            return None
        future = future.inner
    return None


# The bound of a cancel the poller sends in the background for a cancelled future, retries included.
_BACKGROUND_CANCEL_BOUND = 10.0

# How long a second Ctrl-C still waits for the in-flight futures to be withdrawn or named (no I/O).
_WITHDRAW_BOUND = 1.0


class _Cancels:
    """The server cancels of one interrupted call: sent on a few short-lived threads, awaited until a deadline."""

    def __init__(self, deadline: float) -> None:
        self.deadline = deadline
        self.condition = threading.Condition()
        self.jobs: Deque[Tuple[Future[Any], _Handle, str]] = deque()
        self.waiting = 0  # cancels queued or running, and creates awaited
        self.threads = 0
        self.outcomes: Dict[str, str] = {}  # response id -> cancelled | finished | uncancelled
        self.unanswered: Dict[int, str] = {}  # creates on their way: id(handle) -> idempotency key
        self.reasons: Dict[str, None] = {}  # ordered set
        self.over = False

    def add(self, future: Future[Any]) -> None:
        """Start cancelling the response of ``future`` (called in the interrupted thread)."""
        handle = _sender(future)
        if handle is None:  # not made here: its own cancel() is all there is
            response_id = getattr(future, "response_id", None)
            if future.cancel() and response_id:
                with self.condition:
                    self.outcomes[response_id] = "cancelled"
            return
        if handle.response_id is None:
            with self.condition:
                self.waiting += 1
                self.unanswered[id(handle)] = handle.idempotency_key or "?"
            state = handle.withdraw_or_follow(partial(self.created, future, handle))
            if state == "sending":
                return
            self.created(future, handle)  # withdrawn (never sent), or over meanwhile
            return
        with self.condition:
            self.queue(future, handle, handle.response_id)

    def created(self, future: Future[Any], handle: _Handle) -> None:
        """A create we waited for is over (any thread): cancel its response, if it has one."""
        with self.condition:
            self.waiting -= 1
            self.unanswered.pop(id(handle), None)
            late = self.over
            if not late and handle.response_id:
                self.queue(future, handle, handle.response_id)
            self.condition.notify_all()
        if late or not handle.response_id:
            # Too late to wait for (or never sent): the poller cancels it if this client is still open.
            future.cancel()

    def queue(self, future: Future[Any], handle: _Handle, response_id: str) -> None:
        """Queue one cancel (the condition held)."""
        self.outcomes[response_id] = "uncancelled"
        self.jobs.append((future, handle, response_id))
        self.waiting += 1
        if self.threads < _CANCEL_THREADS:
            thread = threading.Thread(target=self.work, name="sail-lite-cancel", daemon=True)
            try:
                thread.start()
            except RuntimeError:  # interpreter shutdown: no new threads; the report says so
                self.reasons["no thread to send it"] = None
                return
            self.threads += 1

    def work(self) -> None:
        while True:
            with self.condition:
                if not self.jobs:
                    self.threads -= 1
                    return
                future, handle, response_id = self.jobs.popleft()
            outcome = self.cancel(handle, response_id)
            if outcome == "cancelled":
                future.cancel()  # a journal records it; the poller stops watching
            with self.condition:
                if not self.over:
                    self.outcomes[response_id] = outcome
                self.waiting -= 1
                self.condition.notify_all()

    def cancel(self, handle: _Handle, response_id: str) -> str:
        left = self.deadline - time.monotonic()
        if left <= 0 or self.over or handle.submitter is None:
            return "uncancelled"
        try:
            response = handle.submitter.cancel_within(response_id, left)
        except Exception as exc:  # noqa: BLE001 - reported by id; the reason names the error type
            with self.condition:
                self.reasons[f"the cancel failed: {type(exc).__name__}"] = None
            return "uncancelled"
        if response.status in CANCELLED_STATUSES:
            return "cancelled"
        return "finished" if response.is_terminal else "uncancelled"

    def wait(self) -> None:
        """Until every cancel is answered or the deadline passes (a KeyboardInterrupt ends it early)."""
        with self.condition:
            while self.waiting > 0 and not self.over:
                left = self.deadline - time.monotonic()
                if left <= 0:
                    self.reasons["the cancels ran out of time"] = None
                    return
                self.condition.wait(left)

    def stop(self, reason: str) -> None:
        with self.condition:
            self.reasons[reason] = None
            self.over = True
            self.condition.notify_all()

    def report(self) -> Interruption:
        with self.condition:
            self.over = True
            groups: Dict[str, List[str]] = {"cancelled": [], "finished": [], "uncancelled": []}
            for response_id, outcome in self.outcomes.items():
                groups[outcome].append(response_id)
            unanswered = tuple(self.unanswered.values())
            worrying = groups["uncancelled"] or unanswered
            return Interruption(
                cancelled=tuple(groups["cancelled"]),
                finished=tuple(groups["finished"]),
                uncancelled=tuple(groups["uncancelled"]),
                unanswered=unanswered,
                reason="; ".join(self.reasons) if worrying else "",
            )


# --- the submitter ------------------------------------------------------------------------------------------------


class Submitter:
    """Background responses on one client's request loop and poller. Thread-safe.

    Every method takes a :class:`~sail_lite._requester.Call` (the call's
    checked timeout, deadline, headers and key; see :meth:`call`) and a
    ``transform`` that turns the terminal response into the future's result
    (raising settles the future with that error).
    """

    def __init__(self, requester: Requester) -> None:
        self._requester = requester
        self._webhooks: Optional[WebhookReceiver] = None
        requester.bind_poller(self._poll_fetch, self._poll_cancel)

    def use_webhooks(self, receiver: Optional[WebhookReceiver]) -> None:
        """Complete background responses by ``receiver``'s webhooks from now on (``None``: stop).

        Background creates sent after this carry ``receiver.metadata()``
        (``completion_webhook``, ``webhook_token``) unless their metadata
        names a ``completion_webhook`` already (the caller's own webhook wins,
        and that response is polled as usual). A response whose
        ``completion_webhook`` is the receiver's URL and whose token is its
        token (made here, or by an earlier run with the same receiver
        settings and re-attached) is watched for its webhook: a delivery
        triggers one authoritative ``GET`` (or, with ``trust_body``, settles
        it with the delivered body) and polls follow the sparse safety
        schedule (``PollPolicy.webhook_interval``). The receiver is started
        on first use and never closed here: its owner closes it. The token
        is taken out of the metadata of every response this submitter hands
        back, so it reaches no repr, log or journal.
        """
        self._webhooks = receiver

    @property
    def webhooks(self) -> Optional[WebhookReceiver]:
        """The receiver in use (``None``: futures complete by polling alone)."""
        return self._webhooks

    def call(
        self,
        *,
        timeout: Optional[float] = None,
        deadline: Optional[float] = None,
        extra_headers: Optional[Mapping[str, str]] = None,
        idempotency_key: Optional[str] = None,
    ) -> Call:
        """A call's options, checked (:class:`InvalidRequestError` before anything is sent)."""
        return self._requester.call(
            timeout=timeout,
            deadline=deadline,
            extra_headers=extra_headers,
            idempotency_key=idempotency_key,
        )

    def submit(
        self,
        body: Mapping[str, Any],
        transform: Transform,
        call: Call,
        *,
        kind: str = "custom",
        journal: Optional[Journal] = None,
        job: Optional[str] = None,
        identity: Any = None,
        occurrence: Optional[int] = None,
        retry_failed: bool = False,
        convert: Optional[Callable[[Any], Any]] = None,
    ) -> ResponseFuture:
        """Create ``body`` (a background ``POST /responses`` body) on the pool; return its future at once.

        The future knows its idempotency key now and its response id once the
        create is accepted; it settles with ``transform(terminal response)``
        (then ``convert``, for a journaled one). Cancelling it cancels the
        response on the server. ``body`` is encoded here, so bad input raises
        in the caller and nothing is sent. With ``journal`` or ``job`` the key
        derives from the job and the request is recorded as ``kind``: see
        :func:`submit_request` for ``identity``, ``occurrence`` and
        ``retry_failed``.
        """
        if journal is None and job is None:
            return self._send(body, transform, call)
        if call.idempotency_key is not None:
            raise InvalidRequestError(
                "pass idempotency_key, or journal=/job= (which derive the key from the "
                "request), not both"
            )
        encode_json(body)  # bad input raises here, before anything is recorded

        def send(key: str) -> Future[Any]:
            return self._send(body, transform, call.replace(idempotency_key=key))

        def attach(response_id: str) -> Future[Any]:
            return self.attach(response_id, transform, call.replace(idempotency_key=None))

        return submit_request(
            body,
            kind=kind,
            send=send,
            attach=attach,
            journal=journal,
            job=job,
            identity=identity,
            occurrence=occurrence,
            retry_failed=retry_failed,
            convert=convert,
        )

    def attach(self, response_id: str, transform: Transform, call: Call) -> ResponseFuture:
        """A future of a response made anywhere (another thread, process or run), by its id."""
        response = self._get(path_id(response_id, "response id"), call)
        # Made at an unknown time before this watch: its turn would teach the poller nothing true.
        return self.watch(response, transform, call, learn=False)

    def watch(
        self,
        response: Response,
        transform: Transform,
        call: Call,
        future: Optional[ResponseFuture] = None,
        *,
        learn: bool = True,
    ) -> ResponseFuture:
        """Poll ``response`` until terminal on the client's poller; ``future`` (or a new one) settles then."""
        if future is None:
            future = _Handle(self, response_id=response.id)
        receiver = self._receiver_of(response)
        if self._webhooks is not None:  # a token of ours reaches no caller, repr or journal
            transform = partial(_without_token, self._webhooks, transform)
        nudge = self._requester.poller.watch(
            response,
            future,
            window=response.metadata.get("completion_window"),
            deadline_at=call.deadline_at,
            transform=transform,
            read_timeout=call.timeout,
            learn=learn,
            pushed=receiver is not None,
        )
        if receiver is not None and nudge is not None:
            _listen(receiver, response.id, future, nudge)
        return future

    def _with_webhook(self, body: Mapping[str, Any]) -> Mapping[str, Any]:
        """``body`` with the receiver's webhook in its metadata, when it is a background create
        without a ``completion_webhook`` of its own. Starts the receiver (a closed one raises
        :class:`~sail_lite.errors.ConfigurationError` here, before anything is sent)."""
        receiver = self._webhooks
        if receiver is None or not body.get("background"):
            return body
        metadata = body.get("metadata")
        metadata = dict(metadata) if isinstance(metadata, Mapping) else {}
        if "completion_webhook" in metadata:
            return body
        receiver.start()
        metadata.update(receiver.metadata())
        return {**body, "metadata": metadata}

    def _receiver_of(self, response: Response) -> Optional[WebhookReceiver]:
        """The receiver that hears ``response``'s webhook (``None``: polling alone)."""
        receiver = self._webhooks
        metadata = response.metadata
        if (
            receiver is None
            or metadata.get("completion_webhook") != receiver.public_url
            or not isinstance(metadata.get("webhook_token"), str)
            or not hmac.compare_digest(metadata["webhook_token"].encode(), receiver.token.encode())
        ):
            return None
        return receiver

    def _send(self, body: Mapping[str, Any], transform: Transform, call: Call) -> ResponseFuture:
        # Here, after a journal fingerprinted the body: the receiver's URL and token are this
        # run's, never part of what identifies the request (or of what is written down).
        body = self._with_webhook(body)
        payload = encode_json(body)
        key = call.idempotency_key or self._requester.new_idempotency_key()
        call = call.replace(idempotency_key=key)
        future = InFlight.collect(_Handle(self, idempotency_key=key, queued=True))

        def start() -> None:
            if not future.begin_create():
                return  # cancelled or withdrawn: nothing was created, nothing to cancel
            try:
                response = self._create(body, call, payload)
            except BaseException as exc:
                if not future.cancelled():
                    future.set_exception(exc)
                future.end_create()
                return
            future.set_accepted(response.id)
            # A cancel that raced with the create is seen by watch's done-callback.
            self.watch(response, transform, call, future)
            future.end_create()

        self._requester.poller.start(start)  # start() settles the future itself
        return future

    def start_create(self, body: Mapping[str, Any], call: Call) -> ResponseFuture:
        """:meth:`create` on a thread of its own; a future of the reply (the response as created) at once.

        For a caller that blocks on the create itself (``responses.create``):
        started as ``block_on(lambda: start_create(...))``, the future is
        tracked before the thread starts, so an interrupt, wherever it lands, withdraws a
        create not sent yet and cancels the response once the reply names it
        (a foreground request the server finishes before it replies is named
        ``finished``). A thread per call, not the client's pool: a foreground
        create holds its thread for a whole turn.
        """
        body = self._with_webhook(body)
        key = call.idempotency_key or self._requester.new_idempotency_key()
        call = call.replace(idempotency_key=key)
        future = InFlight.collect(_Handle(self, idempotency_key=key, queued=True))

        def run() -> None:
            if not future.begin_create():
                return
            try:
                response = self.create(body, call)
            except BaseException as exc:
                if not future.cancelled():
                    future.set_exception(exc)
            else:
                future.set_accepted(response.id)
                try:
                    future.set_result(response)
                except InvalidStateError:
                    pass  # cancelled meanwhile: the interrupted caller cancels it by id
            finally:
                future.end_create()

        threading.Thread(target=run, name="sail-lite-create", daemon=True).start()
        return future

    # --- the wire calls on one response ------------------------------------------------------

    def create(
        self, body: Mapping[str, Any], call: Call, payload: Optional[bytes] = None
    ) -> Response:
        """``POST /responses`` (``payload``: ``body`` already encoded). Blocks; retried under one key."""
        return _strip_token(self._webhooks, self._create(body, call, payload))

    def _create(
        self, body: Mapping[str, Any], call: Call, payload: Optional[bytes] = None
    ) -> Response:
        kind = "read" if body.get("background") else "inference"
        if payload is None:
            reply = self._requester.request(
                "POST", "/responses", call, json_body=body, kind=kind, key_header="Idempotency-Key"
            )
        else:
            reply = self._requester.request(
                "POST",
                "/responses",
                call,
                body=payload,
                content_type=_JSON,
                kind=kind,
                key_header="Idempotency-Key",
            )
        return self._response(reply)

    def retrieve(self, response_id: str, call: Call) -> Response:
        """``GET /responses/{id}`` (404 -> :class:`~sail_lite.errors.NotFoundError`)."""
        return _strip_token(self._webhooks, self._get(response_id, call))

    def _get(self, response_id: str, call: Call) -> Response:
        reply = self._requester.request(
            "GET", f"/responses/{response_id}", call, response_id=response_id
        )
        return self._response(reply)

    def cancel(self, response_id: str, call: Call) -> Response:
        """``POST /responses/{id}/cancel``; retried (it is idempotent)."""
        reply = self._requester.request(
            "POST",
            f"/responses/{response_id}/cancel",
            call,
            replay_safe=True,
            response_id=response_id,
        )
        return _strip_token(self._webhooks, self._response(reply))

    def cancel_within(self, response_id: str, seconds: float) -> Response:
        """:meth:`cancel`, retries included, in at most about ``seconds`` (what an interrupted call has left)."""
        return self.cancel(response_id, self.call(timeout=seconds, deadline=seconds))

    def _response(self, payload: Any) -> Response:
        response = Response.from_dict(payload)
        self._requester.note_status(response.status, response.id)
        return response

    def _poll_fetch(
        self, response_id: str, deadline_at: Optional[float], timeout: Optional[float]
    ) -> Response:
        return self._get(response_id, Call(timeout=timeout, deadline_at=deadline_at))

    def _poll_cancel(self, response_id: str) -> Response:
        # A cancelled future's cancel, sent in the background: best effort, and bounded so that
        # it can never hold the interpreter's exit (which joins the poller's threads) for long.
        return self.cancel(response_id, self.call(deadline=_BACKGROUND_CANCEL_BOUND))


# --- completion webhooks -------------------------------------------------------------------------------------


def _listen(
    receiver: WebhookReceiver,
    response_id: str,
    future: Future[Any],
    nudge: Callable[[Optional[Response]], None],
) -> None:
    """Have ``receiver`` nudge the poller's watch of ``response_id`` on each delivery until ``future`` is done.

    Watched again after each delivery (the receiver calls a watcher once), so
    a repeat or a later real delivery after a forged or early one is heard
    too; a repeat during the confirming GET only asks for one more GET if
    that one saw the response still running.
    """

    def heard(rid: str, trusted: Optional[Response]) -> None:
        if future.done():
            return
        nudge(_strip_token(receiver, trusted) if trusted is not None else None)
        if not future.done():
            receiver.watch(rid, heard)
            if future.done():  # settled meanwhile: its done-callback may have run already
                receiver.unwatch(rid)

    receiver.watch(response_id, heard)
    future.add_done_callback(lambda _done: receiver.unwatch(response_id))


def _strip_token(receiver: Optional[WebhookReceiver], response: Response) -> Response:
    """``response`` without ``receiver``'s token in its metadata (the server echoes metadata back)."""
    token = response.metadata.get("webhook_token")
    if receiver is None or not isinstance(token, str) or token != receiver.token:
        return response
    metadata = {k: v for k, v in response.metadata.items() if k != "webhook_token"}
    raw = dict(response.raw)
    if isinstance(raw.get("metadata"), dict):
        raw["metadata"] = {k: v for k, v in raw["metadata"].items() if k != "webhook_token"}
    return replace(response, metadata=metadata, raw=raw)


def _without_token(
    receiver: Optional[WebhookReceiver], transform: Transform, response: Response
) -> Any:
    return transform(_strip_token(receiver, response))


# --- journaling one finished request ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    """What one finished request means: a ``result``, an ``error``, or ``resend`` (send the create again).

    With ``resend``, ``row`` is the new attempt's journal row when one was
    claimed (its key is the one to send), else ``None`` (send the same key).
    """

    result: Any = None
    error: Optional[BaseException] = None
    resend: bool = False
    row: Optional[JournalRow] = None


def record_outcome(
    journal: Optional[Journal],
    job: Optional[str],
    key: Optional[str],
    entry: Optional[JournalEntry],
    future: Future[Any],
    attached: bool,
    retry_failed: bool,
) -> Outcome:
    """Journal one finished request (when ``journal`` and ``key``) and say what comes next.

    Shared by the map engine and :func:`submit_request`: one definition of
    what each outcome means. A response that an attach finds gone (404) is
    sent again with the same key; one an attach finds cancelled (left by a
    run that cancelled it) is sent again under the next attempt's key; one
    found cancelled otherwise is journaled ``cancelled`` (a re-run sends it
    again), and its error returned.
    """
    recording = journal is not None and key is not None
    if future.cancelled():
        if recording:
            journal.record_cancelled(key)  # type: ignore[union-attr,arg-type]
        return Outcome(error=SailError("request cancelled"))
    exc = future.exception()
    if exc is None:
        result = future.result()
        if recording:
            response_id = getattr(result, "response_id", None) or getattr(
                future, "response_id", None
            )
            journal.record_result(key, result, response_id)  # type: ignore[union-attr,arg-type]
        return Outcome(result=result)
    if attached and isinstance(exc, NotFoundError):
        if recording:
            journal.forget_response(key)  # type: ignore[union-attr,arg-type]
        return Outcome(resend=True)
    if attached and isinstance(exc, ResponseCancelledError) and recording and entry is not None:
        journal.record_cancelled(key)  # type: ignore[union-attr,arg-type]
        row = journal.claim(job, [entry], retry_failed=retry_failed)[0]  # type: ignore[union-attr,arg-type]
        return Outcome(resend=True, row=row)
    if isinstance(exc, ResponseCancelledError) and recording:
        # Cancelled on the server (by an interrupted call whose poll saw it first, or by anyone):
        # journaled "cancelled", not "failed", so a re-run sends it again under a new attempt key.
        journal.record_cancelled(key)  # type: ignore[union-attr,arg-type]
        return Outcome(error=exc)
    if recording:
        if is_terminal_failure(exc):
            journal.record_failure(key, exc)  # type: ignore[union-attr,arg-type]
        else:
            journal.record_transient(key, exc)  # type: ignore[union-attr,arg-type]
    return Outcome(error=exc)


def journal_job(journal: Optional[Journal], job: Optional[str]) -> Optional[str]:
    """The job a map or submit runs under: ``job`` (checked), else the journal's default; the journal checked."""
    if journal is not None and not isinstance(journal, Journal):
        raise InvalidRequestError(
            f"journal must be a sail_lite.Journal (Journal(path)), got {type(journal).__name__}"
        )
    if job is not None:
        return check_job_name(job)
    return journal.default_job if journal is not None else None


def identity_name(named: Any, what: str) -> str:
    """What names a request in its key when the caller names it: a string as it is, anything else as JSON."""
    return named if isinstance(named, str) else canonical_json(named, what)


# --- one journaled request: submit(..., journal=, job=) -----------------------------------------------------------


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

    ``body`` (signed-URL queries redacted) is the recorded item, its
    fingerprint and, unless ``identity`` names the request, what its key
    derives from, with ``job`` and ``occurrence`` (default with a journal:
    how many equal requests this :class:`Journal` object submitted before;
    without one it must be given). ``send(key)`` starts the create,
    ``attach(response_id)`` re-attaches; ``convert`` maps the journaled
    result to what the caller gets.

    With a journal the row is committed before the create is sent, the
    response id as soon as it is accepted, the result before the future
    resolves. A finished request comes back as a done future with no request
    (a failure raised again, or re-sent under a new attempt key with
    ``retry_failed``); an accepted one is re-attached; a pending one is
    re-sent with its key. Another fingerprint under a recorded key raises
    :class:`~sail_lite.journal.JournalMismatchError`, recording nothing.
    Cancelling the future cancels the response on the server and journals it
    ``cancelled``.
    """
    job = journal_job(journal, job)
    if occurrence is not None and (
        isinstance(occurrence, bool) or not isinstance(occurrence, int) or occurrence < 0
    ):
        raise InvalidRequestError(
            "occurrence must be an int >= 0 (which of several equal requests this is), got "
            f"{occurrence!r}"
        )
    if job is None:
        raise InvalidRequestError("submit needs job= or journal= to derive an idempotency key")
    # A signed URL's query is a credential: never part of what is recorded.
    item_json = canonical_json(redact_secrets(dict(body)), "the request")
    name = item_json if identity is None else identity_name(identity, "identity")
    digest = identity_digest(job, name)
    request = _JournaledRequest(journal, job, send, attach, retry_failed, convert)
    if journal is None:
        if occurrence is None:
            raise InvalidRequestError(
                "submit(job=...) without a journal needs occurrence= (0 for the first of equal requests, "
                "1 for the second, ...): without a journal nothing counts equal requests, and one key for "
                "all of them would replay one sample"
            )
        return request.begin(None, key_from_digest(job, digest, occurrence))
    params_json = journal.begin_job(job, kind=kind, params={})
    if occurrence is None:
        occurrence = journal.next_occurrence(digest)
    request.entry = JournalEntry(
        key_from_digest(job, digest, occurrence),
        request_fingerprint(params_json, item_json),
        0,
        item_json,
    )
    row = journal.claim(job, [request.entry], retry_failed=retry_failed, append=True)[0]
    return request.begin(row, request.entry.key)


class _JournaledRequest:
    """One submitted request behind the future its caller holds: sends, re-attaches, re-sends, journals."""

    def __init__(
        self,
        journal: Optional[Journal],
        job: str,
        send: Callable[[str], Future[Any]],
        attach: Attach,
        retry_failed: bool,
        convert: Optional[Callable[[Any], Any]],
    ) -> None:
        self.journal = journal
        self.job = job
        self.entry: Optional[JournalEntry] = None
        self.send = send
        self.attach = attach
        self.retry_failed = retry_failed
        self.convert = convert
        self.lock = threading.Lock()
        self.inner: Optional[Future[Any]] = None
        self.attached = False
        self.key = ""
        self.sent_key = ""
        self.outer = _Handle()  # its attempt (inner) is what the server knows

    def begin(self, row: Optional[JournalRow], key: str) -> ResponseFuture:
        self.key = key
        outer = self.outer
        outer.idempotency_key = self.sent_key = row.idempotency_key if row is not None else key
        if row is not None and row.status == "completed":
            outer.response_id = row.response_id
            self.settle(Outcome(result=decode_result(row.result_json or "")))
            return outer
        if row is not None and row.status == "failed":
            outer.response_id = row.response_id
            self.settle(Outcome(error=decode_error(row.error_json or "{}")))
            return outer
        response_id = row.response_id if row is not None and row.status == "accepted" else None
        outer.response_id = response_id
        outer.add_done_callback(self.cancel_inner)
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
            self.inner = self.outer.inner = inner
        inner.add_done_callback(self.finish)
        if self.outer.cancelled():
            inner.cancel()

    def accepted(self, inner: Any) -> None:
        try:
            if self.journal is not None:
                self.journal.record_accepted(self.key, inner.response_id or "")
        except BaseException as exc:  # the id is not durable: fail now, leave it to a re-run's key
            _logger.warning("could not journal response %s: %s", inner.response_id, exc)
            self.settle(Outcome(error=exc))
            return
        self.outer.set_accepted(inner.response_id or "")

    def finish(self, inner: Future[Any]) -> None:
        try:
            outcome = record_outcome(
                self.journal,
                self.job,
                self.key,
                self.entry,
                inner,
                self.attached,
                self.retry_failed,
            )
        except BaseException as exc:  # a journal write failed: never hand out what is not recorded
            outcome = Outcome(error=exc)
        if outcome.resend:
            if outcome.row is not None:
                self.outer.idempotency_key = self.sent_key = outcome.row.idempotency_key
            if not self.outer.done():
                self.start(None)
            return
        self.settle(outcome)

    def settle(self, outcome: Outcome) -> None:
        outer = self.outer
        if outer.done():
            return
        try:
            if outcome.error is not None:
                outer.set_exception(outcome.error)
            else:
                result = outcome.result
                outer.set_result(self.convert(result) if self.convert is not None else result)
        except InvalidStateError:
            pass  # cancelled (or failed by a journal error) meanwhile
        except Exception as exc:  # convert raised: the caller gets that
            try:
                outer.set_exception(exc)
            except InvalidStateError:
                pass

    def cancel_inner(self, outer: Future[Any]) -> None:
        if not outer.cancelled():
            return
        with self.lock:
            inner = self.inner
        if inner is not None:
            inner.cancel()  # cancels the response on the server; finish() journals "cancelled"
