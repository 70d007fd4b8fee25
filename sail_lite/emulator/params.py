"""Request bodies in, checked parameters out; every rejection is an :class:`ApiError`.

Parsing is pure: no state, no I/O. What needs state (does the LoRA exist,
is the file ours) is checked in ``state.py``. Messages say what to fix.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from typing import Any, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple

__all__ = [
    "ApiError",
    "ModelSpec",
    "InferenceParams",
    "WINDOWS",
    "Catalogue",
    "CATALOGUES",
    "canonical_window",
    "RAW_PROMPT_PLACEHOLDER",
    "LOGPROBS_INCLUDE",
    "parse_response_body",
    "parse_chat_body",
    "parse_messages_body",
    "parse_count_tokens_body",
    "parse_batch_body",
    "parse_lora_body",
    "parse_lora_patch",
    "fingerprint",
]

#: Every service tier the emulator knows, by its internal name (``balanced`` is the older docs' ``standard``).
WINDOWS = ("asap", "priority", "balanced", "flex")
RAW_PROMPT_PLACEHOLDER = "<raw token prompt; ignored when raw_prompt_tokens is set>"
LOGPROBS_INCLUDE = "message.output_text.logprobs"
MAX_PROMPT_TOKENS = 2_000_000
MAX_TOKEN_ID = 2**31 - 1
MAX_OUTPUT_TOKENS = 100_000
DEFAULT_OUTPUT_TOKENS = 256
MAX_BATCH_ITEMS = 100_000
_LORA_NAME = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,62}[a-z0-9])?\Z")
_CUSTOM_ID = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}\Z")

_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    408: "timeout_error",
    409: "conflict_error",
    413: "request_too_large",
    429: "rate_limit_error",
}


class ApiError(Exception):
    """An HTTP error reply with the wire.md body."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        code: Optional[str] = None,
        param: Optional[str] = None,
        type: Optional[str] = None,
        headers: Optional[Mapping[str, str]] = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.param = param
        self.type = type or _TYPES.get(status, "api_error")
        self.headers = dict(headers or {})

    def body(self) -> Dict[str, Any]:
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }


def _bad(message: str, param: Optional[str] = None, code: Optional[str] = None) -> ApiError:
    return ApiError(400, message, param=param, code=code or "invalid_request")


@dataclass(frozen=True)
class Catalogue:
    """The completion windows a server offers, by the names clients send (wire.md "Completion windows").

    ``windows`` maps each accepted name to its tier (the key of ``turn_times``);
    ``retired`` names get a 400 that names the windows that work;
    ``background_asap``: whether ``asap`` may be used with ``background: true``;
    ``default``: the window of a background or LoRA request that names none;
    ``batch``: the names a batch item may use (the first is its default).
    """

    name: str
    windows: Mapping[str, str]
    retired: Tuple[str, ...]
    background_asap: bool
    default: str
    batch: Tuple[str, ...]

    def offered(self) -> str:
        """The accepted names, for error messages (an alias shown with its tier)."""
        names = []
        for name, tier in self.windows.items():
            names.append(name if name == tier else f"{name} (= {tier})")
        return ", ".join(names)


CATALOGUES: Mapping[str, Catalogue] = {
    # The service today (official sail SDK 0.17.1, October 2026; newer docs).
    "current": Catalogue(
        "current",
        {"asap": "asap", "balanced": "balanced", "standard": "balanced", "flex": "flex"},
        retired=("priority", "15m"),
        background_asap=False,
        default="balanced",
        batch=("balanced", "standard", "flex"),
    ),
    # The older page of the docs (and the seed): priority ~1 min, standard ~5 min; asap with background accepted.
    "legacy": Catalogue(
        "legacy",
        {
            "asap": "asap",
            "priority": "priority",
            "standard": "balanced",
            "balanced": "balanced",
            "flex": "flex",
        },
        retired=(),
        background_asap=True,
        default="priority",
        batch=("standard", "balanced", "flex"),
    ),
}

_TIER_ALIASES = {"standard": "balanced"}


def canonical_window(name: str) -> str:
    """The tier a window name (of either catalogue) means: ``standard`` is ``balanced``; ValueError if unknown."""
    tier = _TIER_ALIASES.get(name, name)
    if tier not in WINDOWS:
        raise ValueError(
            "unknown completion window {!r}: the emulator knows {} (and standard, = balanced)".format(
                name, ", ".join(WINDOWS)
            )
        )
    return tier


