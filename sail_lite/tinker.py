"""``SailTokenCompleter``: tinker-cookbook's ``TokenCompleter`` on Sail, and Tinker checkpoint URLs.

Token ids go to Sail verbatim on wire.md's raw-token path and come back with
per-token logprobs, so there is no chat-template or re-tokenization drift
between training and sampling. Each sample is one background response on the
client's poller: ``sample_tokens`` blocks, ``submit`` returns a
``concurrent.futures.Future``, ``map`` streams many in order, and ``await
completer(...)`` wraps the same future for asyncio (no executor thread per
await; cancelling the await cancels the response on the server).

This module imports ``tinker_cookbook`` when it is installed and subclasses
its ``TokenCompleter``; without it the module still imports (so ``import
sail_lite`` never needs Tinker or torch) but constructing a completer raises
:class:`~sail_lite.errors.ConfigurationError` naming the ``sail_lite[tinker]``
extra.
"""

from __future__ import annotations

import asyncio
import dataclasses
import warnings
from concurrent.futures import Future
from typing import (
    TYPE_CHECKING,
    Any,
    Callable,
    Dict,
    Iterable,
    Iterator,
    List,
    Mapping,
    Optional,
    Sequence,
    Union,
)

from ._checks import positive_int
from ._checks import seconds as positive_seconds
from ._redact import redact_secrets
from .client import Client
from .errors import (
    ConfigurationError,
    InvalidRequestError,
    ResponseExpiredError,
    ResponseFailedError,
    rebuild_error,
)
from .resources._common import normalize_stop
from .resources.tokens import SamplingOptions, StopArg, to_sampled_tokens, validate_sampling_options
from .submission import block_on
from .types import Response, SampledTokens

if TYPE_CHECKING:  # pragma: no cover
    from .journal import Journal
    from .pipeline import Progress

try:  # pragma: no branch - which arm runs depends on the environment
    # Only the base class is decided at import; the result type is looked up by each new completer, so
    # one built after tinker-cookbook was installed (or a test's stand-in put in place) finds it.
    from tinker_cookbook.completers import TokenCompleter as _TokenCompleterBase
except ImportError:  # tinker-cookbook (or one of its dependencies, e.g. torch) is missing
    _TokenCompleterBase = object  # type: ignore[assignment,misc]

__all__ = [
    "SailTokenCompleter",
    "get_tinker_checkpoint_signed_url",
    "get_tinker_checkpoint_signed_url_async",
    "TINKER_EXTRA_HINT",
]

TINKER_EXTRA_HINT = "pip install 'sail_lite[tinker]' (installs tinker and tinker-cookbook)"
_URL_FIELDS = ("url", "signed_url", "archive_url", "checkpoint_archive_url")
_ARCHIVE_URL_METHOD = "get_checkpoint_archive_url_from_tinker_path"
_SET_TTL_METHOD = "set_checkpoint_ttl_from_tinker_path"
#: As the official completer (sail SDK 0.17.1): 20 minutes for the whole wait of one sample.
DEFAULT_POLL_TIMEOUT = 20.0 * 60.0
#: Error codes a server gives a sample whose signed Tinker checkpoint URL expired (the emulator says
#: ``tinker_checkpoint_url_expired``); only these get the re-resolve hint, whatever the message says.
_URL_EXPIRED_CODES = frozenset(
    {
        "tinker_checkpoint_url_expired",
        "checkpoint_url_expired",
        "signed_url_expired",
        "url_expired",
    }
)
_BACKGROUND_WINDOWS = "balanced (the default), flex, or standard (an alias of balanced)"

PromptArg = Union[Sequence[int], Any]  # a tinker.ModelInput or a sequence of token ids


#: The official completer's sampling attributes (sail 0.17.1), checked together on every change.
_SAMPLING_ATTRIBUTES = (
    "model",
    "max_tokens",
    "temperature",
    "top_p",
    "completion_window",
    "lora",
    "tinker_lora_signed_url",
    "adapter_config",
    "tinker_lora_name",
    "metadata",
    "request_logprobs",
)
#: The official completer's time bounds: ``timeout`` per HTTP call, ``poll_timeout`` per sample.
_SECONDS = ("timeout", "poll_timeout")


