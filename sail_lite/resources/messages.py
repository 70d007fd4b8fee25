"""``client.messages``: the Anthropic-shaped Messages API."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping, Optional, Sequence, Union

from .._checks import positive_int
from ..streaming import Stream, stream_body
from ..types import Message, TokenCount
from ._common import message_body, sampling_fields

if TYPE_CHECKING:  # pragma: no cover
    from .._requester import Requester

__all__ = ["Messages"]

SystemArg = Union[str, Sequence[Mapping[str, Any]], None]


class Messages:
    def __init__(self, requester: Requester) -> None:
        self._requester = requester

    def create(
        self,
        *,
        model: str,
        max_tokens: int,
        messages: Sequence[Mapping[str, Any]],
        system: SystemArg = None,
        temperature: Optional[float] = None,
        metadata: Optional[Mapping[str, Any]] = None,
        lora: Optional[str] = None,
        completion_window: Optional[str] = None,
        stream: bool = False,
        extra_body: Optional[Mapping[str, Any]] = None,
        idempotency_key: Optional[str] = None,
        timeout: Optional[float] = None,
        deadline: Optional[float] = None,
        extra_headers: Optional[Mapping[str, str]] = None,
    ) -> Union[Message, Stream]:
        """``POST /messages``; blocks until the message is ready.

        The idempotency key travels as ``anthropic-idempotency-key``, as the
        Messages endpoint expects; ``lora`` and ``completion_window`` land in
        ``metadata``.

        With ``stream=True`` returns a :class:`~sail_lite.streaming.Stream` of
        :class:`~sail_lite.streaming.MessageStreamEvent` as soon as the reply's
        headers arrive (use it in a ``with`` block; ``.text_stream``,
        ``.get_final_message()``; ``ping`` events are skipped). The create is
        retried only until the headers arrive, never after; ``timeout`` then
        bounds every silence between events (:class:`APITimeoutError`) and
        ``deadline`` the whole stream (:class:`DeadlineExceededError`); an
        ``error`` event raises its typed error.
        """
        call = self._requester.call(
            timeout=timeout,
            deadline=deadline,
            extra_headers=extra_headers,
            idempotency_key=idempotency_key,
        )
        body = message_body(extra_body, model, messages, system)
        body["max_tokens"] = positive_int("max_tokens", max_tokens)
        sampling_fields(
            body,
            temperature=temperature,
            metadata=metadata,
            lora=lora,
            completion_window=completion_window,
        )
        stream_body(body, stream)
        payload = self._requester.request(
            "POST",
            "/messages",
            call,
            json_body=body,
            kind="inference",
            key_header="anthropic-idempotency-key",
            stream="messages" if stream else None,
        )
        return payload if stream else Message.from_dict(payload)

    def count_tokens(
        self,
        *,
        model: str,
        messages: Sequence[Mapping[str, Any]],
        system: SystemArg = None,
        extra_body: Optional[Mapping[str, Any]] = None,
        timeout: Optional[float] = None,
        deadline: Optional[float] = None,
        extra_headers: Optional[Mapping[str, str]] = None,
    ) -> TokenCount:
        """``POST /messages/count_tokens``: how many input tokens these messages are, without running them.

        Runs no inference, so it is retried like a read.
        """
        call = self._requester.call(timeout=timeout, deadline=deadline, extra_headers=extra_headers)
        body = message_body(extra_body, model, messages, system)
        payload = self._requester.request(
            "POST", "/messages/count_tokens", call, json_body=body, replay_safe=True
        )
        return TokenCount.from_dict(payload)