@dataclass(frozen=True)
class ModelSpec:
    """A model the emulator serves; ``windows`` are tiers it offers (of either catalogue's names)."""

    id: str
    owned_by: str = "sail"
    max_lora_rank: Optional[int] = None  # None: no LoRA serving
    windows: Tuple[str, ...] = WINDOWS
    asap_only: bool = False  # rejects idempotency keys, like Sail's asap-only deployments

    def __post_init__(self) -> None:
        object.__setattr__(self, "windows", tuple(canonical_window(w) for w in self.windows))


@dataclass(frozen=True)
class InferenceParams:
    """One inference request, checked; what the model and the state need."""

    model: str
    prompt: Sequence[int] = field(repr=False)
    raw: bool
    max_tokens: int
    temperature: float
    top_p: float
    stop_strings: Tuple[str, ...]
    stop_tokens: Tuple[int, ...]
    logprobs: bool
    background: bool
    metadata: Mapping[str, str]
    window: str
    lora: Optional[str] = None
    tinker_url: Optional[str] = field(default=None, repr=False)
    fingerprint: bytes = field(default=b"", repr=False)
    stream: bool = False  # answer with server-sent events (foreground requests only)
    include_usage: bool = False  # chat streams: stream_options.include_usage


_ESCAPE = json.encoder.encode_basestring_ascii  # type: ignore[attr-defined]
_HASH_SLICE = 1 << 16


def fingerprint(route: str, body: Any) -> bytes:
    """Canonical digest of a request: equal bodies fingerprint alike whatever their formatting.

    The digest is that of ``json.dumps(body, sort_keys=True, separators=(",", ":"))``,
    but a long string is escaped and hashed a slice at a time, so a 30 MiB
    input is never copied whole here.
    """
    digest = hashlib.sha256(route.encode("utf-8") + b"\0")
    for piece in _canonical(body):
        digest.update(piece.encode("ascii"))
    return digest.digest()


def _canonical(value: Any) -> Iterator[str]:
    """The pieces of ``value``'s canonical JSON text, in order."""
    if isinstance(value, str) and len(value) > _HASH_SLICE:
        yield '"'
        for start in range(0, len(value), _HASH_SLICE):
            yield _ESCAPE(value[start : start + _HASH_SLICE])[1:-1]
        yield '"'
    elif isinstance(value, dict) and all(isinstance(key, str) for key in value):
        yield "{"
        for index, key in enumerate(sorted(value)):
            yield ("," if index else "") + _ESCAPE(key) + ":"
            yield from _canonical(value[key])
        yield "}"
    elif isinstance(value, list) and any(isinstance(item, (str, dict, list)) for item in value):
        yield "["
        for index, item in enumerate(value):
            if index:
                yield ","
            yield from _canonical(item)
        yield "]"
    else:  # numbers, short strings, lists of numbers: the C encoder, in one piece
        yield json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def _object(body: Any, what: str = "the request body") -> Mapping[str, Any]:
    if not isinstance(body, dict):
        raise _bad(f"{what} must be a JSON object")
    return body


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _int(
    body: Mapping[str, Any], name: str, default: Optional[int], low: int, high: int
) -> Optional[int]:
    value = body.get(name)
    if value is None:
        return default
    if not _is_int(value) or not low <= value <= high:
        raise _bad(f"{name} must be an integer from {low} to {high} (got {_short(value)!r})", name)
    return value


def _number(body: Mapping[str, Any], name: str, default: float, low: float, high: float) -> float:
    value = body.get(name)
    if value is None:
        return default
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not low <= value <= high:
        raise _bad(f"{name} must be a number from {low} to {high} (got {_short(value)!r})", name)
    return float(value)


def _bool(body: Mapping[str, Any], name: str) -> bool:
    value = body.get(name, False)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise _bad(f"{name} must be true or false", name)
    return value


def _string(
    body: Mapping[str, Any], name: str, *, required: bool = False, limit: int = 1024
) -> Optional[str]:
    value = body.get(name)
    if value is None:
        if required:
            raise _bad(f"{name} is required", name)
        return None
    if not isinstance(value, str) or (required and not value) or len(value) > limit:
        raise _bad(f"{name} must be a string of at most {limit} characters", name)
    return value


