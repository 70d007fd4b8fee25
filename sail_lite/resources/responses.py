"""``client.responses``: create, retrieve, cancel, wait, submit, attach."""

from __future__ import annotations

from typing import (
    TYPE_CHECKING,
    Any,
    Callable,
    Dict,
    Iterable,
    Iterator,
    Mapping,
    Optional,
    Sequence,
    TypeVar,
    Union,
)

from .._checks import encode_json, model_id, path_id
from .._future import ResponseFuture
from .._redact import redact_secrets
from ..errors import (
    InvalidRequestError,
    ResponseCancelledError,
    ResponseExpiredError,
    ResponseFailedError,
)
from ..types import Response
from ._common import (
    RAW_PROMPT_PLACEHOLDER,
    check_prompt_tokens,
    extra_fields,
    normalize_stop,
    sampling_fields,
    string_list,
)

if TYPE_CHECKING:  # pragma: no cover
    from .._requester import Call, Requester
    from ..journal import Journal
    from ..pipeline import Progress

__all__ = ["Responses", "check_result"]

T = TypeVar("T")
_JSON = "application/json"


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


class Responses:
    """The Responses API. Thread-safe; every call goes through the client's request loop.

    Every method takes ``timeout`` (seconds one HTTP attempt may take),
    ``deadline`` (seconds the whole call may take, retries and polls
    included) and ``extra_headers``; every create takes ``idempotency_key``
    (a call that gives up carries the key it used on its error: pass it
    again and the server replays instead of running twice).
    """

    def __init__(self, requester: Requester) -> None:
        self._requester = requester
        requester.bind_poller(self._poll_fetch, self._poll_cancel)

    def create(
        self,
        *,
        model: str,
        input: Union[str, Sequence[Mapping[str, Any]], None] = None,
        raw_prompt_tokens: Optional[Sequence[int]] = None,
        max_output_tokens: Optional[int] = None,
        temperature: Optional[float] = None,
        top_p: Optional[float] = None,
        stop: Union[str, Sequence[str], Sequence[int], None] = None,
        include: Optional[Sequence[str]] = None,
        background: bool = False,
        metadata: Optional[Mapping[str, Any]] = None,
        lora: Optional[str] = None,
        completion_window: Optional[str] = None,
        prompt_cache_key: Optional[str] = None,
        extra_body: Optional[Mapping[str, Any]] = None,
        idempotency_key: Optional[str] = None,
        timeout: Optional[float] = None,
        deadline: Optional[float] = None,
        extra_headers: Optional[Mapping[str, str]] = None,
    ) -> Response:
        """``POST /responses``.

        With ``background=True`` returns at once with the queued response
        (use :meth:`wait` or :meth:`submit` to get the result). Otherwise
        blocks until the response is finished and returns it, raising
        :class:`ResponseFailedError` if it failed; a reply that is not
        finished yet (queued, in progress, or a status this client does not
        know) is waited on like a background response. Retried safely: one
        idempotency key covers every attempt.
        """
        call = self._requester.call(
            timeout=timeout,
            deadline=deadline,
            extra_headers=extra_headers,
            idempotency_key=idempotency_key,
        )
        body = _body(locals())
        response = self._post(body, call)
        if not background:
            if not response.is_terminal:
                return self._watch(response, check_result, call).result()
            check_result(response)
        return response

    def submit(
        self,
        *,
        model: str,
        input: Union[str, Sequence[Mapping[str, Any]], None] = None,
        raw_prompt_tokens: Optional[Sequence[int]] = None,
        max_output_tokens: Optional[int] = None,
        temperature: Optional[float] = None,
        top_p: Optional[float] = None,
        stop: Union[str, Sequence[str], Sequence[int], None] = None,
        include: Optional[Sequence[str]] = None,
        metadata: Optional[Mapping[str, Any]] = None,
        lora: Optional[str] = None,
        completion_window: Optional[str] = None,
        prompt_cache_key: Optional[str] = None,
        extra_body: Optional[Mapping[str, Any]] = None,
        idempotency_key: Optional[str] = None,
        timeout: Optional[float] = None,
        deadline: Optional[float] = None,
        extra_headers: Optional[Mapping[str, str]] = None,
        journal: Optional[Journal] = None,
        job: Optional[str] = None,
        identity: Any = None,
        occurrence: Optional[int] = None,
        retry_failed: bool = False,
    ) -> ResponseFuture[Response]:
        """Create a background response and return a future of its terminal state.

        Takes :meth:`create`'s arguments (always background) and returns at
        once: the create runs on the client's pool. The future knows its
        ``idempotency_key`` at once and its ``response_id`` as soon as the
        create is accepted; it resolves to the completed (or incomplete)
        response or raises its typed error; ``future.cancel()`` cancels the
        response on the server. ``journal``, ``job``, ``identity``,
        ``occurrence`` and ``retry_failed`` make it durable and resumable
        exactly as :meth:`~sail_lite.resources.tokens.Tokens.submit`.
        """
        call = self._requester.call(
            timeout=timeout,
            deadline=deadline,
            extra_headers=extra_headers,
            idempotency_key=idempotency_key,
        )
        body = _body(locals(), background=True)
        if journal is not None or job is not None:
            return self._submit_durably(
                body,
                check_result,
                call,
                kind="responses.submit",
                journal=journal,
                job=job,
                identity=identity,
                occurrence=occurrence,
                retry_failed=retry_failed,
            )
        return self._submit(body, check_result, call)

    def map(
        self,
        requests: Iterable[Union[str, Mapping[str, Any]]],
        *,
        journal: Optional[Journal] = None,
        job: Optional[str] = None,
        max_in_flight: int = 64,
        progress: Optional[Callable[[Progress], None]] = None,
        on_interrupt: Optional[str] = None,
        return_exceptions: bool = False,
        retry_failed: bool = False,
        timeout: Optional[float] = None,
        deadline: Optional[float] = None,
        **create_args: Any,
    ) -> Iterator[Response]:
        """:meth:`submit` over many requests; yield the terminal responses in input order.

        Each request is an ``input`` string or a mapping of :meth:`create`
        arguments overriding ``create_args`` (the shared ones, e.g.
        ``model``). Lazy, bounded by ``max_in_flight``, and with ``job`` /
        ``journal`` replay-safe and resumable exactly as
        :meth:`~sail_lite.resources.tokens.Tokens.map`.
        """
        from ..pipeline import _map_job

        return _map_job(
            "responses",
            self,
            requests,
            create_args,
            journal=journal,
            job=job,
            max_in_flight=max_in_flight,
            progress=progress,
            on_interrupt=on_interrupt,
            return_exceptions=return_exceptions,
            retry_failed=retry_failed,
            timeout=timeout,
            deadline=deadline,
        )

    def retrieve(
        self,
        response_id: str,
        *,
        timeout: Optional[float] = None,
        deadline: Optional[float] = None,
        extra_headers: Optional[Mapping[str, str]] = None,
    ) -> Response:
        """``GET /responses/{id}``: the response's current state (404 -> NotFoundError)."""
        call = self._requester.call(timeout=timeout, deadline=deadline, extra_headers=extra_headers)
        return self._get(path_id(response_id, "response id"), call)

    def cancel(
        self,
        response_id: str,
        *,
        timeout: Optional[float] = None,
        deadline: Optional[float] = None,
        extra_headers: Optional[Mapping[str, str]] = None,
    ) -> Response:
        """``POST /responses/{id}/cancel``; a terminal response comes back unchanged. Retried: it is idempotent."""
        response_id = path_id(response_id, "response id")
        call = self._requester.call(timeout=timeout, deadline=deadline, extra_headers=extra_headers)
        return self._cancel(response_id, call)

    def wait(
        self,
        response_id: str,
        *,
        deadline: Optional[float] = None,
        timeout: Optional[float] = None,
        extra_headers: Optional[Mapping[str, str]] = None,
    ) -> Response:
        """Block until the response is terminal; return it or raise its typed error.

        Polls on the client's poller on a schedule set by the response's
        completion window. ``deadline`` (seconds) bounds the whole wait
        (without one, the poll policy's bound for the window applies): then
        :class:`DeadlineExceededError` carries the response id and the work
        goes on on the server.
        """
        return self.attach(
            response_id, deadline=deadline, timeout=timeout, extra_headers=extra_headers
        ).result()

    def attach(
        self,
        response_id: str,
        *,
        deadline: Optional[float] = None,
        timeout: Optional[float] = None,
        extra_headers: Optional[Mapping[str, str]] = None,
    ) -> ResponseFuture[Response]:
        """Like :meth:`wait`, as a future; cancelling it cancels the response on the server.

        Re-attaches to a background response made anywhere (another thread,
        process or run) by its id.
        """
        call = self._requester.call(timeout=timeout, deadline=deadline, extra_headers=extra_headers)
        return self._attach(response_id, check_result, call)

    # --- shared with the other resources ---------------------------------

    def _submit(
        self, body: Dict[str, Any], transform: Callable[[Response], T], call: Call
    ) -> ResponseFuture[T]:
        """Create ``body`` on the pool; the future settles with ``transform(terminal response)``."""
        payload = encode_json(
            body
        )  # here, so bad input raises in the caller, before anything is sent
        key = call.idempotency_key or self._requester.new_idempotency_key()
        call = call.replace(idempotency_key=key)
        poller = self._requester.poller
        future: ResponseFuture[T] = ResponseFuture(idempotency_key=key)

        def start() -> None:
            if future.cancelled():
                return  # nothing was created, nothing to cancel
            try:
                response = self._post(body, call, payload)
            except BaseException as exc:
                if not future.cancelled():
                    future.set_exception(exc)
                return
            future._set_accepted(response.id)
            # A cancel that raced with the create is seen by watch's done-callback.
            self._watch(response, transform, call, future)

        poller.start(start)  # start() settles the future itself: no second future per create
        return future

    def _submit_durably(
        self,
        body: Dict[str, Any],
        transform: Callable[[Response], Any],
        call: Call,
        *,
        kind: str,
        journal: Optional[Journal],
        job: Optional[str],
        identity: Any,
        occurrence: Optional[int],
        retry_failed: bool,
        convert: Optional[Callable[[Any], Any]] = None,
    ) -> ResponseFuture[Any]:
        """:meth:`_submit` with a key derived from ``job`` and recorded in ``journal`` (see ``pipeline.submit_request``)."""
        if call.idempotency_key is not None:
            raise InvalidRequestError(
                "pass idempotency_key, or journal=/job= (which derive the key from the "
                "request), not both"
            )
        from ..pipeline import submit_request

        def send(key: str) -> ResponseFuture[Any]:
            return self._submit(body, transform, call.replace(idempotency_key=key))

        def attach(response_id: str) -> ResponseFuture[Any]:
            return self._attach(response_id, transform, call.replace(idempotency_key=None))

        encode_json(body)  # bad input raises here, before anything is recorded
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

    def _attach(
        self, response_id: str, transform: Callable[[Response], T], call: Call
    ) -> ResponseFuture[T]:
        response = self._get(path_id(response_id, "response id"), call)
        # Made at an unknown time before this watch: its turn would teach the poller nothing true.
        return self._watch(response, transform, call, learn=False)

    def _watch(
        self,
        response: Response,
        transform: Callable[[Response], T],
        call: Call,
        future: Optional[ResponseFuture[T]] = None,
        *,
        learn: bool = True,
    ) -> ResponseFuture[T]:
        if future is None:
            future = ResponseFuture(response_id=response.id)
        self._requester.poller.watch(
            response,
            future,
            window=response.metadata.get("completion_window"),
            deadline_at=call.deadline_at,
            transform=transform,
            read_timeout=call.timeout,
            learn=learn,
        )
        return future

    def _post(self, body: Dict[str, Any], call: Call, payload: Optional[bytes] = None) -> Response:
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

    def _get(self, response_id: str, call: Call) -> Response:
        return self._response(
            self._requester.request(
                "GET", "/responses/" + response_id, call, response_id=response_id
            )
        )

    def _cancel(self, response_id: str, call: Call) -> Response:
        return self._response(
            self._requester.request(
                "POST",
                f"/responses/{response_id}/cancel",
                call,
                replay_safe=True,
                response_id=response_id,
            )
        )

    def _response(self, payload: Any) -> Response:
        response = Response.from_dict(payload)
        self._requester.note_status(response.status, response.id)
        return response

    def _poll_fetch(
        self, response_id: str, deadline_at: Optional[float], timeout: Optional[float]
    ) -> Response:
        from .._requester import Call

        return self._get(response_id, Call(timeout=timeout, deadline_at=deadline_at))

    def _poll_cancel(self, response_id: str) -> Response:
        return self._cancel(response_id, self._requester.call())