class _Settings:
    """The sampling attributes as the user gave them, and the :class:`SamplingOptions` they make.

    Every assignment is checked with all the other values (so a signed URL
    without ``adapter_config`` is refused at the assignment) and changes
    nothing when it is refused. ``metadata`` is the user's own dict: changed
    in place, it is checked again at the next request.
    """

    def __init__(self, values: Dict[str, Any]) -> None:
        values["metadata"] = dict(values["metadata"] or {})  # a copy at construction, as the SDK
        for name in _SECONDS:
            values[name] = _seconds_or_none(name, values[name])
        self.values = values
        self.options = _checked(values)
        self.seen_metadata = dict(values["metadata"])

    def get(self, name: str) -> Any:
        return self.values[name]

    def set(self, name: str, value: Any) -> None:
        if name in _SECONDS:  # not part of a request's body: checked alone
            self.values[name] = _seconds_or_none(name, value)
            return
        values = dict(self.values)
        values[name] = _as_metadata(value) if name == "metadata" else value
        options = _checked(values)
        self.values, self.options = values, options
        self.seen_metadata = dict(values["metadata"])

    def current(self) -> SamplingOptions:
        """The options for the next request, checked again if ``metadata`` was changed in place."""
        metadata = self.values["metadata"]
        if metadata != self.seen_metadata:
            self.options = _checked(self.values)
            self.seen_metadata = dict(metadata)
        return self.options


def _seconds_or_none(name: str, value: Any) -> Optional[float]:
    return None if value is None else positive_seconds(name, value)


def _as_metadata(value: Any) -> Dict[str, Any]:
    """A dict assigned is kept as it is (the caller's, as the SDK's plain attribute); None is {}."""
    if value is None:
        return {}
    if isinstance(value, dict):
        return value
    if isinstance(value, Mapping):
        return dict(value)
    raise InvalidRequestError(f"metadata must be a dict of str to str, got {type(value).__name__}")


def _checked(values: Dict[str, Any]) -> SamplingOptions:
    """``values`` as :class:`SamplingOptions`; a retired window is written back as ``balanced``."""
    if values["completion_window"] == "asap":
        raise InvalidRequestError(
            "completion_window 'asap' cannot be used by SailTokenCompleter: every sample is a background "
            f"request, and background requests cannot use asap; use {_BACKGROUND_WINDOWS}"
        )
    name = values["tinker_lora_name"]
    if name is not None and (not isinstance(name, str) or not name):
        raise InvalidRequestError(
            f"tinker_lora_name must be a non-empty string (a label) or None, got {name!r}"
        )
    if not isinstance(values["request_logprobs"], bool):
        raise InvalidRequestError(
            f"request_logprobs must be True or False, got {values['request_logprobs']!r}"
        )
    options = validate_sampling_options(
        model=values["model"],
        max_tokens=values["max_tokens"],
        temperature=values["temperature"],
        top_p=values["top_p"],
        completion_window=values["completion_window"],
        lora=values["lora"],
        tinker_lora_signed_url=values["tinker_lora_signed_url"],
        adapter_config=values["adapter_config"],
        tinker_lora_name=name,
        metadata=values["metadata"],
        logprobs=values["request_logprobs"],
    )
    options.body([0], None)  # what only a request checks (e.g. the lora name), checked now
    values["completion_window"] = options.completion_window
    return options


def _sampling_attribute(name: str) -> property:
    def get(self: SailTokenCompleter) -> Any:
        return self._settings.get(name)

    def set(self: SailTokenCompleter, value: Any) -> None:
        self._settings.set(name, value)

    return property(get, set, doc=f"``{name}``, as the official completer's; checked when set.")


def _warn_no_voyages() -> None:
    warnings.warn(
        "sail_lite's SailTokenCompleter accepts voyage= for compatibility with the official sail SDK but "
        "has no voyages: its requests carry no voyage attribution and open no spans",
        UserWarning,
        stacklevel=3,  # the line that built the completer
    )


def _result_type() -> Any:
    """tinker-cookbook's ``TokensWithLogprobs``, or :class:`ConfigurationError` naming the extra."""
    try:
        from tinker_cookbook.completers import TokensWithLogprobs
    except ImportError as exc:  # tinker-cookbook (or a dependency of it, e.g. torch) is missing
        raise ConfigurationError(
            f"SailTokenCompleter needs tinker-cookbook, which could not be imported "
            f"({type(exc).__name__}: {exc}): {TINKER_EXTRA_HINT}. The rest of sail_lite works without "
            "it; for raw-token sampling without Tinker use client.tokens.sample()."
        ) from None
    return TokensWithLogprobs