def _short(value: Any) -> Any:
    text = repr(value)
    return value if len(text) <= 40 else text[:37] + "..."


def _model(body: Mapping[str, Any], models: Mapping[str, ModelSpec]) -> ModelSpec:
    name = _string(body, "model", required=True, limit=256)
    spec = models.get(name or "")
    if spec is None:
        raise ApiError(
            400,
            f"model {name!r} does not exist: GET /v1/models lists the models",
            param="model",
            code="model_not_found",
        )
    return spec


def _metadata(body: Mapping[str, Any]) -> Dict[str, str]:
    metadata = body.get("metadata")
    if metadata is None:
        return {}
    if not isinstance(metadata, dict):
        raise _bad("metadata must be an object of string values", "metadata")
    for key, value in metadata.items():
        if not isinstance(value, str):
            raise _bad(
                f"metadata.{key} must be a string (got {type(value).__name__}): JSON-encode structured values",
                "metadata." + key,
            )
        if len(key) > 64:
            raise _bad("metadata keys are at most 64 characters", "metadata")
    return dict(metadata)


def _prompt_tokens(value: Any) -> Tuple[int, ...]:
    if not isinstance(value, list) or not 1 <= len(value) <= MAX_PROMPT_TOKENS:
        raise _bad(
            f"raw_prompt_tokens must be a list of 1 to {MAX_PROMPT_TOKENS} token ids",
            "raw_prompt_tokens",
        )
    for index, token in enumerate(value):
        if not _is_int(token) or not 0 <= token <= MAX_TOKEN_ID:
            raise _bad(
                f"raw_prompt_tokens[{index}] must be an integer from 0 to {MAX_TOKEN_ID} (got {_short(token)!r})",
                "raw_prompt_tokens",
            )
    return tuple(value)


def _content_text(content: Any, where: str) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for index, part in enumerate(content):
            if isinstance(part, dict) and isinstance(part.get("text"), str):
                parts.append(part["text"])
            elif isinstance(part, str):
                parts.append(part)
            else:
                raise _bad(
                    f'{where}.content[{index}] must be a text part ({{"type": "text", "text": ...}})',
                    where,
                )
        return "".join(parts)
    raise _bad(f"{where}.content must be a string or a list of text parts", where)


def _transcript(messages: Any, name: str, system: str = "") -> str:
    if not isinstance(messages, list) or not messages:
        raise _bad(f"{name} must be a non-empty list of messages", name)
    lines = ["system: " + system] if system else []
    for index, message in enumerate(messages):
        where = f"{name}[{index}]"
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise _bad(f"{where} must be an object with a role and content", where)
        lines.append(
            "{}: {}".format(message["role"], _content_text(message.get("content", ""), where))
        )
    return "\n".join(lines) + "\nassistant:"


def _stops(value: Any, raw: bool, name: str = "stop") -> Tuple[Tuple[str, ...], Tuple[int, ...]]:
    if value is None:
        return (), ()
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or len(value) > 64:
        raise _bad(
            "{} must be a string or a list of at most 64 strings{}".format(
                name, " or token ids" if raw else ""
            ),
            name,
        )
    if all(isinstance(v, str) and v for v in value):
        return tuple(value), ()
    if raw and all(_is_int(v) and 0 <= v <= MAX_TOKEN_ID for v in value):
        return (), tuple(value)
    raise _bad(
        "{} must be non-empty strings{}, not a mix".format(name, " or token ids" if raw else ""),
        name,
    )


