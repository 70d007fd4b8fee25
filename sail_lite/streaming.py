"""Server-sent events, synchronously: typed events, bounded, closed on exit.

Three layers, each usable alone:

- :class:`SSEDecoder` turns bytes into :class:`ServerSentEvent` frames
  (``event:``, multi-line ``data:``, ``id:``; comments and keep-alives
  skipped). Lines and events are bounded: a bigger one is a
  :class:`~sail_lite.errors.ResponseTooLargeError`, never unbounded memory.
- Typed events, frozen dataclasses built from the decoded JSON (unknown keys
  ignored): :class:`ResponseStreamEvent` (``/responses``),
  :class:`ChatCompletionChunk` (``/chat/completions``),
  :class:`MessageStreamEvent` (``/messages``).
- :class:`Stream`, a context manager over any iterator of byte chunks and a
  ``close`` callable (what a transport can feed); :func:`stream_from_requests`
  builds one from a ``requests.Response`` opened with ``stream=True``.

A stream is never retried: once events have flowed a retry would be a new
generation (wire.md). Retrying the create before its first byte is the
request loop's business, not this module's.
"""

from __future__ import annotations

import io
import json
import logging
import re
import socket
import threading
import time
import weakref
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional, Tuple, Union

import requests
import urllib3

from ._checks import Mapping
from .errors import (
    APIConnectionError,
    APITimeoutError,
    DeadlineExceededError,
    InvalidRequestError,
    MalformedResponseError,
    ResponseFailedError,
    ResponseTooLargeError,
    SailError,
    status_error,
)
from .types import ChatCompletion, ContentBlock, Message, Response, Usage

__all__ = [
    "DEFAULT_MAX_LINE_BYTES",
    "DEFAULT_MAX_EVENT_BYTES",
    "STREAM_KINDS",
    "ServerSentEvent",
    "SSEDecoder",
    "ResponseStreamEvent",
    "ChunkDelta",
    "ChunkChoice",
    "ChatCompletionChunk",
    "MessageStreamDelta",
    "MessageStreamEvent",
    "StreamEvent",
    "Stream",
    "stream_body",
    "stream_error",
    "stream_from_requests",
]

logger = logging.getLogger(__name__)

#: The longest line (bytes, without its end) a stream may send.
DEFAULT_MAX_LINE_BYTES = 1024 * 1024
#: The most ``data`` bytes one event may carry (all its lines together).
DEFAULT_MAX_EVENT_BYTES = 8 * 1024 * 1024
#: The endpoints a :class:`Stream` understands.
STREAM_KINDS = ("responses", "chat.completions", "messages")

_LINE_END = re.compile(rb"\r\n|\r|\n")
_BOM = b"\xef\xbb\xbf"


# ---------------------------------------------------------------- decoding


@dataclass(frozen=True)
class ServerSentEvent:
    """One dispatched SSE frame: its ``event:`` name (or ``None``), its ``data`` lines joined by ``\\n``."""

    event: Optional[str]
    data: str
    id: Optional[str] = None


