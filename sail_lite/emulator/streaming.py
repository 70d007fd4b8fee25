"""Server-sent events for ``stream: true``: what each endpoint sends, as (event name, data) pairs.

No HTTP here (the handler writes the frames). Three shapes, as wire.md says:
``responses`` (OpenAI Responses events, each with a ``sequence_number``),
``chat`` (``chat.completion.chunk`` frames, then ``[DONE]``) and ``messages``
(Anthropic events, ``message_start`` ... ``message_stop``). A stream is
opened (:meth:`EventStream.opening`) before the turn ends, kept alive with
:meth:`EventStream.ping` while it runs, and finished token by token
(:meth:`EventStream.rest`); :meth:`EventStream.error` ends one early.
"""

from __future__ import annotations

import json
from typing import Any, Dict, Iterator, Optional, Tuple

from .state import ResponseRecord, State

__all__ = ["EventStream", "Frame", "STREAM_KINDS", "encode_frame"]

STREAM_KINDS = ("responses", "chat", "messages")

#: (event name or None, data: a JSON object, a literal such as "[DONE]", or None for a comment)
Frame = Tuple[Optional[str], Any]


def encode_frame(frame: Frame) -> bytes:
    """One SSE frame's bytes: ``event:`` (when named) and ``data:`` lines, or a ``:`` comment."""
    name, data = frame
    if data is None:
        return f": {name or 'keep-alive'}\n\n".encode()
    text = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"))
    head = f"event: {name}\n" if name else ""
    return f"{head}data: {text}\n\n".encode()


class EventStream:
    """The events of one streamed request (``kind``: responses, chat or messages)."""

    def __init__(self, kind: str, state: State, record: ResponseRecord) -> None:
        if kind not in STREAM_KINDS:
            raise ValueError(f"kind must be one of {', '.join(STREAM_KINDS)}")
        self.kind, self.state, self.record = kind, state, record
        self._sequence = 0

    def _event(self, kind: str, **fields: Any) -> Frame:
        data = {"type": kind, "sequence_number": self._sequence, **fields}
        self._sequence += 1
        return kind, data

    def ping(self) -> Frame:
        if self.kind == "messages":
            return "ping", {"type": "ping"}
        return "ping", None  # a comment line: OpenAI-shaped clients skip it

    def error(self, code: str, message: str) -> Frame:
        if self.kind == "messages":
            return "error", {"type": "error", "error": {"type": code, "message": message}}
        if self.kind == "chat":
            return None, {"error": {"message": message, "type": "server_error", "code": code}}
        return self._event("error", code=code, message=message, param=None)

    # -- opening ---------------------------------------------------------------------------------------

    def opening(self) -> Iterator[Frame]:
        """What is sent at once, before the turn ends."""
        if self.kind == "responses":
            # As the turn starts, whatever the clock says: the output arrives in the events after.
            body = {**self.state.response_json(self.record), "output": [], "usage": None}
            body.pop("completed_at", None)
            yield self._event("response.created", response={**body, "status": "queued"})
            yield self._event("response.in_progress", response={**body, "status": "in_progress"})
        elif self.kind == "chat":
            yield None, self._chunk({"role": "assistant", "content": ""}, None)
        else:
            message = self.state.message_json(self.record)
            start = {**message, "content": [], "stop_reason": None, "stop_sequence": None}
            start["usage"] = {"input_tokens": self.record.prompt_tokens, "output_tokens": 0}
            yield "message_start", {"type": "message_start", "message": start}

    # -- the rest, once the turn has ended ------------------------------------------------------------------

    def rest(self) -> Iterator[Frame]:
        """Token by token, then the closing events carrying the whole object."""
        if self.kind == "responses":
            yield from self._responses()
        elif self.kind == "chat":
            yield from self._chat()
        else:
            yield from self._messages()

    def _responses(self) -> Iterator[Frame]:
        body = self.state.response_json(self.record)
        if body["status"] != "completed":
            closing = "response.failed" if body["status"] == "failed" else "response.incomplete"
            yield self._event(closing, response=body)
            return
        item = body["output"][0]
        block = item["content"][0]
        where = {"item_id": item["id"], "output_index": 0}
        yield self._event(
            "response.output_item.added",
            output_index=0,
            item={**item, "status": "in_progress", "content": []},
        )
        part = {"type": "output_text", "text": "", "annotations": []}
        yield self._event("response.content_part.added", **where, content_index=0, part=part)
        for char in block["text"]:
            yield self._event(
                "response.output_text.delta", **where, content_index=0, delta=char, logprobs=[]
            )
        text = block["text"]
        yield self._event(
            "response.output_text.done", **where, content_index=0, text=text, logprobs=[]
        )
        yield self._event("response.content_part.done", **where, content_index=0, part=block)
        yield self._event("response.output_item.done", output_index=0, item=item)
        yield self._event("response.completed", response=body)

    def _chunk(self, delta: Dict[str, Any], finish: Optional[str]) -> Dict[str, Any]:
        record = self.record
        chunk = {
            "id": "chatcmpl-" + record.id[5:],
            "object": "chat.completion.chunk",
            "created": int(record.created_at),
            "model": record.params.model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}],
        }
        if record.params.include_usage:
            chunk["usage"] = None
        return chunk

    def _chat(self) -> Iterator[Frame]:
        whole = self.state.chat_json(self.record)
        choice = whole["choices"][0]
        for char in choice["message"]["content"]:
            yield None, self._chunk({"content": char}, None)
        yield None, self._chunk({}, choice["finish_reason"])
        if self.record.params.include_usage:
            yield None, {**self._chunk({}, None), "choices": [], "usage": whole["usage"]}
        yield None, "[DONE]"

    def _messages(self) -> Iterator[Frame]:
        message = self.state.message_json(self.record)
        text = message["content"][0]["text"]
        block = {"type": "text", "text": ""}
        yield (
            "content_block_start",
            {
                "type": "content_block_start",
                "index": 0,
                "content_block": block,
            },
        )
        for char in text:
            delta = {"type": "text_delta", "text": char}
            yield "content_block_delta", {"type": "content_block_delta", "index": 0, "delta": delta}
        yield "content_block_stop", {"type": "content_block_stop", "index": 0}
        yield (
            "message_delta",
            {
                "type": "message_delta",
                "delta": {
                    "stop_reason": message["stop_reason"],
                    "stop_sequence": message["stop_sequence"],
                },
                "usage": {"output_tokens": message["usage"]["output_tokens"]},
            },
        )
        yield "message_stop", {"type": "message_stop"}