_BODY_FIELDS = (
    "model",
    "input",
    "raw_prompt_tokens",
    "max_output_tokens",
    "temperature",
    "top_p",
    "stop",
    "include",
    "background",
    "metadata",
    "lora",
    "completion_window",
    "prompt_cache_key",
    "extra_body",
)


def _body(arguments: Mapping[str, Any], **overrides: Any) -> Dict[str, Any]:
    """The wire body from a create/submit call's arguments (its ``locals()``), checked."""
    fields = {name: arguments.get(name) for name in _BODY_FIELDS}
    fields.update(overrides)
    body = extra_fields(fields["extra_body"])
    body["model"] = model_id(fields["model"])
    text = fields["input"]
    if fields["raw_prompt_tokens"] is not None:
        body["raw_prompt_tokens"] = check_prompt_tokens(fields["raw_prompt_tokens"])
        body["input"] = RAW_PROMPT_PLACEHOLDER
    elif isinstance(text, str) and text:
        body["input"] = text
    elif isinstance(text, (list, tuple)) and text:
        body["input"] = list(text)
    else:
        raise InvalidRequestError(
            "input must be a non-empty string or list of messages (or pass raw_prompt_tokens)"
        )
    background = bool(fields["background"])
    if background:
        body["background"] = True
    sampling_fields(
        body,
        max_output_tokens=fields["max_output_tokens"],
        temperature=fields["temperature"],
        top_p=fields["top_p"],
        metadata=fields["metadata"],
        lora=fields["lora"],
        completion_window=fields["completion_window"],
        background=background,
    )
    if fields["stop"] is not None:
        body["stop"] = normalize_stop(fields["stop"])
    if fields["include"] is not None:
        body["include"] = string_list("include", fields["include"])
    if fields["prompt_cache_key"] is not None:
        if not isinstance(fields["prompt_cache_key"], str):
            raise InvalidRequestError("prompt_cache_key must be a string")
        body["prompt_cache_key"] = fields["prompt_cache_key"]
    return body