class SSEDecoder:
    """Incremental SSE parser (the WHATWG rules): feed bytes, get whole frames back.

    Lines end with ``\\r\\n``, ``\\n`` or ``\\r``; a blank line dispatches the
    frame; ``:`` lines are comments; ``retry:`` and unknown fields are
    ignored; a frame without ``data`` is dropped. ``progress`` counts
    dispatched frames and comments (what a keep-alive looks like), so a
    caller can tell a live server from one dripping bytes that never make a
    line. Raises :class:`ResponseTooLargeError` for a line over
    ``max_line_bytes`` or an event whose data passes ``max_event_bytes``, and
    :class:`MalformedResponseError` for data that is not UTF-8. Not thread-safe.
    """

    def __init__(
        self,
        *,
        max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
        max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES,
    ) -> None:
        self.max_line_bytes = max_line_bytes
        self.max_event_bytes = max_event_bytes
        self.progress = 0
        self._buffer = bytearray()
        self._first_line = True
        self._data: List[bytes] = []
        self._data_bytes = 0
        self._event: Optional[str] = None
        self._id: Optional[str] = None

    def feed(self, chunk: bytes) -> List[ServerSentEvent]:
        """The frames ``chunk`` completes (kept: any partial line, for the next chunk)."""
        buffer = self._buffer
        buffer += chunk
        frames = []
        start = 0
        while True:
            match = _LINE_END.search(buffer, start)
            if match is None or (match.end() == len(buffer) and buffer[match.start()] == 13):
                break  # no whole line yet, or a "\r" whose "\n" may be in the next chunk
            frame = self._line(bytes(buffer[start : match.start()]))
            start = match.end()
            if frame is not None:
                frames.append(frame)
        del buffer[:start]
        if len(buffer) > self.max_line_bytes + 1:  # +1: a held "\r"
            raise ResponseTooLargeError(
                f"a server-sent event line is longer than max_line_bytes={self.max_line_bytes}"
            )
        return frames

    def _line(self, line: bytes) -> Optional[ServerSentEvent]:
        if len(line) > self.max_line_bytes:
            raise ResponseTooLargeError(
                f"a server-sent event line of {len(line)} bytes passes "
                f"max_line_bytes={self.max_line_bytes}"
            )
        if self._first_line:
            self._first_line = False
            if line.startswith(_BOM):
                line = line[len(_BOM) :]
        if not line:
            return self._dispatch()
        if line[:1] == b":":
            self.progress += 1
            return None
        name, colon, value = line.partition(b":")
        if colon and value[:1] == b" ":
            value = value[1:]
        if name == b"data":
            self._data_bytes += len(value) + 1
            if self._data_bytes > self.max_event_bytes:
                raise ResponseTooLargeError(
                    f"a server-sent event passes max_event_bytes={self.max_event_bytes}"
                )
            self._data.append(value)
        elif name == b"event":
            self._event = _utf8(value)
        elif name == b"id" and b"\0" not in value:
            self._id = _utf8(value)
        return None

    def _dispatch(self) -> Optional[ServerSentEvent]:
        data, event = self._data, self._event
        self._data, self._data_bytes, self._event = [], 0, None
        if not data:
            return None
        self.progress += 1
        return ServerSentEvent(event=event or None, data=_utf8(b"\n".join(data)), id=self._id)


def _utf8(value: bytes) -> str:
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        raise MalformedResponseError("a server-sent event is not UTF-8") from None


# ---------------------------------------------------------------- typed events


def _text(data: Mapping[str, Any], key: str) -> Optional[str]:
    value = data.get(key)
    return value if isinstance(value, str) else None


def _int(data: Mapping[str, Any], key: str) -> Optional[int]:
    value = data.get(key)
    return None if isinstance(value, bool) or not isinstance(value, int) else value


def _mapping(data: Mapping[str, Any], key: str) -> Optional[Mapping[str, Any]]:
    value = data.get(key)
    return value if isinstance(value, Mapping) else None


@dataclass(frozen=True)
class ResponseStreamEvent:
    """An OpenAI Responses event (``response.output_text.delta``, ``response.completed``, ...).

    ``delta`` is set on ``*.delta`` events, ``text`` on ``response.output_text.done``,
    ``response`` on ``response.created``/``in_progress``/``completed``/``incomplete``/``failed``.
    """

    type: str
    sequence_number: Optional[int] = None
    delta: Optional[str] = None
    text: Optional[str] = None
    item_id: Optional[str] = None
    output_index: Optional[int] = None
    content_index: Optional[int] = None
    response: Optional[Response] = None
    raw: Dict[str, Any] = field(default_factory=dict, repr=False, compare=False, hash=False)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ResponseStreamEvent:
        response = _mapping(data, "response")
        return cls(
            type=_text(data, "type") or "",
            sequence_number=_int(data, "sequence_number"),
            delta=_text(data, "delta"),
            text=_text(data, "text"),
            item_id=_text(data, "item_id"),
            output_index=_int(data, "output_index"),
            content_index=_int(data, "content_index"),
            response=None if response is None else Response.from_dict(response),
            raw=dict(data),
        )


@dataclass(frozen=True)
class ChunkDelta:
    """What one chunk adds to a choice: openai-python's ``chunk.choices[0].delta.content``."""

    role: Optional[str] = None
    content: Optional[str] = None


@dataclass(frozen=True)
class ChunkChoice:
    """One choice of a :class:`ChatCompletionChunk`."""

    index: int
    delta: ChunkDelta
    finish_reason: Optional[str] = None