class SailTokenCompleter(_TokenCompleterBase):  # type: ignore[misc,valid-type]
    """A tinker-cookbook ``TokenCompleter`` that samples on Sail; a drop-in for ``sail.tinker.SailTokenCompleter``.

    It takes every constructor argument of the official SDK's completer
    (sail 0.17.1), with the same defaults, and has each as an attribute of
    the same name and meaning, settable between calls
    (``completer.temperature = 0.7``); the next request uses it:

    - ``completion_window`` defaults to ``"balanced"``; ``"asap"`` is refused
      (every sample is a background request); the retired ``"priority"`` and
      ``"15m"`` become ``"balanced"`` with a ``DeprecationWarning``.
    - ``poll_timeout`` (1,200 s; ``None``: unbounded) bounds one whole sample
      and raises :class:`~sail_lite.errors.DeadlineExceededError` with the
      response id; ``deadline`` is sail_lite's older name, and wins when given.
      ``timeout`` bounds each HTTP call.
    - ``voyage`` is kept, but sail_lite has no voyages (a ``UserWarning`` says so).
    - ``metadata`` is a plain dict: changed in place, it is checked at the next
      request, before it is sent. ``adapter_config`` reads back as given.

    Values are checked at construction and on every assignment, together
    (``lora`` with ``tinker_lora_signed_url``: set the other to ``None``
    first; a signed URL needs ``adapter_config``: set it first); a bad one
    raises :class:`~sail_lite.errors.InvalidRequestError` and changes nothing.

    ``client`` is the :class:`~sail_lite.Client` to sample with (never closed
    by the completer); by default one is built from the environment and
    closed by :meth:`close`.

    Results are the cookbook's ``TokensWithLogprobs`` plus one attribute,
    ``sail_response_id`` (``resp_...``; the cookbook never reads it). With
    tinker-cookbook 0.6+, ``prompt_cache_hit_tokens`` is filled and
    ``sequence_id`` is ``None``, as with the official completer: it is
    Tinker's sequence id, which the cookbook sends to ``forward_backward`` as
    provenance, and Sail samples have none.

    Thread-safe (an assignment applies from the next request on) and
    picklable (configuration only).
    """

    model = _sampling_attribute("model")
    max_tokens = _sampling_attribute("max_tokens")
    temperature = _sampling_attribute("temperature")
    top_p = _sampling_attribute("top_p")
    completion_window = _sampling_attribute("completion_window")
    lora = _sampling_attribute("lora")
    tinker_lora_signed_url = _sampling_attribute("tinker_lora_signed_url")
    adapter_config = _sampling_attribute("adapter_config")
    tinker_lora_name = _sampling_attribute("tinker_lora_name")
    metadata = _sampling_attribute("metadata")
    request_logprobs = _sampling_attribute("request_logprobs")
    timeout = _sampling_attribute("timeout")
    poll_timeout = _sampling_attribute("poll_timeout")
    deadline = _sampling_attribute("poll_timeout")  # sail_lite's older name for poll_timeout

    def __init__(
        self,
        *,
        model: str,
        max_tokens: int,
        temperature: float = 1.0,
        top_p: float = 1.0,
        completion_window: str = "balanced",
        lora: Optional[str] = None,
        tinker_lora_signed_url: Optional[str] = None,
        adapter_config: Union[Mapping[str, Any], str, None] = None,
        tinker_lora_name: Optional[str] = None,
        metadata: Optional[Mapping[str, Any]] = None,
        timeout: Optional[float] = None,
        poll_timeout: Optional[float] = DEFAULT_POLL_TIMEOUT,
        voyage: Optional[Any] = None,
        request_logprobs: bool = True,
        client: Optional[Client] = None,
        deadline: Optional[float] = None,
    ) -> None:
        self._result_type = _result_type()
        self._settings = _Settings(
            {
                "model": model,
                "max_tokens": max_tokens,
                "temperature": temperature,
                "top_p": top_p,
                "completion_window": completion_window,
                "lora": lora,
                "tinker_lora_signed_url": tinker_lora_signed_url,
                "adapter_config": adapter_config,
                "tinker_lora_name": tinker_lora_name,
                "metadata": metadata,
                "request_logprobs": request_logprobs,
                "timeout": timeout,
                # sail_lite's older name wins, and is named in its own error:
                "poll_timeout": poll_timeout
                if deadline is None
                else positive_seconds("deadline", deadline),
            }
        )
        if voyage is not None:
            _warn_no_voyages()
        self.voyage = voyage
        self._owns_client = client is None
        self.client = Client() if client is None else client

    @property
    def options(self) -> SamplingOptions:
        """The checked :class:`SamplingOptions` the next request is built from."""
        return self._settings.current()

    def __repr__(self) -> str:
        return f"SailTokenCompleter({self.options!r})"

    # -- sampling ---------------------------------------------------------------------------

    def submit(
        self,
        prompt: PromptArg,
        stop: StopArg = None,
        *,
        max_tokens: Optional[int] = None,
        journal: Optional[Journal] = None,
        job: Optional[str] = None,
        identity: Any = None,
        occurrence: Optional[int] = None,
        retry_failed: bool = False,
    ) -> Future[Any]:
        """Start one sample; a future of its ``TokensWithLogprobs``.

        ``prompt`` is a ``tinker.ModelInput`` or a sequence of token ids;
        ``stop`` a string, a list of strings, a token id or a list of token
        ids (see :meth:`request_body`);
        ``max_tokens`` caps this call (the smaller of it and the
        constructor's wins). Bad input raises
        :class:`~sail_lite.errors.InvalidRequestError` here, before any
        request. Cancelling the future cancels the response on the server.

        ``journal``, ``job``, ``identity``, ``occurrence`` and
        ``retry_failed`` make the sample durable exactly as
        :meth:`sail_lite.resources.tokens.Tokens.submit` (the journal holds
        the raw-token result, converted to ``TokensWithLogprobs`` on the way
        out; the job's kind is ``tokens.submit``, so a sample submitted here
        and the same body through ``client.tokens.submit`` share a key).
        """
        body = self.request_body(prompt, stop, max_tokens=max_tokens)
        submission = self.client.responses.submission
        call = submission.call(timeout=self.timeout, deadline=self.deadline)
        if journal is not None or job is not None:
            return submission.submit(
                body,
                self._sampled,
                call,
                kind="tokens.submit",
                journal=journal,
                job=job,
                identity=identity,
                occurrence=occurrence,
                retry_failed=retry_failed,
                convert=self._tokens_with_logprobs,
            )
        return submission.submit(body, self._to_result, call)

    def request_body(
        self, prompt: PromptArg, stop: StopArg = None, *, max_tokens: Optional[int] = None
    ) -> Dict[str, Any]:
        """The ``POST /responses`` body one sample sends, as the official completer sends it.

        ``stop`` in the SDK's shape: a bare int is a one-token list, a string a string, ``[]`` is
        sent, a tuple is a list, ``None`` is left out; checked (non-empty strings or ids, not mixed).
        """
        body = self.options.body(_prompt_tokens(prompt), None, max_tokens)
        wire_stop = _sdk_stop(stop)
        if wire_stop is not None:
            body["stop"] = wire_stop
        return body

    def sample_tokens(
        self, prompt: PromptArg, stop: StopArg = None, *, max_tokens: Optional[int] = None
    ) -> Any:
        """Sample and block until the result: the same as ``await completer(...)``, for sync code.

        On Ctrl-C the response is cancelled on the server (bounded; see
        :func:`sail_lite.submission.block_on`) and the ``KeyboardInterrupt``
        is raised again from here, naming the response id.
        """
        return block_on(lambda: self.submit(prompt, stop, max_tokens=max_tokens))

    async def __call__(
        self, model_input: PromptArg, stop: StopArg = None, *, max_tokens: Optional[int] = None
    ) -> Any:
        """The tinker-cookbook contract: sample from ``model_input`` until ``stop`` or the token budget.

        The await holds no thread: the sample runs on the client's poller and
        its future is bridged into the running loop. Cancelling the await
        (``asyncio.wait_for``, the cookbook's ``sampling_turn_timeout_seconds``)
        cancels the response on the server.
        """
        return await asyncio.wrap_future(self.submit(model_input, stop, max_tokens=max_tokens))

    def map(
        self,
        prompts: Iterable[PromptArg],
        stop: StopArg = None,
        *,
        max_tokens: Optional[int] = None,
        max_in_flight: int = 64,
        progress: Optional[Callable[[Progress], None]] = None,
        journal: Optional[Journal] = None,
        job: Optional[str] = None,
        on_interrupt: Optional[str] = None,
        return_exceptions: bool = False,
    ) -> Iterator[Any]:
        """Sample every prompt, yielding ``TokensWithLogprobs`` in input order, at most ``max_in_flight`` at once.

        Prompts are read lazily, so a generator of millions is fine. A failed
        sample raises its error at its place in the order, after every earlier
        result was yielded (or is yielded as the exception with
        ``return_exceptions``); stopping early cancels the samples still in
        flight on the server (``on_interrupt="leave"`` leaves them running).
        With a ``job`` name each sample's idempotency key comes from the job,
        the prompt and its occurrence (the same prompt eight times for a
        group rollout is eight samples), so a re-run after a crash is replayed
        by the server, not billed again; with a :class:`~sail_lite.Journal`
        it also resumes. ``progress(Progress)`` reports done / in flight /
        failed, rate and ETA. The engine is :func:`sail_lite.pipeline.run_map`.
        """
        from .pipeline import run_map

        submission = self.client.responses.submission

        def submit(prompt: List[int], key: Optional[str]) -> Future[Any]:
            # Journaled results must be plain data: SampledTokens now, TokensWithLogprobs on the way out.
            call = submission.call(
                timeout=self.timeout, deadline=self.deadline, idempotency_key=key
            )
            return submission.submit(
                self.request_body(prompt, stop, max_tokens=max_tokens), self._sampled, call
            )

        def attach(response_id: str) -> Future[Any]:
            call = submission.call(timeout=self.timeout, deadline=self.deadline)
            return submission.attach(response_id, self._sampled, call)

        params = {
            "options": redact_secrets(dataclasses.asdict(self.options)),
            "stop": _sdk_stop(stop),
            "max_tokens": max_tokens,
        }
        results = run_map(
            (_token_list(prompt) for prompt in prompts),
            submit=submit,
            attach=attach,
            journal=journal,
            job=job,
            kind="completer",
            params=params,
            max_in_flight=max_in_flight,
            progress=progress,
            on_interrupt=on_interrupt,
            return_exceptions=return_exceptions,
            total=len(prompts) if hasattr(prompts, "__len__") else None,
        )  # type: ignore[arg-type]
        return _converted(results, self._tokens_with_logprobs)

    # -- lifecycle --------------------------------------------------------------------------

    def close(self) -> None:
        """Close the client if this completer built it (a client passed in is left open)."""
        if self._owns_client:
            self.client.close()

    def __enter__(self) -> SailTokenCompleter:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    def __getstate__(self) -> dict:
        return {
            "settings": self._settings,
            "voyage": self.voyage,
            "client": self.client,
            "owns_client": self._owns_client,
        }

    def __setstate__(self, state: dict) -> None:
        self._result_type = _result_type()
        self._settings = state["settings"]
        self.voyage = state["voyage"]
        self.client = state["client"]
        self._owns_client = state["owns_client"]

    # -- result -----------------------------------------------------------------------------

    def _to_result(self, response: Response) -> Any:
        return self._tokens_with_logprobs(self._sampled(response))

    def _sampled(self, response: Response) -> SampledTokens:
        return _sampled_tokens(response, signed_url=self.options.tinker_lora_signed_url is not None)

    def _tokens_with_logprobs(self, sampled: SampledTokens) -> Any:
        return _cookbook_result(self._result_type, sampled)


