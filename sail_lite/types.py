"""Wire objects as frozen dataclasses.

Each ``from_dict`` is tolerant: unknown keys are ignored, a field of the
wrong type falls back to its default, and the whole decoded payload stays on
``raw`` for anything we do not model. Only a payload that is not an object,
or lacks the one field that identifies it, raises
:class:`~sail_lite.errors.MalformedResponseError`; never a ``KeyError`` or
``TypeError``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Dict, Optional, Sequence, Tuple

from ._checks import Mapping
from ._redact import redact_secrets
from ._statuses import RESULT_STATUSES, TERMINAL_STATUSES
from .errors import MalformedResponseError

__all__ = [
    "TERMINAL_STATUSES",
    "RESULT_STATUSES",
    "Usage",
    "Response",
    "SampledTokens",
    "ChatCompletion",
    "ChatChoice",
    "ChatMessage",
    "Message",
    "ContentBlock",
    "Model",
    "FileObject",
    "LoRA",
    "LoRAValidation",
    "Batch",
    "TokenCount",
]


def _object(payload: Any, what: str) -> Mapping[str, Any]:
    if not isinstance(payload, Mapping):
        raise MalformedResponseError(
            f"expected a JSON object for {what}, got {type(payload).__name__}"
        )
    return payload


def _str(payload: Mapping[str, Any], key: str, default: Optional[str] = None) -> Optional[str]:
    value = payload.get(key)
    return value if isinstance(value, str) else default


def _required_str(payload: Mapping[str, Any], key: str, what: str) -> str:
    value = payload.get(key)
    if not isinstance(value, str) or not value:
        raise MalformedResponseError(f"{what} has no {key!r} string")
    return value


def _status(payload: Mapping[str, Any]) -> str:
    """A response's status: a string, or absent (""); anything else is no status a client can poll on."""
    value = payload.get("status", "")
    if not isinstance(value, str):
        raise MalformedResponseError(
            f"a response's status must be a string, got {type(value).__name__}"
        )
    return value


def _int(payload: Mapping[str, Any], key: str, default: Optional[int] = None) -> Optional[int]:
    value = payload.get(key)
    if isinstance(value, bool) or not isinstance(value, int):
        return default
    return value


def _dict(payload: Mapping[str, Any], key: str) -> Dict[str, Any]:
    value = payload.get(key)
    return dict(value) if isinstance(value, Mapping) else {}


def _optional_dict(payload: Mapping[str, Any], key: str) -> Optional[Dict[str, Any]]:
    value = payload.get(key)
    return dict(value) if isinstance(value, Mapping) else None


def _list(payload: Mapping[str, Any], key: str) -> Sequence[Any]:
    value = payload.get(key)
    return value if isinstance(value, list) else ()


def _strings(payload: Mapping[str, Any], key: str) -> Tuple[str, ...]:
    return tuple(item for item in _list(payload, key) if isinstance(item, str))


@dataclass(frozen=True)
class Usage:
    """Token counts of one request."""

    input_tokens: int = 0
    output_tokens: int = 0
    total_tokens: int = 0

    @classmethod
    def from_dict(cls, payload: Any) -> Usage:
        if not isinstance(payload, Mapping):
            return cls()
        # Chat Completions says prompt/completion; Responses and Messages say input/output.
        input_tokens = _int(payload, "input_tokens", _int(payload, "prompt_tokens", 0)) or 0
        output_tokens = _int(payload, "output_tokens", _int(payload, "completion_tokens", 0)) or 0
        total = _int(payload, "total_tokens", input_tokens + output_tokens) or 0
        return cls(input_tokens=input_tokens, output_tokens=output_tokens, total_tokens=total)


def _status(data: Mapping[str, Any]) -> str:
    """A response's status: ``""`` when absent; anything but a string is malformed.

    A status we cannot read must not pass for "still running" (the poller
    would wait on it until its deadline), so it is an error naming the response.
    """
    if "status" not in data:
        return ""
    value = data["status"]
    if not isinstance(value, str):
        raise MalformedResponseError(
            f"response has a status that is not a string: {type(value).__name__}",
            response_id=_str(data, "id"),
        )
    return value


def _rebuild(cls: type, values: Dict[str, Any]) -> Any:
    return cls(**values)