@dataclass(frozen=True)
class ChatCompletionChunk:
    """A ``chat.completion.chunk``; ``usage`` only on the last chunk of ``include_usage`` streams."""

    id: str
    model: Optional[str]
    created: Optional[int]
    choices: Tuple[ChunkChoice, ...]
    usage: Optional[Usage] = None
    object: str = "chat.completion.chunk"
    raw: Dict[str, Any] = field(default_factory=dict, repr=False, compare=False, hash=False)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ChatCompletionChunk:
        choices = []
        items = data.get("choices")
        for position, item in enumerate(items if isinstance(items, list) else ()):
            if not isinstance(item, Mapping):
                continue
            delta = _mapping(item, "delta") or {}
            index = _int(item, "index")
            choices.append(
                ChunkChoice(
                    index=position if index is None else index,
                    delta=ChunkDelta(role=_text(delta, "role"), content=_text(delta, "content")),
                    finish_reason=_text(item, "finish_reason"),
                )
            )
        usage = _mapping(data, "usage")
        return cls(
            id=_text(data, "id") or "",
            model=_text(data, "model"),
            created=_int(data, "created"),
            choices=tuple(choices),
            usage=None if usage is None else Usage.from_dict(usage),
            raw=dict(data),
        )


@dataclass(frozen=True)
class MessageStreamDelta:
    """The ``delta`` of ``content_block_delta`` (``type``, ``text``) or ``message_delta`` (``stop_reason``)."""

    type: Optional[str] = None
    text: Optional[str] = None
    stop_reason: Optional[str] = None
    stop_sequence: Optional[str] = None


@dataclass(frozen=True)
class MessageStreamEvent:
    """An Anthropic Messages event: ``message_start``, ``content_block_delta``, ``message_stop``, ...

    ``message`` on ``message_start``; ``index`` and ``content_block`` on
    ``content_block_start``; ``delta`` on the delta events; ``usage`` on
    ``message_delta`` (its ``output_tokens`` are the running total).
    """

    type: str
    index: Optional[int] = None
    message: Optional[Message] = None
    content_block: Optional[ContentBlock] = None
    delta: Optional[MessageStreamDelta] = None
    usage: Optional[Usage] = None
    raw: Dict[str, Any] = field(default_factory=dict, repr=False, compare=False, hash=False)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> MessageStreamEvent:
        message, block = _mapping(data, "message"), _mapping(data, "content_block")
        delta, usage = _mapping(data, "delta"), _mapping(data, "usage")
        return cls(
            type=_text(data, "type") or "",
            index=_int(data, "index"),
            message=None if message is None else Message.from_dict(message),
            content_block=None if block is None else ContentBlock(block),
            delta=None
            if delta is None
            else MessageStreamDelta(
                type=_text(delta, "type"),
                text=_text(delta, "text"),
                stop_reason=_text(delta, "stop_reason"),
                stop_sequence=_text(delta, "stop_sequence"),
            ),
            usage=None if usage is None else Usage.from_dict(usage),
            raw=dict(data),
        )


StreamEvent = Union[ResponseStreamEvent, ChatCompletionChunk, MessageStreamEvent]

# Error codes and types (OpenAI's and Anthropic's names) -> the HTTP status they stand for.
_ERROR_STATUS = {
    "invalid_request_error": 400,
    "idempotency_error": 400,
    "authentication_error": 401,
    "invalid_api_key": 401,
    "permission_error": 403,
    "permission_denied": 403,
    "not_found_error": 404,
    "not_found": 404,
    "request_timeout": 408,
    "timeout_error": 408,
    "request_in_progress": 409,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "rate_limit_exceeded": 429,
    "api_error": 500,
    "server_error": 500,
    "internal_error": 500,
    "model_capacity_unavailable": 503,
    "service_unavailable": 503,
    "overloaded_error": 529,
}


def stream_error(payload: Mapping[str, Any], *, request_id: Optional[str] = None) -> SailError:
    """The typed error for an ``error`` event, through the error tree.

    Reads both shapes: ``{"type": "error", "code", "message"}`` (Responses)
    and ``{"type": "error", "error": {"type", "message"}}`` (Messages, and
    ``{"error": {...}}`` frames on chat). The code (else the type) picks the
    HTTP status it stands for, which picks the class (``overloaded_error`` ->
    :class:`~sail_lite.errors.OverloadedError`, ...); unknown ones are a
    :class:`~sail_lite.errors.ServerError`. ``status`` on the error is that
    stand-in status, not the stream's (which was 200).
    """
    body = _mapping(payload, "error") or payload
    code = _text(body, "code")
    kind = _text(body, "type")
    kind = None if kind == "error" else kind
    status = _ERROR_STATUS.get(code or "") or _ERROR_STATUS.get(kind or "") or 500
    message = (
        _text(body, "message") or f"the stream reported an error ({code or kind or 'no code'})"
    )
    error = {"message": f"stream error: {message}", "type": kind, "code": code}
    error["param"] = _text(body, "param")
    return status_error(status, {"error": error}, request_id=request_id)