def _sampled_tokens(response: Response, *, signed_url: bool) -> SampledTokens:
    """The raw-token result, or its typed error (pointing to the bridge for an expired checkpoint URL)."""
    try:
        return to_sampled_tokens(response)
    except ResponseFailedError as exc:
        if (
            signed_url
            and not isinstance(exc, ResponseExpiredError)
            and exc.code in _URL_EXPIRED_CODES
        ):
            raise _with_message(
                exc,
                f"{exc.message}; the Tinker checkpoint URL expired. Signed URLs do not last (and "
                "tinker 0.36+ cannot make new ones): export the step with "
                "training_client.save_weights_external(), publish it as a Sail LoRA with "
                "sail_lite.tinker_weights.upload_external_weights() and sample with lora=<its name> "
                "(on this completer: .tinker_lora_signed_url = None, then .lora = published.name)",
            ) from None
        raise


def _cookbook_result(result_type: Any, sampled: SampledTokens) -> Any:
    """``sampled`` as the cookbook's ``TokensWithLogprobs``, plus ``sail_response_id``."""
    logprobs = list(sampled.logprobs) if sampled.logprobs is not None else None
    extra: Dict[str, Any] = {}
    # tinker-cookbook 0.6 added prefix-cache accounting (and sequence_id); 0.5 has neither.
    if any(f.name == "prompt_cache_hit_tokens" for f in dataclasses.fields(result_type)):
        extra["prompt_cache_hit_tokens"] = sampled.cached_prompt_tokens
    # sequence_id stays None, as the official completer leaves it: the cookbook (0.6+) sends it to
    # Tinker's forward_backward as provenance, and a Sail response id is not a Tinker sequence id.
    result = result_type(
        tokens=list(sampled.tokens),
        maybe_logprobs=logprobs,
        stop_reason=sampled.stop_reason,
        **extra,
    )
    result.sail_response_id = sampled.response_id
    return result