@dataclass(
    frozen=True, repr=False
)  # its own __repr__ (below) redacts; no generated one to build at import
class Response:
    """A Responses API object (``resp_...``), background or not.

    The server echoes request metadata, which may hold a signed URL (a
    Tinker checkpoint in ``metadata.lora``): its ``repr`` and its pickles
    show such URLs with the query string redacted. The object itself keeps
    the values as received (``metadata``, ``raw``) for code that needs them.
    """

    id: str
    status: str
    model: Optional[str] = None
    created_at: Optional[int] = None
    metadata: Dict[str, Any] = field(default_factory=dict, hash=False)
    output: Tuple[Any, ...] = ()
    usage: Usage = Usage()
    error: Optional[Dict[str, Any]] = field(default=None, hash=False)
    incomplete_details: Optional[Dict[str, Any]] = field(default=None, hash=False)
    raw: Dict[str, Any] = field(default_factory=dict, repr=False, compare=False, hash=False)

    @classmethod
    def from_dict(cls, payload: Any) -> Response:
        data = _object(payload, "a response")
        return cls(
            id=_required_str(data, "id", "response"),
            status=_status(data),
            model=_str(data, "model"),
            created_at=_int(data, "created_at"),
            metadata=_dict(data, "metadata"),
            output=tuple(_list(data, "output")),
            usage=Usage.from_dict(data.get("usage")),
            error=_optional_dict(data, "error"),
            incomplete_details=_optional_dict(data, "incomplete_details"),
            raw=dict(data),
        )

    def __repr__(self) -> str:
        shown = ", ".join(
            f"{f.name}={redact_secrets(getattr(self, f.name))!r}"
            for f in dataclasses.fields(self)
            if f.repr
        )
        return f"Response({shown})"

    def __reduce__(self) -> Tuple[Any, ...]:
        values = {f.name: redact_secrets(getattr(self, f.name)) for f in dataclasses.fields(self)}
        return (_rebuild, (type(self), values))

    def redacted(self) -> Dict[str, Any]:
        """The payload as received, with signed-URL query strings redacted: for printing and logging."""
        return redact_secrets(self.raw)  # type: ignore[no-any-return]

    @property
    def is_terminal(self) -> bool:
        """True once the status will not change again."""
        return self.status in TERMINAL_STATUSES

    @property
    def has_result(self) -> bool:
        """True for ``completed`` and ``incomplete`` (partial output)."""
        return self.status in RESULT_STATUSES

    def output_block(self) -> Optional[Mapping[str, Any]]:
        """The first ``output_text`` block of the first ``message`` item, if any."""
        for item in self.output:
            if isinstance(item, Mapping) and item.get("type") == "message":
                for block in item.get("content") or ():
                    if isinstance(block, Mapping) and block.get("type") == "output_text":
                        return block
                return None
        return None

    @property
    def output_text(self) -> str:
        """The generated text ("" when there is none yet)."""
        block = self.output_block()
        text = block.get("text") if block is not None else None
        return text if isinstance(text, str) else ""


#: ``incomplete_details.reason`` values that mean the token budget ran out.
_BUDGET_REASONS = frozenset({"max_output_tokens", "max_tokens", "length", "max_completion_tokens"})


def _reason(payload: Any) -> Optional[str]:
    """A non-empty ``stop_reason``/``finish_reason`` string of ``payload``, if any."""
    if not isinstance(payload, Mapping):
        return None
    for key in ("stop_reason", "finish_reason"):
        value = payload.get(key)
        if isinstance(value, str) and value:
            return value
    return None


