"""``client.chat.completions``: the OpenAI-shaped Chat Completions API."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping, Optional, Sequence, Union

from ..streaming import Stream, stream_body
from ..types import ChatCompletion
from ._common import message_body, sampling_fields

if TYPE_CHECKING:  # pragma: no cover
    from .._requester import Requester

__all__ = ["Chat", "Completions"]


class Completions:
    def __init__(self, requester: Requester) -> None:
        self._requester = requester

    def create(
        self,
        *,
        model: str,
        messages: Sequence[Mapping[str, Any]],
        max_completion_tokens: Optional[int] = None,
        temperature: Optional[float] = None,
        top_p: Optional[float] = None,
        metadata: Optional[Mapping[str, Any]] = None,
        lora: Optional[str] = None,
        completion_window: Optional[str] = None,
        stream: bool = False,
        stream_options: Optional[Mapping[str, Any]] = None,
        extra_body: Optional[Mapping[str, Any]] = None,
        idempotency_key: Optional[str] = None,
        timeout: Optional[float] = None,
        deadline: Optional[float] = None,
        extra_headers: Optional[Mapping[str, str]] = None,
    ) -> Union[ChatCompletion, Stream]:
        """``POST /chat/completions``; blocks until the completion is ready.

        ``lora`` and ``completion_window`` land in ``metadata``. Retried
        safely under one idempotency key (on the error when it gives up).

        With ``stream=True`` returns a :class:`~sail_lite.streaming.Stream` of
        :class:`~sail_lite.streaming.ChatCompletionChunk` as soon as the reply's
        headers arrive (use it in a ``with`` block; ``.text_stream``,
        ``.get_final_completion()``); ``stream_options`` (e.g.
        ``{"include_usage": True}``) is sent as given. The create is retried
        only until the headers arrive, never after; ``timeout`` then bounds
        every silence between chunks (:class:`APITimeoutError`) and
        ``deadline`` the whole stream (:class:`DeadlineExceededError`).
        """
        call = self._requester.call(
            timeout=timeout,
            deadline=deadline,
            extra_headers=extra_headers,
            idempotency_key=idempotency_key,
        )
        body = sampling_fields(
            message_body(extra_body, model, messages),
            max_completion_tokens=max_completion_tokens,
            temperature=temperature,
            top_p=top_p,
            metadata=metadata,
            lora=lora,
            completion_window=completion_window,
        )
        stream_body(body, stream, stream_options=stream_options)
        payload = self._requester.request(
            "POST",
            "/chat/completions",
            call,
            json_body=body,
            kind="inference",
            key_header="Idempotency-Key",
            stream="chat.completions" if stream else None,
        )
        return payload if stream else ChatCompletion.from_dict(payload)


class Chat:
    """``client.chat``: holds ``completions``, as the OpenAI SDK does."""

    def __init__(self, requester: Requester) -> None:
        self.completions = Completions(requester)