def _with_message(exc: ResponseFailedError, message: str) -> ResponseFailedError:
    """``exc`` with another message and every other field (status, code, ids, attempts, ...) kept."""
    state = dict(exc.__dict__)
    state["message"] = message
    return rebuild_error(type(exc), message, state)  # type: ignore[return-value]


def _sdk_stop(stop: Any) -> Any:
    """``stop`` as the official completer sends it (see :meth:`SailTokenCompleter.request_body`), checked."""
    if stop is None:
        return None
    if isinstance(stop, int) and not isinstance(stop, bool):
        stop = [stop]
    if isinstance(stop, str):
        normalize_stop(stop)  # refuses ""
        return stop
    if not isinstance(stop, (list, tuple)):
        normalize_stop(stop)  # the typed error for anything else
        raise InvalidRequestError(
            "stop must be a string, a list of strings, a token id or a list of token ids"
        )
    return normalize_stop(list(stop)) or []


def _converted(results: Iterator[Any], convert: Callable[[Any], Any]) -> Iterator[Any]:
    """``results`` with each result (not an exception) converted; closing this closes ``results`` at once."""
    try:
        for result in results:
            yield result if isinstance(result, BaseException) else convert(result)
    finally:
        close = getattr(results, "close", None)
        if close is not None:
            close()