# ---------------------------------------------------------------- per endpoint


def _json(frame: ServerSentEvent) -> Mapping[str, Any]:
    try:
        payload = json.loads(frame.data)
    except (ValueError, RecursionError):
        raise MalformedResponseError(
            f"a server-sent event ({len(frame.data)} characters) is not JSON: {frame.data[:80]!r}"
        ) from None
    if not isinstance(payload, Mapping):
        raise MalformedResponseError(
            f"a server-sent event is JSON {type(payload).__name__}, not an object"
        )
    return payload


_RESPONSE_ENDS = frozenset({"response.completed", "response.incomplete", "response.failed"})


class _ResponsesProtocol:
    """``/responses``: the final object is the one the terminal event carries (nothing accumulated)."""

    def __init__(self, accumulate: bool) -> None:
        self.done = False
        self.response: Optional[Response] = None

    def event(self, frame: ServerSentEvent, request_id: Optional[str]) -> ResponseStreamEvent:
        payload = _json(frame)
        if payload.get("type") == "error" or frame.event == "error":
            raise stream_error(payload, request_id=request_id)
        event = ResponseStreamEvent.from_dict(payload)
        if event.type in _RESPONSE_ENDS:
            if event.response is None:
                raise MalformedResponseError(f"a {event.type} event carries no response object")
            self.done, self.response = True, event.response
        return event

    def text(self, event: ResponseStreamEvent) -> Optional[str]:
        return event.delta if event.type == "response.output_text.delta" else None

    def final(self) -> Response:
        response = self.response
        assert response is not None  # the caller checks done first
        if response.status == "failed":
            error = response.error or {}
            detail = error.get("message")
            code = error.get("code")
            raise ResponseFailedError(
                f"response {response.id} failed"
                + (f": {detail}" if isinstance(detail, str) else ""),
                response=response,
                response_id=response.id,
                code=code if isinstance(code, str) else None,
            )
        return response


class _ChatProtocol:
    """``/chat/completions``: chunks until ``[DONE]``; the final completion is assembled."""

    def __init__(self, accumulate: bool) -> None:
        self.done = False
        self.accumulate = accumulate
        self.head: Dict[str, Any] = {}
        self.choices: Dict[int, Dict[str, Any]] = {}
        self.usage: Optional[Mapping[str, Any]] = None

    def event(
        self, frame: ServerSentEvent, request_id: Optional[str]
    ) -> Optional[ChatCompletionChunk]:
        if frame.data.strip() == "[DONE]":
            self.done = True
            return None
        payload = _json(frame)
        if frame.event == "error" or (_mapping(payload, "error") and "choices" not in payload):
            raise stream_error(payload, request_id=request_id)
        chunk = ChatCompletionChunk.from_dict(payload)
        if self.accumulate:
            self._absorb(chunk)
        return chunk

    def _absorb(self, chunk: ChatCompletionChunk) -> None:
        if not self.head:
            self.head = {"id": chunk.id, "model": chunk.model, "created": chunk.created}
        if chunk.usage is not None:
            self.usage = chunk.raw.get("usage")
        for choice in chunk.choices:
            state = self.choices.setdefault(
                choice.index, {"role": "assistant", "text": io.StringIO(), "finish_reason": None}
            )
            if choice.delta.role:
                state["role"] = choice.delta.role
            if choice.delta.content:
                state["text"].write(choice.delta.content)
            if choice.finish_reason:
                state["finish_reason"] = choice.finish_reason

    def text(self, event: ChatCompletionChunk) -> Optional[str]:
        for choice in event.choices:
            if choice.index == 0:
                return choice.delta.content
        return None

    def final(self) -> ChatCompletion:
        choices = [
            {
                "index": index,
                "message": {"role": state["role"], "content": state["text"].getvalue()},
                "finish_reason": state["finish_reason"],
            }
            for index, state in sorted(self.choices.items())
        ]
        payload = dict(self.head, object="chat.completion", choices=choices, usage=self.usage)
        if not payload.get("id"):
            raise MalformedResponseError("a chat completion stream had no chunk with an id")
        return ChatCompletion.from_dict(payload)


