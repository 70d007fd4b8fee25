"""``client.messages``: the Anthropic-shaped Messages API."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Dict, Mapping, Optional, Sequence, Union

from ..types import Message
from ._common import build_metadata, number_in, positive_int
from .chat import _messages, _model

if TYPE_CHECKING:  # pragma: no cover
    from ..client import Client

__all__ = ["Messages"]


class Messages:
    def __init__(self, client: "Client") -> None:
        self._client = client

    def create(
        self,
        *,
        model: str,
        max_tokens: int,
        messages: Sequence[Mapping[str, Any]],
        system: Union[str, Sequence[Mapping[str, Any]], None] = None,
        temperature: Optional[float] = None,
        metadata: Optional[Mapping[str, Any]] = None,
        lora: Optional[str] = None,
        completion_window: Optional[str] = None,
        extra_body: Optional[Mapping[str, Any]] = None,
        idempotency_key: Optional[str] = None,
        timeout: Optional[float] = None,
        deadline: Optional[float] = None,
    ) -> Message:
        """``POST /messages``; blocks until the message is ready.

        The idempotency key travels as ``anthropic-idempotency-key``, as the
        Messages endpoint expects; ``lora`` and ``completion_window`` land in
        ``metadata``.
        """
        body: Dict[str, Any] = dict(extra_body or {})
        body["model"] = _model(model)
        body["max_tokens"] = positive_int("max_tokens", max_tokens)
        body["messages"] = _messages(messages)
        if system is not None:
            body["system"] = system if isinstance(system, str) else [dict(block) for block in system]
        if temperature is not None:
            body["temperature"] = number_in("temperature", temperature, 0.0, 2.0)
        wire_metadata = build_metadata(metadata, lora=lora, completion_window=completion_window, background=False)
        if wire_metadata:
            body["metadata"] = wire_metadata
        client = self._client
        payload = client._request(
            "POST", "/messages", json_body=body, idempotency_key=idempotency_key,
            idempotency_header="anthropic-idempotency-key",
            read_timeout=timeout if timeout is not None else client.timeout.inference,
            deadline_at=client._deadline_at(deadline),
        )
        return Message.from_dict(payload)
