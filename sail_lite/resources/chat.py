"""``client.chat.completions``: the OpenAI-shaped Chat Completions API."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Dict, Mapping, Optional, Sequence

from ..errors import InvalidRequestError
from ..types import ChatCompletion
from ._common import build_metadata, number_in, positive_int

if TYPE_CHECKING:  # pragma: no cover
    from ..client import Client

__all__ = ["Chat", "Completions"]


class Completions:
    def __init__(self, client: "Client") -> None:
        self._client = client

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
        extra_body: Optional[Mapping[str, Any]] = None,
        idempotency_key: Optional[str] = None,
        timeout: Optional[float] = None,
        deadline: Optional[float] = None,
    ) -> ChatCompletion:
        """``POST /chat/completions``; blocks until the completion is ready.

        ``lora`` and ``completion_window`` land in ``metadata``. Retried
        safely under one idempotency key.
        """
        body: Dict[str, Any] = dict(extra_body or {})
        body["model"] = _model(model)
        body["messages"] = _messages(messages)
        if max_completion_tokens is not None:
            body["max_completion_tokens"] = positive_int("max_completion_tokens", max_completion_tokens)
        if temperature is not None:
            body["temperature"] = number_in("temperature", temperature, 0.0, 2.0)
        if top_p is not None:
            body["top_p"] = number_in("top_p", top_p, 0.0, 1.0)
        wire_metadata = build_metadata(metadata, lora=lora, completion_window=completion_window, background=False)
        if wire_metadata:
            body["metadata"] = wire_metadata
        client = self._client
        payload = client._request(
            "POST", "/chat/completions", json_body=body, idempotency_key=idempotency_key,
            read_timeout=timeout if timeout is not None else client.timeout.inference,
            deadline_at=client._deadline_at(deadline),
        )
        return ChatCompletion.from_dict(payload)


class Chat:
    """``client.chat``: holds ``completions``, as the OpenAI SDK does."""

    def __init__(self, client: "Client") -> None:
        self.completions = Completions(client)


def _model(model: Any) -> str:
    if not isinstance(model, str) or not model.strip():
        raise InvalidRequestError("model must be a non-empty model id, like 'moonshotai/Kimi-K2.6'")
    return model


def _messages(messages: Any) -> list:
    if isinstance(messages, (str, bytes, Mapping)) or not hasattr(messages, "__iter__"):
        raise InvalidRequestError("messages must be a list of {'role': ..., 'content': ...} objects")
    result = [dict(m) if isinstance(m, Mapping) else m for m in messages]
    if not result or not all(isinstance(m, dict) and isinstance(m.get("role"), str) for m in result):
        raise InvalidRequestError("messages must be a non-empty list of {'role': ..., 'content': ...} objects")
    return result