class _MessagesProtocol:
    """``/messages``: ``message_start`` ... ``message_stop``; the final message is assembled."""

    def __init__(self, accumulate: bool) -> None:
        self.done = False
        self.accumulate = accumulate
        self.start: Dict[str, Any] = {}
        self.blocks: Dict[int, Tuple[Dict[str, Any], io.StringIO]] = {}
        self.stop: Dict[str, Any] = {}
        self.output_tokens: Optional[int] = None

    def event(
        self, frame: ServerSentEvent, request_id: Optional[str]
    ) -> Optional[MessageStreamEvent]:
        payload = _json(frame)
        kind = _text(payload, "type") or frame.event
        if kind == "error":
            raise stream_error(payload, request_id=request_id)
        if kind == "ping":
            return None
        event = MessageStreamEvent.from_dict(payload)
        if kind == "message_start" and event.message is None:
            raise MalformedResponseError("a message_start event carries no message")
        if kind == "message_stop":
            self.done = True
        if self.accumulate:
            self._absorb(event)
        return event

    def _absorb(self, event: MessageStreamEvent) -> None:
        if event.type == "message_start" and event.message is not None:
            self.start = dict(event.message.raw)
        elif event.type == "content_block_start" and event.index is not None:
            block = dict(event.content_block or {"type": "text"})
            self.blocks[event.index] = (block, io.StringIO(block.pop("text", "") or ""))
        elif event.type == "content_block_delta" and event.delta is not None:
            if event.index is not None and event.delta.text:
                self.blocks.setdefault(event.index, ({"type": "text"}, io.StringIO()))[1].write(
                    event.delta.text
                )
        elif event.type == "message_delta":
            if event.delta is not None and event.delta.stop_reason:
                self.stop["stop_reason"] = event.delta.stop_reason
            if event.delta is not None and event.delta.stop_sequence:
                self.stop["stop_sequence"] = event.delta.stop_sequence
            if event.usage is not None:
                self.output_tokens = event.usage.output_tokens

    def text(self, event: MessageStreamEvent) -> Optional[str]:
        if event.type == "content_block_delta" and event.delta is not None:
            if event.delta.type in (None, "text_delta"):
                return event.delta.text
        return None

    def final(self) -> Message:
        if not self.start:
            raise MalformedResponseError("a message stream ended without a message_start event")
        content = []
        for _, (block, text) in sorted(self.blocks.items()):
            if block.get("type") == "text":
                block = dict(block, text=text.getvalue())
            content.append(block)
        usage = dict(self.start.get("usage") or {})
        if self.output_tokens is not None:
            usage["output_tokens"] = self.output_tokens
        return Message.from_dict(dict(self.start, content=content, usage=usage, **self.stop))


_PROTOCOLS = {
    "responses": _ResponsesProtocol,
    "chat.completions": _ChatProtocol,
    "messages": _MessagesProtocol,
}


# ---------------------------------------------------------------- the stream


class _Alarm:
    """One watchdog thread per stream: past the gap bound or the deadline it calls ``close``.

    A blocked socket read cannot be bounded from the reading thread (a server
    dripping a byte a second never trips a per-read timeout), so the alarm
    closes the connection from outside and the reader sees why. Moving the
    gap bound is one attribute write: the thread wakes at the old time,
    finds the new one and sleeps again (no timer per event).
    """

    def __init__(
        self,
        close: Callable[[], Optional[Callable[[], None]]],
        clock: Callable[[], float],
        gap: Optional[float],
        deadline_at: Optional[float],
    ) -> None:
        self.fired: Optional[str] = None
        self.gap = gap
        self.deadline_at = deadline_at
        self.gap_due = None if gap is None else clock() + gap
        self._close = close
        self._clock = clock
        self._stopped = threading.Event()
        self._thread: Optional[threading.Thread] = None
        if gap is not None or deadline_at is not None:
            self._thread = threading.Thread(target=self._run, name="sail-stream-alarm", daemon=True)
            self._thread.start()

    def progress(self) -> None:
        if self.gap is not None:
            self.gap_due = self._clock() + self.gap

    def pause(self) -> None:
        self.gap_due = None

    def due(self) -> Optional[str]:
        """``"gap"`` or ``"deadline"`` when that bound has passed (checked by the reader too)."""
        now = self._clock()
        if self.deadline_at is not None and now >= self.deadline_at:
            return "deadline"
        if self.gap_due is not None and now >= self.gap_due:
            return "gap"
        return None

    def _run(self) -> None:
        while not self._stopped.is_set():
            which = self.due()
            close = self._close()  # a weak reference: a stream nobody holds is not kept alive
            if close is None:
                return
            if which is not None:
                self.fired = which
                close()
                return
            del close
            bounds = [b for b in (self.deadline_at, self.gap_due) if b is not None]
            # paused (the caller holds an event) and no deadline: look again a gap later
            wait = min(bounds) - self._clock() if bounds else self.gap or 1.0
            self._stopped.wait(max(wait, 0.001))

    def stop(self) -> None:
        self._stopped.set()