def _token_list(prompt: PromptArg) -> List[int]:
    """A prompt as a plain list of ids (journal-able); a bad one is kept as given, to fail at its place."""
    tokens = _prompt_tokens(prompt)
    return list(tokens) if isinstance(tokens, (list, tuple)) else tokens  # type: ignore[return-value]


def _prompt_tokens(prompt: PromptArg) -> List[int]:
    """A ``ModelInput`` (token chunks only) or a sequence of ids, as a list of ids (checked later)."""
    to_ints = getattr(prompt, "to_ints", None)
    if callable(to_ints):
        try:
            return list(to_ints())
        except Exception as exc:
            raise InvalidRequestError(
                f"the ModelInput cannot be sent as raw tokens ({exc}): Sail samples from token chunks only, "
                "not images"
            ) from None
    if isinstance(prompt, (str, bytes)):
        raise InvalidRequestError(
            "the prompt must be token ids (a ModelInput or a list of ints), not text: tokenize it first"
        )
    return prompt  # type: ignore[no-any-return]


# -- Tinker checkpoint URLs -------------------------------------------------------------------


def get_tinker_checkpoint_signed_url(
    service_client: Any, tinker_path: str, *, ttl_seconds: Optional[int] = None
) -> str:
    """The signed archive URL of a Tinker checkpoint, for ``tinker_lora_signed_url``.

    With ``ttl_seconds``, the checkpoint's TTL is set first, so per-step RL
    sampler checkpoints are cleaned up instead of accumulating. Needs a
    tinker version whose ``RestClient`` has
    ``get_checkpoint_archive_url_from_tinker_path`` (removed in tinker
    0.36); otherwise :class:`~sail_lite.errors.ConfigurationError` names the
    installed version and what to do. The URL is a credential: it is never
    logged and errors never show its query string.
    """
    rest = _rest_client(service_client, tinker_path)
    get_url = _rest_method(rest, _ARCHIVE_URL_METHOD)
    if ttl_seconds is not None:
        set_ttl = _rest_method(rest, _SET_TTL_METHOD)
        _resolved(set_ttl(tinker_path, positive_int("ttl_seconds", ttl_seconds)))
    return _url_from(_resolved(get_url(tinker_path)))


