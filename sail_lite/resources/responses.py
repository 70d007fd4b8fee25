"""``client.responses``: create, retrieve, cancel, wait, submit."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Dict, Mapping, Optional, Sequence, TypeVar, Union

from ..errors import (
    InvalidRequestError,
    ResponseCancelledError,
    ResponseExpiredError,
    ResponseFailedError,
)
from .._future import ResponseFuture
from ..types import Response
from ._common import (
    RAW_PROMPT_PLACEHOLDER,
    build_metadata,
    check_prompt_tokens,
    normalize_stop,
    number_in,
    positive_int,
)

if TYPE_CHECKING:  # pragma: no cover
    from ..client import Client

__all__ = ["Responses"]

T = TypeVar("T")


def _path_id(value: Any, what: str = "response id") -> str:
    if not isinstance(value, str) or not value or "/" in value or "?" in value:
        raise InvalidRequestError("{} must be a non-empty string without '/' or '?', got {!r}".format(what, value))
    return value


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
    message = "response {} {}".format(response.id, what)
    if detail:
        message += ": " + detail
    raise cls(message, response=response, response_id=response.id, code=code)


class Responses:
    """The Responses API. Thread-safe; every call goes through the client's request loop."""

    def __init__(self, client: "Client") -> None:
        self._client = client

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
    ) -> Response:
        """``POST /responses``.

        With ``background=True`` returns at once with the queued response
        (use :meth:`wait` or :meth:`submit` to get the result); otherwise
        blocks while the server runs the model and returns the finished
        response, raising :class:`ResponseFailedError` if it failed.
        Retried safely: one idempotency key covers every attempt.
        """
        body = self._body(
            model=model, input=input, raw_prompt_tokens=raw_prompt_tokens, max_output_tokens=max_output_tokens,
            temperature=temperature, top_p=top_p, stop=stop, include=include, background=background,
            metadata=metadata, lora=lora, completion_window=completion_window,
            prompt_cache_key=prompt_cache_key, extra_body=extra_body,
        )
        response = self._post(body, idempotency_key, timeout, self._client._deadline_at(deadline))
        if not background and response.is_terminal:
            check_result(response)
        return response

    def retrieve(self, response_id: str, *, timeout: Optional[float] = None) -> Response:
        """``GET /responses/{id}``: the response's current state (404 -> NotFoundError)."""
        return self._get(_path_id(response_id), None, timeout)

    def cancel(self, response_id: str, *, timeout: Optional[float] = None) -> Response:
        """``POST /responses/{id}/cancel``; a terminal response comes back unchanged."""
        response_id = _path_id(response_id)
        payload = self._client._request(
            "POST", "/responses/{}/cancel".format(response_id), read_timeout=timeout, response_id=response_id
        )
        return Response.from_dict(payload)

    def wait(self, response_id: str, *, deadline: Optional[float] = None, timeout: Optional[float] = None) -> Response:
        """Block until the response is terminal; return it or raise its typed error.

        Polls on the client's poller with a back-off capped by the
        response's completion window. ``deadline`` (seconds) bounds the
        whole wait: then :class:`DeadlineExceededError` carries the response
        id and the work goes on on the server.
        """
        return self.attach(response_id, deadline=deadline, timeout=timeout).result()

    def attach(
        self, response_id: str, *, deadline: Optional[float] = None, timeout: Optional[float] = None
    ) -> "ResponseFuture[Response]":
        """Like :meth:`wait`, as a future; cancelling it cancels the response on the server.

        Re-attaches to a background response made anywhere (another thread,
        process or run) by its id.
        """
        return self._attach(response_id, check_result, deadline=deadline, timeout=timeout)

    def submit(self, **create_args: Any) -> "ResponseFuture[Response]":
        """Create a background response and return a future of its terminal state.

        Takes :meth:`create`'s arguments (``background`` is forced on).
        Returns at once: the create itself runs on the client's pool. The
        future resolves to the completed (or incomplete) response, or raises
        its typed error; ``future.cancel()`` cancels the response on the
        server.
        """
        create_args.pop("background", None)
        idempotency_key = create_args.pop("idempotency_key", None)
        timeout = create_args.pop("timeout", None)
        deadline = create_args.pop("deadline", None)
        body = self._body(background=True, **create_args)
        return self._submit(body, check_result, idempotency_key=idempotency_key, timeout=timeout, deadline=deadline)

    # --- shared with the other resources ---------------------------------

    def _submit(
        self,
        body: Dict[str, Any],
        transform: Callable[[Response], T],
        *,
        idempotency_key: Optional[str],
        timeout: Optional[float],
        deadline: Optional[float],
    ) -> "ResponseFuture[T]":
        client = self._client
        deadline_at = client._deadline_at(deadline)
        poller = client._poller
        if idempotency_key is None:
            idempotency_key = client._new_idempotency_key()
        future: "ResponseFuture[T]" = ResponseFuture(idempotency_key=idempotency_key)
        window = (body.get("metadata") or {}).get("completion_window")

        def start() -> None:
            if future.cancelled():
                return  # nothing was created, nothing to cancel
            try:
                response = self._post(body, idempotency_key, timeout, deadline_at)
            except BaseException as exc:
                if not future.cancelled():
                    future.set_exception(exc)
                return
            future._set_accepted(response.id)
            # A cancel that raced with the create is seen by watch's done-callback.
            poller.watch(
                response, future, window=window, deadline_at=deadline_at, transform=transform, read_timeout=timeout
            )

        poller.run(start)
        return future

    def _attach(
        self,
        response_id: str,
        transform: Callable[[Response], T],
        *,
        deadline: Optional[float],
        timeout: Optional[float],
    ) -> "ResponseFuture[T]":
        deadline_at = self._client._deadline_at(deadline)
        response = self._get(_path_id(response_id), deadline_at, timeout)
        future: "ResponseFuture[T]" = ResponseFuture(response_id=response.id)
        self._client._poller.watch(
            response, future, window=response.metadata.get("completion_window"),
            deadline_at=deadline_at, transform=transform, read_timeout=timeout,
        )
        return future

    def _post(
        self, body: Dict[str, Any], idempotency_key: Optional[str], timeout: Optional[float], deadline_at: Optional[float]
    ) -> Response:
        client = self._client
        read = timeout if timeout is not None else (
            client.timeout.read if body.get("background") else client.timeout.inference
        )
        payload = client._request(
            "POST", "/responses", json_body=body, idempotency_key=idempotency_key,
            read_timeout=read, deadline_at=deadline_at,
        )
        return Response.from_dict(payload)

    def _get(self, response_id: str, deadline_at: Optional[float], timeout: Optional[float]) -> Response:
        payload = self._client._request(
            "GET", "/responses/" + response_id, read_timeout=timeout, deadline_at=deadline_at, response_id=response_id
        )
        return Response.from_dict(payload)

    def _poll_fetch(self, response_id: str, deadline_at: Optional[float], timeout: Optional[float]) -> Response:
        return self._get(response_id, deadline_at, timeout)

    def _poll_cancel(self, response_id: str) -> Response:
        return self.cancel(response_id)

    @staticmethod
    def _body(
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
    ) -> Dict[str, Any]:
        if not isinstance(model, str) or not model.strip():
            raise InvalidRequestError("model must be a non-empty model id, like 'moonshotai/Kimi-K2.6'")
        body: Dict[str, Any] = dict(extra_body or {})
        body["model"] = model
        if raw_prompt_tokens is not None:
            body["raw_prompt_tokens"] = check_prompt_tokens(raw_prompt_tokens)
            body["input"] = RAW_PROMPT_PLACEHOLDER
        elif isinstance(input, str) and input:
            body["input"] = input
        elif isinstance(input, (list, tuple)) and input:
            body["input"] = list(input)
        else:
            raise InvalidRequestError("input must be a non-empty string or list of messages (or pass raw_prompt_tokens)")
        if max_output_tokens is not None:
            body["max_output_tokens"] = positive_int("max_output_tokens", max_output_tokens)
        if temperature is not None:
            body["temperature"] = number_in("temperature", temperature, 0.0, 2.0)
        if top_p is not None:
            body["top_p"] = number_in("top_p", top_p, 0.0, 1.0)
        if stop is not None:
            body["stop"] = normalize_stop(stop)
        if include is not None:
            body["include"] = list(include)
        if background:
            body["background"] = True
        wire_metadata = build_metadata(
            metadata, lora=lora, completion_window=completion_window, background=bool(background)
        )
        if wire_metadata:
            body["metadata"] = wire_metadata
        if prompt_cache_key is not None:
            body["prompt_cache_key"] = prompt_cache_key
        return body