class Stream:
    """A streamed reply as typed events; a context manager that closes the connection on exit.

    ``chunks`` yields the body's bytes as they arrive; ``close`` ends the
    connection (it must be callable from another thread and wake a blocked
    read, e.g. a socket shutdown); when the stream ends, ``chunks.close()``
    (if it has one, e.g. a generator) runs in the reading thread for the
    source's own cleanup; ``kind`` is one of :data:`STREAM_KINDS`.

    Iterating yields :class:`ResponseStreamEvent`, :class:`ChatCompletionChunk`
    or :class:`MessageStreamEvent` (pings and ``[DONE]`` are not yielded) and
    stops after the endpoint's last event; :attr:`text_stream` yields the text
    deltas of the same iteration (the two share one cursor). :meth:`final`
    reads what is left and returns the :class:`Response`, :class:`ChatCompletion`
    or :class:`Message`.

    Memory stays flat: no event is kept. ``/responses`` needs nothing kept
    (its last event carries the whole response). For chat and messages the
    final object is assembled from the deltas, so with ``accumulate=True``
    (the default) the generated text is kept (once, as text, not as events:
    it is what :meth:`final` returns); ``accumulate=False`` keeps nothing
    and :meth:`final` then raises :class:`InvalidRequestError`.

    Bounds, whatever the server does: a gap longer than ``read_timeout``
    seconds without an event or keep-alive raises :class:`APITimeoutError`;
    passing ``deadline_at`` (on ``clock``) raises
    :class:`DeadlineExceededError`; a line or event over its size bound raises
    :class:`ResponseTooLargeError`; a frame that is not JSON raises
    :class:`MalformedResponseError`; a body that ends before the last event
    raises :class:`APIConnectionError`; an ``error`` event raises its typed
    error (:func:`stream_error`); a ``response.failed`` end raises
    :class:`ResponseFailedError` (after the event is yielded). Every error,
    ``KeyboardInterrupt`` and leaving the ``with`` block close the connection.
    Nothing is retried. One consumer thread at a time; :meth:`close` may come
    from any thread.
    """

    def __init__(
        self,
        chunks: Iterable[bytes],
        *,
        kind: str,
        close: Callable[[], None] = lambda: None,
        read_timeout: Optional[float] = None,
        deadline_at: Optional[float] = None,
        clock: Callable[[], float] = time.monotonic,
        accumulate: bool = True,
        max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
        max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES,
        request_id: Optional[str] = None,
    ) -> None:
        if kind not in _PROTOCOLS:
            raise InvalidRequestError(
                f"kind must be one of {', '.join(STREAM_KINDS)}, not {kind!r}"
            )
        self.kind = kind
        self.request_id = request_id
        self.accumulate = accumulate
        self._chunks = iter(chunks)
        self._close_connection = close
        self._closed = False
        self._close_lock = threading.Lock()
        self._decoder = SSEDecoder(max_line_bytes=max_line_bytes, max_event_bytes=max_event_bytes)
        self._protocol = _PROTOCOLS[kind](accumulate)
        self._alarm = _Alarm(weakref.WeakMethod(self._shut), clock, read_timeout, deadline_at)
        self._events = self._run()

    def __enter__(self) -> Stream:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    def __iter__(self) -> Iterator[StreamEvent]:
        return self

    def __next__(self) -> StreamEvent:
        return next(self._events)

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def done(self) -> bool:
        """True once the endpoint's last event has arrived."""
        return bool(self._protocol.done)

    @property
    def text_stream(self) -> Iterator[str]:
        """The text deltas, as they arrive (consumes the same events as iterating the stream)."""
        for event in self:
            text = self._protocol.text(event)
            if text:
                yield text

    def until_done(self) -> Stream:
        """Read to the end (events are discarded), then return the stream."""
        for _ in self:
            pass
        return self

    def final(self) -> Union[Response, ChatCompletion, Message]:
        """Read to the end and return the final object (blocks until the last event).

        Raises what iterating raises; :class:`InvalidRequestError` when the
        stream was closed before its end, or (chat, messages) opened with
        ``accumulate=False``.
        """
        self.until_done()
        if not self._protocol.done:
            raise InvalidRequestError(
                "the stream was closed before its last event: no final object"
            )
        if not self.accumulate and self.kind != "responses":
            raise InvalidRequestError(
                f"a {self.kind} stream opened with accumulate=False keeps no text: "
                "open it with accumulate=True to get the final object"
            )
        return self._protocol.final()

    # the names the openai and anthropic SDKs use
    get_final_response = final
    get_final_completion = final
    get_final_message = final

    def close(self) -> None:
        """Close the connection (idempotent, any thread). A stream not read to its end stays short."""
        self._alarm.stop()
        self._shut()
        try:
            self._events.close()  # runs its cleanup now if it is suspended
        except ValueError:
            pass  # it is running in another thread: the shut connection ends it there

    def _shut(self) -> None:
        with self._close_lock:
            if self._closed:
                return
            self._closed = True
        try:
            self._close_connection()
        except Exception:  # closing is best effort; the reader sees the outcome
            logger.debug("closing a stream's connection failed", exc_info=True)

    def _run(self) -> Iterator[StreamEvent]:
        protocol, decoder, alarm = self._protocol, self._decoder, self._alarm
        try:
            seen = decoder.progress
            for chunk in self._read():
                for frame in decoder.feed(chunk):
                    event = protocol.event(frame, self.request_id)
                    if event is not None:
                        alarm.pause()  # the caller's time with an event is not a server gap
                        yield event
                    alarm.progress()
                    if protocol.done:
                        if self.kind == "responses":
                            protocol.final()  # a failed response raises here, after its event
                        return
                if decoder.progress != seen:  # comments (keep-alives) count as a live server
                    seen = decoder.progress
                    alarm.progress()
                which = alarm.due()
                if which is not None:
                    raise self._bound_error(which)
            raise APIConnectionError(
                f"the {self.kind} stream ended before its last event", request_id=self.request_id
            )
        finally:
            alarm.stop()
            self._shut()
            closer = getattr(self._chunks, "close", None)
            if closer is not None:
                closer()  # the source's own cleanup, in the reading thread

    def _read(self) -> Iterator[bytes]:
        """The chunks, with a read failure turned into the error that explains it."""
        while True:
            try:
                chunk = next(self._chunks)
            except StopIteration:
                if self._alarm.fired is not None:
                    raise self._bound_error(self._alarm.fired) from None
                if self._closed:
                    raise APIConnectionError(
                        f"the {self.kind} stream was closed", request_id=self.request_id
                    ) from None
                return
            except SailError:
                if self._alarm.fired is not None:
                    raise self._bound_error(self._alarm.fired) from None
                raise
            except (OSError, ValueError) as exc:
                if self._alarm.fired is not None:
                    raise self._bound_error(self._alarm.fired) from None
                raise APIConnectionError(
                    f"reading the {self.kind} stream failed: {exc.strerror or exc}"
                    if isinstance(exc, OSError) and str(exc)
                    else f"reading the {self.kind} stream failed: {type(exc).__name__}",
                    request_id=self.request_id,
                ) from None
            yield chunk

    def _bound_error(self, which: Optional[str]) -> SailError:
        if which == "deadline":
            return DeadlineExceededError(
                f"the {self.kind} stream passed its deadline; it was closed",
                request_id=self.request_id,
            )
        return APITimeoutError(
            f"no event on the {self.kind} stream for {self._alarm.gap} s (the read timeout); "
            "it was closed",
            request_id=self.request_id,
        )


