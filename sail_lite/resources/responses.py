"""``client.responses``: create, retrieve, cancel, wait, submit, attach, map."""

from __future__ import annotations

import functools
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
    Union,
)

from .._checks import model_id, path_id
from .._future import ResponseFuture
from ..errors import InvalidRequestError
from ..streaming import Stream, stream_body
from ..submission import InFlight, Submitter, block_on, check_result
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

__all__ = ["Responses", "check_result", "response_body", "stream_create"]

InputArg = Union[str, Sequence[Mapping[str, Any]], None]
StopArg = Union[int, str, Sequence[str], Sequence[int], None]


class Responses:
    """The Responses API. Thread-safe; every call goes through the client's request loop.

    Every method takes ``timeout`` (seconds one HTTP attempt may take),
    ``deadline`` (seconds the whole call may take, retries and polls
    included) and ``extra_headers``; every create takes ``idempotency_key``
    (a call that gives up carries the key it used on its error: pass it
    again and the server replays instead of running twice). Background work
    goes through :attr:`submission`, the client's
    :class:`~sail_lite.submission.Submitter`.
    """

    def __init__(self, requester: Requester) -> None:
        self.submission = Submitter(requester)
        self._requester = requester

    def create(
        self,
        *,
        model: str,
        input: InputArg = None,
        raw_prompt_tokens: Optional[Sequence[int]] = None,
        max_output_tokens: Optional[int] = None,
        temperature: Optional[float] = None,
        top_p: Optional[float] = None,
        stop: StopArg = None,
        include: Optional[Sequence[str]] = None,
        background: bool = False,
        stream: bool = False,
        metadata: Optional[Mapping[str, Any]] = None,
        lora: Optional[str] = None,
        completion_window: Optional[str] = None,
        prompt_cache_key: Optional[str] = None,
        extra_body: Optional[Mapping[str, Any]] = None,
        idempotency_key: Optional[str] = None,
        timeout: Optional[float] = None,
        deadline: Optional[float] = None,
        extra_headers: Optional[Mapping[str, str]] = None,
    ) -> Union[Response, Stream]:
        """``POST /responses``.

        With ``background=True`` returns at once with the queued response (use :meth:`wait` or
        :meth:`submit` to get the result). Otherwise blocks until the response is finished and
        returns it, raising :class:`ResponseFailedError` if it failed; a reply that is not finished
        yet (queued, in progress, or a status this client does not know) is waited on like a
        background response. Retried safely: one idempotency key covers every attempt. On Ctrl-C,
        what the call started is cancelled on the server and the ``KeyboardInterrupt`` names it
        (:func:`~sail_lite.submission.block_on`). With ``stream=True`` returns a
        :class:`~sail_lite.streaming.Stream` of events once the headers arrive (see
        :func:`stream_create`); with ``background=True`` too, :class:`InvalidRequestError`.
        """
        call = self.submission.call(
            timeout=timeout,
            deadline=deadline,
            extra_headers=extra_headers,
            idempotency_key=idempotency_key,
        )
        body = response_body(
            model=model,
            input=input,
            raw_prompt_tokens=raw_prompt_tokens,
            max_output_tokens=max_output_tokens,
            temperature=temperature,
            top_p=top_p,
            stop=stop,
            include=include,
            background=background,
            metadata=metadata,
            lora=lora,
            completion_window=completion_window,
            prompt_cache_key=prompt_cache_key,
            extra_body=extra_body,
            stream=stream,
        )
        if stream:
            return stream_create(self._requester, body, call)
        # The create, then the wait, through block_on: Ctrl-C cancels what this call started.
        in_flight = InFlight()
        start = functools.partial(self.submission.start_create, body, call)
        response = block_on(start, in_flight)  # the create's future is tracked as it is made
        if not background:
            if not response.is_terminal:
                return block_on(self.submission.watch(response, check_result, call), in_flight)
            check_result(response)
        return response

    def submit(
        self,
        *,
        model: str,
        input: InputArg = None,
        raw_prompt_tokens: Optional[Sequence[int]] = None,
        max_output_tokens: Optional[int] = None,
        temperature: Optional[float] = None,
        top_p: Optional[float] = None,
        stop: StopArg = None,
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
    ) -> ResponseFuture:
        """Create a background response and return a future of its terminal state.

        Takes :meth:`create`'s arguments (always background) and returns at
        once (see :meth:`~sail_lite.submission.Submitter.submit`); the future
        resolves to the completed (or incomplete) response or raises its
        typed error. ``journal``, ``job``, ``identity``, ``occurrence`` and
        ``retry_failed`` make it durable and resumable exactly as
        :meth:`~sail_lite.resources.tokens.Tokens.submit`.
        """
        call = self.submission.call(
            timeout=timeout,
            deadline=deadline,
            extra_headers=extra_headers,
            idempotency_key=idempotency_key,
        )
        body = response_body(
            model=model,
            input=input,
            raw_prompt_tokens=raw_prompt_tokens,
            max_output_tokens=max_output_tokens,
            temperature=temperature,
            top_p=top_p,
            stop=stop,
            include=include,
            background=True,
            metadata=metadata,
            lora=lora,
            completion_window=completion_window,
            prompt_cache_key=prompt_cache_key,
            extra_body=extra_body,
        )
        return self.submission.submit(
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

    def map(
        self,
        requests: Iterable[Union[str, Mapping[str, Any]]],
        *,
        model: Optional[str] = None,
        max_output_tokens: Optional[int] = None,
        temperature: Optional[float] = None,
        top_p: Optional[float] = None,
        stop: StopArg = None,
        include: Optional[Sequence[str]] = None,
        metadata: Optional[Mapping[str, Any]] = None,
        lora: Optional[str] = None,
        completion_window: Optional[str] = None,
        prompt_cache_key: Optional[str] = None,
        extra_body: Optional[Mapping[str, Any]] = None,
        journal: Optional[Journal] = None,
        job: Optional[str] = None,
        max_in_flight: int = 64,
        progress: Optional[Callable[[Progress], None]] = None,
        on_interrupt: Optional[str] = None,
        return_exceptions: bool = False,
        retry_failed: bool = False,
        timeout: Optional[float] = None,
        deadline: Optional[float] = None,
        extra_headers: Optional[Mapping[str, str]] = None,
    ) -> Iterator[Response]:
        """:meth:`submit` over many requests; yield the terminal responses in input order.

        Each request is an ``input`` string or a mapping of :meth:`submit`
        arguments overriding the shared ones given here (``model``, ...).
        Lazy, bounded, keyed and resumable exactly as
        :meth:`~sail_lite.resources.tokens.Tokens.map`; checked at the call.
        """
        shared = _given(
            model=model,
            max_output_tokens=max_output_tokens,
            temperature=temperature,
            top_p=top_p,
            stop=stop,
            include=include,
            metadata=metadata,
            lora=lora,
            completion_window=completion_window,
            prompt_cache_key=prompt_cache_key,
            extra_body=extra_body,
        )
        # Items bring their own input (and may bring the model): stand-ins let the rest be checked now.
        response_body(**{"model": "-", "input": "-", **shared, "background": True})
        from ..pipeline import (
            map_job,
        )  # the map engine loads with the first map, not with the client

        return map_job(
            "responses",
            self,
            requests,
            shared,
            journal=journal,
            job=job,
            max_in_flight=max_in_flight,
            progress=progress,
            on_interrupt=on_interrupt,
            return_exceptions=return_exceptions,
            retry_failed=retry_failed,
            timeout=timeout,
            deadline=deadline,
            extra_headers=extra_headers,
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
        call = self.submission.call(timeout=timeout, deadline=deadline, extra_headers=extra_headers)
        return self.submission.retrieve(path_id(response_id, "response id"), call)

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
        call = self.submission.call(timeout=timeout, deadline=deadline, extra_headers=extra_headers)
        return self.submission.cancel(response_id, call)

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
        goes on on the server. Ctrl-C cancels the response on the server
        (bounded) and the ``KeyboardInterrupt`` names it
        (:func:`~sail_lite.submission.block_on`).
        """
        return block_on(
            lambda: self.attach(
                response_id, deadline=deadline, timeout=timeout, extra_headers=extra_headers
            )
        )

    def attach(
        self,
        response_id: str,
        *,
        deadline: Optional[float] = None,
        timeout: Optional[float] = None,
        extra_headers: Optional[Mapping[str, str]] = None,
    ) -> ResponseFuture:
        """Like :meth:`wait`, as a future; cancelling it cancels the response on the server.

        Re-attaches to a background response made anywhere (another thread,
        process or run) by its id.
        """
        call = self.submission.call(timeout=timeout, deadline=deadline, extra_headers=extra_headers)
        return self.submission.attach(response_id, check_result, call)


def _given(**arguments: Any) -> Dict[str, Any]:
    """The arguments that were given (not ``None``): what a map records with its job."""
    return {name: value for name, value in arguments.items() if value is not None}


def stream_create(requester: Requester, body: Dict[str, Any], call: Call) -> Stream:
    """``POST /responses`` with ``stream: true``: a :class:`~sail_lite.streaming.Stream` of
    :class:`~sail_lite.streaming.ResponseStreamEvent` as soon as the reply's headers arrive.

    Use it in a ``with`` block (``.text_stream``, ``.get_final_response()``); leaving it or
    Ctrl-C closes the connection. The create is retried (same idempotency key) only until the
    headers arrive, never after: a retry then would be a new generation. ``call.timeout``
    bounds every silence between events (:class:`APITimeoutError`), its deadline the whole
    stream (:class:`DeadlineExceededError`); an ``error`` event raises its typed error, a
    ``response.failed`` end :class:`ResponseFailedError`.
    """
    return requester.request(  # type: ignore[no-any-return]
        "POST",
        "/responses",
        call,
        json_body=body,
        kind="inference",
        key_header="Idempotency-Key",
        stream="responses",
    )


def response_body(
    *,
    model: Any,
    input: Any = None,
    raw_prompt_tokens: Any = None,
    max_output_tokens: Any = None,
    temperature: Any = None,
    top_p: Any = None,
    stop: Any = None,
    include: Any = None,
    background: bool = False,
    metadata: Any = None,
    lora: Any = None,
    completion_window: Any = None,
    prompt_cache_key: Any = None,
    extra_body: Any = None,
    stream: Any = False,
) -> Dict[str, Any]:
    """The ``POST /responses`` wire body, field by field, checked (:class:`InvalidRequestError`).

    ``stream`` is checked by :func:`~sail_lite.streaming.stream_body` (never with ``background``).
    """
    body = extra_fields(extra_body)
    body["model"] = model_id(model)
    if raw_prompt_tokens is not None:
        body["raw_prompt_tokens"] = check_prompt_tokens(raw_prompt_tokens)
        body["input"] = RAW_PROMPT_PLACEHOLDER
    elif isinstance(input, str) and input:
        body["input"] = input
    elif isinstance(input, (list, tuple)) and input:
        body["input"] = list(input)
    else:
        raise InvalidRequestError(
            "input must be a non-empty string or list of messages (or pass raw_prompt_tokens)"
        )
    background = bool(background)
    if background:
        body["background"] = True
    sampling_fields(
        body,
        max_output_tokens=max_output_tokens,
        temperature=temperature,
        top_p=top_p,
        metadata=metadata,
        lora=lora,
        completion_window=completion_window,
        background=background,
    )
    if stop is not None:
        body["stop"] = normalize_stop(stop)
    if include is not None:
        body["include"] = string_list("include", include)
    if prompt_cache_key is not None:
        if not isinstance(prompt_cache_key, str):
            raise InvalidRequestError("prompt_cache_key must be a string")
        body["prompt_cache_key"] = prompt_cache_key
    return stream_body(body, stream)