def _window(
    metadata: Dict[str, str],
    spec: ModelSpec,
    catalogue: Catalogue,
    *,
    background: bool,
    has_lora: bool,
    batch_item: bool = False,
) -> str:
    """The tier a request runs in, or the 400 the service gives (wire.md "Completion windows")."""
    param = "metadata.completion_window"
    asked = metadata.get("completion_window")
    if asked is None:
        if batch_item:
            asked = catalogue.batch[0]
        elif spec.asap_only:
            asked = "asap"
        else:
            asked = catalogue.default if (background or has_lora) else "asap"
    elif batch_item and asked not in catalogue.batch:
        raise _bad(
            "completion_window {!r} is not accepted in a batch: use {}".format(
                asked[:40], " or ".join(catalogue.batch)
            ),
            param,
            "invalid_completion_window",
        )
    if asked in catalogue.retired:
        raise _bad(
            f"the {asked!r} completion window is retired: use one of {catalogue.offered()}",
            param,
            "unsupported_completion_window",
        )
    window = catalogue.windows.get(asked)
    if window is None:
        raise _bad(
            f"metadata.completion_window must be one of {catalogue.offered()}; got {asked[:40]!r}",
            param,
            "invalid_completion_window",
        )
    if window not in spec.windows:
        offered = [name for name, tier in catalogue.windows.items() if tier in spec.windows]
        raise _bad(
            "model {} does not offer the {!r} completion window (it offers {})".format(
                spec.id, asked, ", ".join(offered)
            ),
            param,
            "unsupported_completion_window",
        )
    if window == "flex" and not background:
        raise _bad(
            "the flex completion window requires background: true",
            "background",
            "flex_requires_background",
        )
    others = ", ".join(name for name, tier in catalogue.windows.items() if tier != "asap")
    if window == "asap" and has_lora:
        raise _bad(
            f"requests with a LoRA cannot use the asap completion window: use {others}",
            param,
            "lora_asap_unsupported",
        )
    if window == "asap" and background and not catalogue.background_asap and not spec.asap_only:
        raise _bad(
            f"background requests cannot use the asap completion window: use {others} (or send "
            "background: false for asap)",
            param,
            "asap_background_unsupported",
        )
    return window


def _lora_source(
    metadata: Dict[str, str], spec: ModelSpec, raw: bool
) -> Tuple[Optional[str], Optional[str]]:
    """(LoRA name or id, Tinker URL); a Tinker URL on a text request is ignored (base model)."""
    lora = metadata.get("lora")
    if not lora:
        return None, None
    is_url = lora.startswith(("http://", "https://"))
    if is_url and not raw:
        return None, None  # Tinker checkpoints apply only on the raw-token path
    if spec.max_lora_rank is None:
        raise _bad(f"model {spec.id} does not serve LoRAs", "model", "lora_not_supported")
    if not is_url:
        return lora, None
    config = metadata.get("tinker_adapter_config")
    if config is None:
        raise _bad(
            "metadata.tinker_adapter_config is required with a Tinker checkpoint URL in metadata.lora",
            "metadata.tinker_adapter_config",
        )
    try:
        parsed = json.loads(config)
    except ValueError:
        parsed = None
    if not isinstance(parsed, dict):
        raise _bad(
            "metadata.tinker_adapter_config must be the adapter_config.json object as a JSON string",
            "metadata.tinker_adapter_config",
        )
    return None, lora


def parse_response_body(
    body: Any,
    models: Mapping[str, ModelSpec],
    *,
    batch_item: bool = False,
    catalogue: Optional[Catalogue] = None,
) -> InferenceParams:
    """``POST /responses`` (or a batch item's ``params``)."""
    catalogue = catalogue or CATALOGUES["current"]
    body = _object(body)
    spec = _model(body, models)
    raw_tokens = body.get("raw_prompt_tokens")
    raw = raw_tokens is not None
    if raw:
        prompt = _prompt_tokens(raw_tokens)
    else:
        source = body.get("input")
        if isinstance(source, str) and source:
            prompt = source.encode("utf-8")  # byte-level tokens, one byte each
        elif isinstance(source, list):
            prompt = _transcript(source, "input").encode("utf-8")
        else:
            raise _bad("input is required: a non-empty string or a list of messages", "input")
    max_tokens = _int(body, "max_output_tokens", DEFAULT_OUTPUT_TOKENS, 1, MAX_OUTPUT_TOKENS)
    include = body.get("include") or []
    if not isinstance(include, list) or not all(isinstance(i, str) for i in include):
        raise _bad("include must be a list of strings", "include")
    background = True if batch_item else _bool(body, "background")
    metadata = _metadata(body)
    lora, tinker_url = _lora_source(metadata, spec, raw)
    has_lora = bool(lora or tinker_url)
    if batch_item:
        window = _window(
            metadata, spec, catalogue, background=True, has_lora=has_lora, batch_item=True
        )
    else:
        window = _window(metadata, spec, catalogue, background=background, has_lora=has_lora)
    strings, tokens = _stops(body.get("stop"), raw)
    return InferenceParams(
        model=spec.id,
        prompt=prompt,
        raw=raw,
        max_tokens=max_tokens or DEFAULT_OUTPUT_TOKENS,
        temperature=_number(body, "temperature", 1.0, 0.0, 2.0),
        top_p=_number(body, "top_p", 1.0, 0.0, 1.0),
        stop_strings=strings,
        stop_tokens=tokens,
        logprobs=LOGPROBS_INCLUDE in include,
        background=background,
        metadata=metadata,
        window=window,
        lora=lora,
        tinker_url=tinker_url,
        fingerprint=fingerprint("responses", body),
        **(_stream_options(body, background) if not batch_item else {}),
    )