# ---------------------------------------------------------------- requests


def stream_body(body: Dict[str, Any], stream: Any, *, stream_options: Any = None) -> Dict[str, Any]:
    """``body`` (a create's wire body) with ``stream`` checked and set; checked before sending.

    ``stream`` must be a bool; ``True`` adds ``"stream": true`` (and
    ``stream_options``, a mapping, passed through as given). Raises
    :class:`InvalidRequestError` for a streamed ``background`` body (a
    background request cannot stream: the server answers 400), for
    ``stream_options`` without ``stream=True``, and for ``stream`` or
    ``stream_options`` smuggled in through ``extra_body`` (the reply would
    be events where JSON is expected).
    """
    if not isinstance(stream, bool):
        raise InvalidRequestError(f"stream must be True or False, got {type(stream).__name__}")
    for name in ("stream", "stream_options"):
        if name in body:
            raise InvalidRequestError(
                f"pass {name}= as an argument, not in extra_body: "
                "stream=True returns a Stream of events"
            )
    if not stream:
        if stream_options is not None:
            raise InvalidRequestError("stream_options applies only with stream=True")
        return body
    if body.get("background"):
        raise InvalidRequestError(
            "a background request cannot stream: pass background=True (then wait or submit) "
            "or stream=True, not both"
        )
    body["stream"] = True
    if stream_options is not None:
        if not isinstance(stream_options, Mapping):
            raise InvalidRequestError(
                "stream_options must be a mapping such as {'include_usage': True}, "
                f"got {type(stream_options).__name__}"
            )
        body["stream_options"] = dict(stream_options)
    return body