def _is_token(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _block_token_ids(block: Mapping[str, Any]) -> Optional[list]:
    """``token_ids``, or else the ``token_id`` of every ``logprobs`` entry (as the official SDK reads them)."""
    tokens = block.get("token_ids")
    if isinstance(tokens, list):
        return tokens
    entries = block.get("logprobs")
    if (
        isinstance(entries, list)
        and entries
        and all(
            isinstance(entry, Mapping) and _is_token(entry.get("token_id")) for entry in entries
        )
    ):
        return [entry["token_id"] for entry in entries]
    return None


def _raw_token_block(response: Response) -> Optional[Mapping[str, Any]]:
    """The raw-token ``output_text`` block: the first with token ids in any ``message`` item.

    Without token ids anywhere, the first ``output_text`` block of any
    message item (so the error can say what it lacks), or ``None``.
    """
    first = None
    for item in response.output:
        if not isinstance(item, Mapping) or item.get("type") != "message":
            continue
        content = item.get("content")
        for block in content if isinstance(content, list) else ():
            if isinstance(block, Mapping) and block.get("type") == "output_text":
                if _block_token_ids(block) is not None:
                    return block
                if first is None:
                    first = block
    return first


def _cached_prompt_tokens(usage: Any) -> int:
    """Prompt tokens served from the prefix cache, in any of the usage shapes APIs use (0 when absent)."""
    if not isinstance(usage, Mapping):
        return 0
    for details_key in ("input_tokens_details", "prompt_tokens_details"):
        details = usage.get(details_key)
        if isinstance(details, Mapping) and _is_token(details.get("cached_tokens")):
            return max(details["cached_tokens"], 0)
    value = usage.get("cache_read_input_tokens")
    return max(value, 0) if _is_token(value) else 0


def _stop_reason(block: Mapping[str, Any], response: Response) -> str:
    """The block's reason, else the response's, else one derived from the status.

    Any reason the server gives is passed through as it is (a new reason is
    information, not an error). Without one: ``incomplete`` is ``"length"``
    only when ``incomplete_details.reason`` says the token budget ran out,
    another stated reason passes through, and with no reason at all it stays
    ``"incomplete"`` (as the official SDK reports it); ``completed`` is
    ``"stop"``.
    """
    given = _reason(block) or _reason(response.raw)
    if given is not None:
        return given
    if response.status == "incomplete":
        details = response.incomplete_details or {}
        reason = details.get("reason")
        if isinstance(reason, str) and reason:
            return "length" if reason in _BUDGET_REASONS else reason
        return "incomplete"
    return "stop"


@dataclass(frozen=True)
class SampledTokens:
    """Raw-token sampling result: what a ``TokenCompleter`` returns, without Tinker.

    ``logprobs`` has one entry per token, or is ``None`` when they were not
    requested. ``stop_reason`` is what the server said (wire.md: ``"stop"``
    or ``"length"``; any other reason passes through unchanged), see
    :meth:`from_response`; a stop token id that ended generation is the last
    of ``tokens``. ``cached_prompt_tokens`` counts prompt tokens the server
    served from its prefix cache (0 when it does not say).
    """

    tokens: Tuple[int, ...]
    logprobs: Optional[Tuple[float, ...]]
    stop_reason: str
    response_id: str
    usage: Usage = Usage()
    text: str = ""
    cached_prompt_tokens: int = 0

    @classmethod
    def from_response(cls, response: Response) -> SampledTokens:
        """Read the raw-token block of a finished response (wire.md, Output).

        At least as tolerant as the official SDK's reader: every ``message``
        item is searched for the ``output_text`` block; missing
        ``token_ids`` fall back to the ``token_id`` of each ``logprobs``
        entry; a block without a stop reason takes the response's
        ``stop_reason``/``finish_reason``. A block with no token ids at all,
        non-int ids, or logprobs that do not match the tokens raise
        :class:`MalformedResponseError` carrying the response id.
        """
        block = _raw_token_block(response)
        where = f"response {response.id} ({response.status})"
        if block is None:
            raise MalformedResponseError(
                f"{where} has no output_text block", response_id=response.id
            )
        tokens = _block_token_ids(block)
        if tokens is None:
            raise MalformedResponseError(
                f"{where} has no token_ids list: was it sent with raw_prompt_tokens?",
                response_id=response.id,
            )
        for index, token in enumerate(tokens):
            if not _is_token(token):
                raise MalformedResponseError(
                    f"{where}: token_ids[{index}] is {repr(token)[:40]}, not a token id (an integer)",
                    response_id=response.id,
                )
        logprobs = None
        entries = block.get("logprobs")
        if entries is not None:
            if not isinstance(entries, list) or len(entries) != len(tokens):
                raise MalformedResponseError(
                    "{} has {} logprobs for {} tokens".format(
                        where,
                        len(entries) if isinstance(entries, list) else "malformed",
                        len(tokens),
                    ),
                    response_id=response.id,
                )
            values = []
            for entry in entries:
                value = entry.get("logprob") if isinstance(entry, Mapping) else None
                if isinstance(value, bool) or not isinstance(value, (int, float)):
                    raise MalformedResponseError(
                        f"{where} has a malformed logprob entry {entry!r}", response_id=response.id
                    )
                values.append(float(value))
            logprobs = tuple(values)
        text = block.get("text")
        return cls(
            tokens=tuple(tokens),
            logprobs=logprobs,
            stop_reason=_stop_reason(block, response),
            response_id=response.id,
            usage=response.usage,
            text=text if isinstance(text, str) else "",
            cached_prompt_tokens=_cached_prompt_tokens(response.raw.get("usage")),
        )


@dataclass(frozen=True)
class ChatMessage:
    """The ``message`` of a chat choice: openai-python's ``choice.message.role/.content``."""

    role: str
    content: str


@dataclass(frozen=True)
class ChatChoice:
    """One choice of a :class:`ChatCompletion`.

    Both paths work: ``choice.content``/``choice.role`` (sail_lite's flat
    names) and ``choice.message.content``/``choice.message.role`` (the
    openai-python path), so code written for either runs unchanged.
    """

    index: int
    role: str
    content: str
    finish_reason: Optional[str]

    @property
    def message(self) -> ChatMessage:
        """The openai-python shape of this choice's message."""
        return ChatMessage(role=self.role, content=self.content)


@dataclass(frozen=True)
class ChatCompletion:
    """An OpenAI-shaped ``chat.completion``."""

    id: str
    model: Optional[str]
    created: Optional[int]
    choices: Tuple[ChatChoice, ...]
    usage: Usage = Usage()
    raw: Dict[str, Any] = field(default_factory=dict, repr=False, compare=False, hash=False)

    @classmethod
    def from_dict(cls, payload: Any) -> ChatCompletion:
        data = _object(payload, "a chat completion")
        choices = []
        for position, item in enumerate(_list(data, "choices")):
            if not isinstance(item, Mapping):
                continue
            message = item.get("message") if isinstance(item.get("message"), Mapping) else {}
            choices.append(
                ChatChoice(
                    index=_int(item, "index", position) or 0,
                    role=_str(message, "role", "assistant") or "assistant",
                    content=_str(message, "content", "") or "",
                    finish_reason=_str(item, "finish_reason"),
                )
            )
        return cls(
            id=_required_str(data, "id", "chat completion"),
            model=_str(data, "model"),
            created=_int(data, "created"),
            choices=tuple(choices),
            usage=Usage.from_dict(data.get("usage")),
            raw=dict(data),
        )

    @property
    def content(self) -> str:
        """The first choice's text ("" when there is no choice)."""
        return self.choices[0].content if self.choices else ""


class ContentBlock(dict):  # type: ignore[type-arg]
    """One block of a :class:`Message`'s ``content``: a dict that also reads as attributes.

    ``block.type`` and ``block.text`` (``None`` when the block has no text,
    e.g. a ``tool_use`` block) follow the anthropic SDK; any other key reads as
    an attribute too (``block.name``), and a missing one is an
    ``AttributeError``. It stays a ``dict`` (``block["text"]``,
    ``block.get("type")``, equality with a plain dict) for code written
    against earlier sail_lite.
    """

    __slots__ = ()

    @property
    def type(self) -> Optional[str]:
        value = self.get("type")
        return value if isinstance(value, str) else None

    @property
    def text(self) -> Optional[str]:
        value = self.get("text")
        return value if isinstance(value, str) else None

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(f"content block has no {name!r}") from None


@dataclass(frozen=True)
class Message:
    """An Anthropic-shaped ``message``.

    The anthropic SDK's paths work: ``message.content[0].text`` and
    ``.type`` (each block is a :class:`ContentBlock`), ``message.role``,
    ``message.type``, ``message.stop_reason``,
    ``message.usage.input_tokens`` / ``.output_tokens``.
    """

    id: str
    model: Optional[str]
    role: str
    content: Tuple[ContentBlock, ...]
    stop_reason: Optional[str]
    usage: Usage = Usage()
    raw: Dict[str, Any] = field(default_factory=dict, repr=False, compare=False, hash=False)

    @classmethod
    def from_dict(cls, payload: Any) -> Message:
        data = _object(payload, "a message")
        return cls(
            id=_required_str(data, "id", "message"),
            model=_str(data, "model"),
            role=_str(data, "role", "assistant") or "assistant",
            content=tuple(
                ContentBlock(block)
                for block in _list(data, "content")
                if isinstance(block, Mapping)
            ),
            stop_reason=_str(data, "stop_reason"),
            usage=Usage.from_dict(data.get("usage")),
            raw=dict(data),
        )

    @property
    def type(self) -> str:
        """Always ``"message"``, as in the anthropic SDK."""
        return "message"

    @property
    def text(self) -> str:
        """All text blocks joined."""
        return "".join(
            block["text"]
            for block in self.content
            if block.get("type") == "text" and isinstance(block.get("text"), str)
        )


@dataclass(frozen=True)
class Model:
    """A model from ``GET /models``."""

    id: str
    created: Optional[int] = None
    owned_by: Optional[str] = None
    raw: Dict[str, Any] = field(default_factory=dict, repr=False, compare=False, hash=False)

    @classmethod
    def from_dict(cls, payload: Any) -> Model:
        data = _object(payload, "a model")
        return cls(
            id=_required_str(data, "id", "model"),
            created=_int(data, "created"),
            owned_by=_str(data, "owned_by"),
            raw=dict(data),
        )


@dataclass(frozen=True)
class FileObject:
    """An uploaded file (``file-...``)."""

    id: str
    bytes: int
    filename: Optional[str]
    purpose: Optional[str]
    created_at: Optional[int] = None
    raw: Dict[str, Any] = field(default_factory=dict, repr=False, compare=False, hash=False)

    @classmethod
    def from_dict(cls, payload: Any) -> FileObject:
        data = _object(payload, "a file")
        return cls(
            id=_required_str(data, "id", "file"),
            bytes=_int(data, "bytes", 0) or 0,
            filename=_str(data, "filename"),
            purpose=_str(data, "purpose"),
            created_at=_int(data, "created_at"),
            raw=dict(data),
        )


@dataclass(frozen=True)
class LoRAValidation:
    """One validation record: a LoRA checked on one model."""

    model: str
    status: str
    response_id: Optional[str] = None
    result_code: Optional[str] = None
    result_message: Optional[str] = None

    @classmethod
    def from_dict(cls, payload: Mapping[str, Any]) -> LoRAValidation:
        return cls(
            model=_str(payload, "model", "") or "",
            status=_str(payload, "status", "") or "",
            response_id=_str(payload, "response_id"),
            result_code=_str(payload, "result_code"),
            result_message=_str(payload, "result_message"),
        )


@dataclass(frozen=True)
class LoRA:
    """A LoRA adapter registered with Sail."""

    id: str
    name: str
    status: Optional[str]
    supported_models: Tuple[str, ...]
    validations: Tuple[LoRAValidation, ...] = ()
    display_name: Optional[str] = None
    description: Optional[str] = None
    created_at: Optional[int] = None
    raw: Dict[str, Any] = field(default_factory=dict, repr=False, compare=False, hash=False)

    @classmethod
    def from_dict(cls, payload: Any) -> LoRA:
        data = _object(payload, "a LoRA")
        return cls(
            id=_required_str(data, "id", "LoRA"),
            name=_str(data, "name", "") or "",
            status=_str(data, "status"),
            supported_models=_strings(data, "supported_models"),
            validations=tuple(
                LoRAValidation.from_dict(item)
                for item in _list(data, "validations")
                if isinstance(item, Mapping)
            ),
            display_name=_str(data, "display_name"),
            description=_str(data, "description"),
            created_at=_int(data, "created_at"),
            raw=dict(data),
        )

    def latest_validation(self, model: str) -> Optional[LoRAValidation]:
        """The most recent validation record for ``model`` (records are in creation order)."""
        found = None
        for validation in self.validations:
            if validation.model == model:
                found = validation
        return found


@dataclass(frozen=True)
class Batch:
    """A batch of Responses requests."""

    id: str
    label: Optional[str] = None
    created_at: Optional[int] = None
    request_counts: Dict[str, Any] = field(default_factory=dict, hash=False)
    request_status: Dict[str, str] = field(default_factory=dict, hash=False)
    raw: Dict[str, Any] = field(default_factory=dict, repr=False, compare=False, hash=False)

    @classmethod
    def from_dict(cls, payload: Any) -> Batch:
        data = _object(payload, "a batch")
        statuses = {}
        for custom_id, entry in _dict(data, "request_status").items():
            status = entry.get("status") if isinstance(entry, Mapping) else entry
            if isinstance(status, str):
                statuses[str(custom_id)] = status
        return cls(
            id=_required_str(data, "id", "batch"),
            label=_str(data, "label"),
            created_at=_int(data, "created_at"),
            request_counts=_dict(data, "request_counts"),
            request_status=statuses,
            raw=dict(data),
        )

    @property
    def is_done(self) -> bool:
        """True when every item has a terminal status (and the statuses are known)."""
        return bool(self.request_status) and all(
            status in ("COMPLETED", "FAILED", "CANCELLED")
            for status in self.request_status.values()
        )


@dataclass(frozen=True)
class TokenCount:
    """What ``client.messages.count_tokens`` answers: the input tokens the messages would cost."""

    input_tokens: int
    raw: Dict[str, Any] = field(default_factory=dict, repr=False, compare=False, hash=False)

    @classmethod
    def from_dict(cls, payload: Any) -> TokenCount:
        data = _object(payload, "a token count")
        count = _int(data, "input_tokens")
        if count is None:
            raise MalformedResponseError("a token count has no 'input_tokens' int")
        return cls(input_tokens=count, raw=dict(data))