async def get_tinker_checkpoint_signed_url_async(
    service_client: Any, tinker_path: str, *, ttl_seconds: Optional[int] = None
) -> str:
    """:func:`get_tinker_checkpoint_signed_url` for asyncio code (uses the ``*_async`` methods)."""
    rest = _rest_client(service_client, tinker_path)
    get_url = _rest_method(rest, _ARCHIVE_URL_METHOD, asynchronous=True)
    if ttl_seconds is not None:
        set_ttl = _rest_method(rest, _SET_TTL_METHOD, asynchronous=True)
        await _awaited(set_ttl(tinker_path, positive_int("ttl_seconds", ttl_seconds)))
    return _url_from(await _awaited(get_url(tinker_path)))


def _rest_client(service_client: Any, tinker_path: str) -> Any:
    if not isinstance(tinker_path, str) or not tinker_path.startswith("tinker://"):
        raise InvalidRequestError(
            f"tinker_path must be a tinker:// checkpoint path (e.g. save_weights_for_sampler(...).path), got {tinker_path!r}"
        )
    create = getattr(service_client, "create_rest_client", None)
    if not callable(create):
        raise InvalidRequestError(
            f"service_client must be a tinker.ServiceClient (it has no create_rest_client()), got {type(service_client).__name__}"
        )
    return create()


def _rest_method(rest: Any, name: str, *, asynchronous: bool = False) -> Callable[..., Any]:
    """``rest.<name>_async`` (falling back to an awaitable ``rest.<name>``) or ``rest.<name>``."""
    candidates = (name + "_async", name) if asynchronous else (name,)
    for candidate in candidates:
        method = getattr(rest, candidate, None)
        if callable(method):
            return method  # type: ignore[no-any-return]
    raise ConfigurationError(
        f"tinker {tinker_version()} has no RestClient.{name}() (tinker 0.36 removed it), so the signed checkpoint archive URL cannot "
        "be resolved. With tinker 0.38+, export the step with training_client.save_weights_external(name) and "
        "publish it as a Sail LoRA with sail_lite.tinker_weights.upload_external_weights(), then sample with "
        "lora=<its name>; or install a tinker that has the archive URL, e.g. pip install 'tinker>=0.33,<0.36', or "
        "get the signed URL another way and pass it as tinker_lora_signed_url"
    )


def tinker_version() -> str:
    try:
        from importlib.metadata import version

        return version("tinker")
    except Exception:  # not installed, or installed without metadata
        return "(version unknown)"


def _resolved(value: Any) -> Any:
    """A tinker ``APIFuture``/``Future`` resolved with ``.result()``; a plain value as is."""
    result = getattr(value, "result", None)
    return result() if callable(result) else value


async def _awaited(value: Any) -> Any:
    """An awaitable awaited; a future-like resolved off the loop; a plain value as is."""
    if hasattr(value, "__await__"):
        return await value
    if isinstance(value, Future):
        return await asyncio.wrap_future(value)
    return value


def _url_from(result: Any) -> str:
    """The URL out of a string, an object with ``.url`` (or similar) or a dict with ``"url"``."""
    candidates = [result] if isinstance(result, str) else []
    for field_name in _URL_FIELDS:
        candidates.append(
            result.get(field_name)
            if isinstance(result, Mapping)
            else getattr(result, field_name, None)
        )
    for candidate in candidates:
        if isinstance(candidate, str) and candidate.startswith(("http://", "https://")):
            return candidate
    raise ConfigurationError(
        f"Tinker returned no signed archive URL (got a {type(result).__name__}): expected a string, an object with .url or a dict "
        "with 'url'"
    )