def parse_chat_body(
    body: Any, models: Mapping[str, ModelSpec], catalogue: Optional[Catalogue] = None
) -> InferenceParams:
    """``POST /chat/completions`` (synchronous)."""
    catalogue = catalogue or CATALOGUES["current"]
    body = _object(body)
    spec = _model(body, models)
    if body.get("n") not in (None, 1):
        raise _bad("n must be 1", "n")
    prompt = _transcript(body.get("messages"), "messages").encode("utf-8")
    max_tokens = _int(body, "max_completion_tokens", None, 1, MAX_OUTPUT_TOKENS)
    if max_tokens is None:
        max_tokens = _int(body, "max_tokens", DEFAULT_OUTPUT_TOKENS, 1, MAX_OUTPUT_TOKENS)
    return _synchronous_params(
        "chat", body, spec, catalogue, prompt, max_tokens or DEFAULT_OUTPUT_TOKENS, "stop"
    )


def parse_messages_body(
    body: Any, models: Mapping[str, ModelSpec], catalogue: Optional[Catalogue] = None
) -> InferenceParams:
    """``POST /messages`` (Anthropic shape, synchronous)."""
    catalogue = catalogue or CATALOGUES["current"]
    body = _object(body)
    spec = _model(body, models)
    max_tokens = _int(body, "max_tokens", None, 1, MAX_OUTPUT_TOKENS)
    if max_tokens is None:
        raise _bad("max_tokens is required", "max_tokens")
    prompt = _messages_prompt(body)
    return _synchronous_params(
        "messages", body, spec, catalogue, prompt, max_tokens, "stop_sequences"
    )


def _stream_options(body: Mapping[str, Any], background: bool) -> Dict[str, bool]:
    """``stream`` and ``stream_options.include_usage``; a streamed background request is a 400."""
    stream = _bool(body, "stream")
    if stream and background:
        raise _bad(
            "stream: true cannot be used with background: true: stream a foreground request, or poll "
            "a background one",
            "stream",
        )
    options = body.get("stream_options")
    if options is not None and not isinstance(options, dict):
        raise _bad("stream_options must be an object", "stream_options")
    include_usage = bool(options and options.get("include_usage") is True)
    return {"stream": stream, "include_usage": include_usage}


def _synchronous_params(
    route: str,
    body: Mapping[str, Any],
    spec: ModelSpec,
    catalogue: Catalogue,
    prompt: Sequence[int],
    max_tokens: int,
    stop_field: str,
) -> InferenceParams:
    """The rest of a chat or messages body (text prompt, no background): metadata, LoRA, stops, sampling, window."""
    metadata = _metadata(body)
    lora, _ = _lora_source(metadata, spec, raw=False)
    strings, _ = _stops(body.get(stop_field), raw=False, name=stop_field)
    return InferenceParams(
        model=spec.id,
        prompt=prompt,
        raw=False,
        max_tokens=max_tokens,
        temperature=_number(body, "temperature", 1.0, 0.0, 2.0),
        top_p=_number(body, "top_p", 1.0, 0.0, 1.0),
        stop_strings=strings,
        stop_tokens=(),
        logprobs=False,
        background=False,
        metadata=metadata,
        window=_window(metadata, spec, catalogue, background=False, has_lora=bool(lora)),
        lora=lora,
        fingerprint=fingerprint(route, body),
        **_stream_options(body, background=False),
    )