def stream_from_requests(
    response: Any,
    *,
    kind: str,
    read_timeout: Optional[float] = None,
    deadline_at: Optional[float] = None,
    clock: Callable[[], float] = time.monotonic,
    chunk_size: int = 64 * 1024,
    **options: Any,
) -> Stream:
    """A :class:`Stream` over a ``requests.Response`` opened with ``stream=True``.

    Call it once the status is known to be 2xx (a non-2xx body is an error
    body: raise its :func:`~sail_lite.errors.status_error` instead). A reply
    that is not ``text/event-stream`` is closed and raises
    :class:`MalformedResponseError`. Reads with ``raw.read1`` (what has
    arrived, up to ``chunk_size``) so events are seen as they come; closing
    shuts the socket down, which wakes a read blocked in another thread.
    ``options`` go to :class:`Stream` (``accumulate``, the size bounds).
    """
    request_id = response.headers.get("x-request-id")
    content_type = response.headers.get("content-type") or ""
    if not content_type.lower().startswith("text/event-stream"):
        response.close()
        raise MalformedResponseError(
            f"expected a text/event-stream reply, got {content_type or 'no content type'!r}",
            request_id=request_id,
        )
    raw = response.raw
    reading = threading.Lock()  # held while a read runs: another thread then only shuts down

    def chunks() -> Iterator[bytes]:
        read = getattr(raw, "read1", None)  # urllib3 >= 2.3; before it, stream() per chunk
        source = None if read is not None else raw.stream(chunk_size, decode_content=True)
        try:
            while True:
                with reading:
                    if read is not None:
                        chunk = read(chunk_size, decode_content=True)
                    else:
                        chunk = next(source, b"")
                if not chunk:
                    return
                yield chunk
        finally:
            response.close()

    def close() -> None:
        _shutdown(raw)  # wakes a read blocked in another thread
        if reading.acquire(blocking=False):  # no read running: release it here and now
            try:
                response.close()
            finally:
                reading.release()

    return Stream(
        _mapped(chunks(), request_id),
        kind=kind,
        close=close,
        read_timeout=read_timeout,
        deadline_at=deadline_at,
        clock=clock,
        request_id=request_id,
        **options,
    )


def _shutdown(raw: Any) -> None:
    """Shut the reply's socket down, so that a read blocked on it returns at once."""
    try:
        if hasattr(raw, "shutdown"):  # urllib3 >= 2.3: works after http.client let go of the socket
            raw.shutdown()
            return
    except (OSError, ValueError, RuntimeError):
        return  # already closed or released
    sock = getattr(getattr(raw, "connection", None), "sock", None)
    if (
        sock is not None
    ):  # older urllib3, keep-alive replies; else the socket read timeout bounds it
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


def _mapped(chunks: Iterator[bytes], request_id: Optional[str]) -> Iterator[bytes]:
    """requests' and urllib3's read failures as ours: a read timeout is :class:`APITimeoutError`."""
    try:
        yield from chunks
    except (requests.Timeout, urllib3.exceptions.TimeoutError, socket.timeout):
        raise APITimeoutError(
            "no bytes on the stream within the read timeout; it was closed", request_id=request_id
        ) from None
    except (requests.RequestException, urllib3.exceptions.HTTPError) as exc:
        # words, not the library's text (it may repeat the URL)
        raise OSError(f"the connection broke mid-stream ({type(exc).__name__})") from None
