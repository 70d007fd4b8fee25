"""``client.messages``: the Anthropic-shaped Messages API."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Dict, Mapping, Optional, Sequence, Union

from .._checks import model_id, number_in, positive_int
from ..types import Message, TokenCount
from ._common import build_metadata, extra_fields, message_list, system_prompt

if TYPE_CHECKING:  # pragma: no cover
    from .._requester import Requester

__all__ = ["Messages"]

SystemArg = Union[str, Sequence[Mapping[str, Any]], None]


class Messages:
    def __init__(self, requester: "Requester") -> None:
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
        extra_body: Optional[Mapping[str, Any]] = None,
        idempotency_key: Optional[str] = None,
        timeout: Optional[float] = None,
        deadline: Optional[float] = None,
        extra_headers: Optional[Mapping[str, str]] = None,
    ) -> Message:
        """``POST /messages``; blocks until the message is ready.

        The idempotency key travels as ``anthropic-idempotency-key``, as the
        Messages endpoint expects; ``lora`` and ``completion_window`` land in
        ``metadata``.
        """
        call = self._requester.call(timeout=timeout, deadline=deadline, extra_headers=extra_headers,
                                    idempotency_key=idempotency_key)
        body = _body(model, messages, system, extra_body)
        body["max_tokens"] = positive_int("max_tokens", max_tokens)
        if temperature is not None:
            body["temperature"] = number_in("temperature", temperature, 0.0, 2.0)
        wire_metadata = build_metadata(metadata, lora=lora, completion_window=completion_window, background=False)
        if wire_metadata:
            body["metadata"] = wire_metadata
        payload = self._requester.request("POST", "/messages", call, json_body=body, kind="inference",
                                          key_header="anthropic-idempotency-key")
        return Message.from_dict(payload)

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
        body = _body(model, messages, system, extra_body)
        payload = self._requester.request("POST", "/messages/count_tokens", call, json_body=body, replay_safe=True)
        return TokenCount.from_dict(payload)


def _body(model: Any, messages: Any, system: Any, extra_body: Any) -> Dict[str, Any]:
    body = extra_fields(extra_body)
    body["model"] = model_id(model)
    body["messages"] = message_list(messages)
    if system is not None:
        body["system"] = system_prompt(system)
    return body