def _messages_prompt(body: Mapping[str, Any]) -> bytes:
    """The prompt tokens of an Anthropic-shaped body (``system`` + ``messages``)."""
    system = body.get("system") or ""
    if not isinstance(system, str):
        system = _content_text(system, "system")
    return _transcript(body.get("messages"), "messages", system).encode("utf-8")


def parse_count_tokens_body(body: Any, models: Mapping[str, ModelSpec]) -> Tuple[str, bytes]:
    """``POST /messages/count_tokens``: (model, prompt tokens), counted as ``/messages`` would count them."""
    body = _object(body)
    spec = _model(body, models)
    return spec.id, _messages_prompt(body)


def parse_batch_body(
    body: Any, models: Mapping[str, ModelSpec], catalogue: Optional[Catalogue] = None
) -> Tuple[Optional[str], List[Tuple[str, InferenceParams]]]:
    """``POST /batches``: (label, [(custom_id, params)])."""
    body = _object(body)
    if body.get("endpoint", "/v1/responses") != "/v1/responses":
        raise _bad('endpoint must be "/v1/responses"', "endpoint")
    label = _string(body, "label", limit=256)
    items = body.get("requests")
    if not isinstance(items, list) or not 1 <= len(items) <= MAX_BATCH_ITEMS:
        raise _bad(f"requests must be a list of 1 to {MAX_BATCH_ITEMS} items", "requests")
    seen = set()
    parsed = []
    for index, item in enumerate(items):
        where = f"requests[{index}]"
        if not isinstance(item, dict):
            raise _bad(f"{where} must be an object with custom_id and params", where)
        custom_id = item.get("custom_id")
        if not isinstance(custom_id, str) or not _CUSTOM_ID.match(custom_id):
            raise _bad(
                f"{where}.custom_id must be 1-64 characters of [a-z0-9_-], starting with [a-z0-9]",
                where + ".custom_id",
            )
        if custom_id in seen:
            raise _bad(
                f"{where}.custom_id {custom_id!r} appears twice: custom_ids are unique",
                where + ".custom_id",
            )
        seen.add(custom_id)
        try:
            parsed.append(
                (
                    custom_id,
                    parse_response_body(
                        item.get("params"), models, batch_item=True, catalogue=catalogue
                    ),
                )
            )
        except ApiError as exc:
            raise _bad(f"{where}.params: {exc.message}", where + ".params", exc.code) from None
    return label, parsed


def _supported_models(value: Any, models: Mapping[str, ModelSpec]) -> List[str]:
    if not isinstance(value, list) or not value or not all(isinstance(m, str) for m in value):
        raise _bad("supported_models must be a non-empty list of model ids", "supported_models")
    for model in value:
        spec = models.get(model)
        if spec is None:
            raise _bad(
                f"supported_models: {model!r} is not a known model id",
                "supported_models",
                "model_not_found",
            )
        if spec.max_lora_rank is None:
            raise _bad(
                f"supported_models: {model} does not serve LoRAs",
                "supported_models",
                "lora_not_supported",
            )
    return list(dict.fromkeys(value))


def parse_lora_body(body: Any, models: Mapping[str, ModelSpec]) -> Dict[str, Any]:
    """``POST /loras``."""
    body = _object(body)
    name = body.get("name")
    if not isinstance(name, str) or not _LORA_NAME.match(name) or len(name) < 2:
        raise _bad(
            "name must be 2-64 characters of [a-z0-9-], starting and ending with a letter or digit",
            "name",
            "invalid_lora_name",
        )
    return {
        "name": name,
        "supported_models": _supported_models(body.get("supported_models"), models),
        "config_file_id": _string(body, "config_file_id", required=True, limit=128),
        "weights_file_id": _string(body, "weights_file_id", required=True, limit=128),
        "display_name": _string(body, "display_name", limit=256),
        "description": _string(body, "description", limit=4096),
    }


def parse_lora_patch(body: Any, models: Mapping[str, ModelSpec]) -> Dict[str, Any]:
    """``PATCH /loras/{name}``: only the fields given."""
    body = _object(body)
    changes: Dict[str, Any] = {}
    if "supported_models" in body:
        changes["supported_models"] = _supported_models(body["supported_models"], models)
    for name, limit in (("display_name", 256), ("description", 4096)):
        if name in body:
            changes[name] = _string(body, name, limit=limit)
    if not changes:
        raise _bad("nothing to update: send supported_models, display_name or description")
    return changes
