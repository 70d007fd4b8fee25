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
    FrozenSet,
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
    from tinker_cookbook.completers import TokenCompleter as _TokenCompleterBase
    from tinker_cookbook.completers import TokensWithLogprobs

    _COOKBOOK_IMPORT_ERROR: Optional[str] = None
    # tinker-cookbook 0.6 added provenance (sequence_id) and prefix-cache accounting; 0.5 has neither.
    _RESULT_FIELDS: FrozenSet[str] = frozenset(
        f.name for f in dataclasses.fields(TokensWithLogprobs)
    )
except ImportError as exc:  # tinker-cookbook (or one of its dependencies, e.g. torch) is missing
    _TokenCompleterBase = object  # type: ignore[assignment,misc]
    TokensWithLogprobs = None  # type: ignore[assignment,misc]
    _COOKBOOK_IMPORT_ERROR = f"{type(exc).__name__}: {exc}"
    _RESULT_FIELDS = frozenset()

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


class SailTokenCompleter(_TokenCompleterBase):  # type: ignore[misc,valid-type]
    """A tinker-cookbook ``TokenCompleter`` that samples on Sail; a drop-in for ``sail.tinker.SailTokenCompleter``.

    It takes every constructor argument of the official SDK's completer
    (sail 0.17.1), with the same defaults, so code written for it runs
    unchanged with ``from sail_lite import SailTokenCompleter``:

    - ``completion_window`` defaults to ``"balanced"``. ``"asap"`` is refused
      here (a background request cannot use it). The retired ``"priority"``
      and ``"15m"`` are handled by :func:`~sail_lite.validate_sampling_options`
      (mapped to ``"balanced"`` with a ``DeprecationWarning``).
    - ``poll_timeout`` (default 1,200 s, as the SDK; ``None`` for no bound)
      bounds one whole sample, create and polls, and raises
      :class:`~sail_lite.errors.DeadlineExceededError` carrying the response
      id (to wait on again or cancel). ``deadline`` is sail_lite's older name
      for it and wins when given.
    - ``voyage`` is accepted and kept on ``self.voyage``, but sail_lite has
      no voyages: requests carry no voyage attribution and open no spans
      (a ``UserWarning`` says so once per call site).
    - ``timeout`` bounds each HTTP call.

    Options are checked here, once: a LoRA source with the ``asap`` window,
    ``lora`` together with ``tinker_lora_signed_url``, a signed URL without
    ``adapter_config``, an ``adapter_config`` string that is not JSON, an
    empty ``model`` or ``max_tokens`` < 1 raise
    :class:`~sail_lite.errors.InvalidRequestError` saying what to change.

    ``client`` is the :class:`~sail_lite.Client` to sample with (shared,
    never closed by the completer); by default one is built from
    ``SAIL_API_KEY``/``SAIL_BASE_URL`` and closed by :meth:`close`.

    Results are the cookbook's ``TokensWithLogprobs``; with tinker-cookbook
    0.6+ their ``sequence_id`` is the Sail response id and
    ``prompt_cache_hit_tokens`` the prompt tokens the server served from its
    prefix cache.

    Thread-safe and picklable (configuration only: a worker process that
    unpickles it builds its own connections).
    """

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
        if _COOKBOOK_IMPORT_ERROR is not None:
            raise ConfigurationError(
                f"SailTokenCompleter needs tinker-cookbook, which could not be imported ({_COOKBOOK_IMPORT_ERROR}): {TINKER_EXTRA_HINT}. The rest of "
                "sail_lite works without it; for raw-token sampling without Tinker use client.tokens.sample()."
            )
        if completion_window == "asap":
            raise InvalidRequestError(
                "completion_window 'asap' cannot be used by SailTokenCompleter: every sample is a background "
                f"request, and background requests cannot use asap; use {_BACKGROUND_WINDOWS}"
            )
        self.options: SamplingOptions = validate_sampling_options(
            model=model,
            max_tokens=max_tokens,
            temperature=temperature,
            top_p=top_p,
            completion_window=completion_window,
            lora=lora,
            tinker_lora_signed_url=tinker_lora_signed_url,
            adapter_config=adapter_config,
            tinker_lora_name=tinker_lora_name,
            metadata=metadata,
            logprobs=request_logprobs,
        )
        self.timeout = None if timeout is None else positive_seconds("timeout", timeout)
        if deadline is not None:
            self.deadline: Optional[float] = positive_seconds("deadline", deadline)
        else:
            self.deadline = (
                None if poll_timeout is None else positive_seconds("poll_timeout", poll_timeout)
            )
        if voyage is not None:
            warnings.warn(
                "sail_lite's SailTokenCompleter accepts voyage= for compatibility with the official sail SDK but "
                "has no voyages: its requests carry no voyage attribution and open no spans",
                UserWarning,
                stacklevel=2,
            )
        self.voyage = voyage
        self._owns_client = client is None
        self.client = Client() if client is None else client

    @property
    def max_tokens(self) -> int:
        return self.options.max_tokens

    @property
    def model(self) -> str:
        return self.options.model

    # The official completer's attributes, read-only here (the options are checked once, at construction).

    @property
    def temperature(self) -> float:
        return self.options.temperature

    @property
    def top_p(self) -> float:
        return self.options.top_p

    @property
    def completion_window(self) -> str:
        return self.options.completion_window

    @property
    def lora(self) -> Optional[str]:
        return self.options.lora

    @property
    def tinker_lora_signed_url(self) -> Optional[str]:
        return self.options.tinker_lora_signed_url

    @property
    def tinker_lora_name(self) -> Optional[str]:
        return self.options.tinker_lora_name

    @property
    def metadata(self) -> Dict[str, str]:
        return dict(self.options.metadata or {})

    @property
    def request_logprobs(self) -> bool:
        return self.options.logprobs

    @property
    def poll_timeout(self) -> Optional[float]:
        """Seconds one whole sample may take (create and polls); ``None``: unbounded."""
        return self.deadline

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

        ``stop`` is sent in the SDK's shape: a bare int is a one-token stop
        list, a string goes as a string, ``[]`` as ``[]``, a tuple as a list,
        ``None`` not at all; strings and ids are checked (non-empty strings
        or ids 0..2^31-1, not a mix).
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
        return block_on(self.submit(prompt, stop, max_tokens=max_tokens))

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
            "options": self.options,
            "timeout": self.timeout,
            "deadline": self.deadline,
            "voyage": self.voyage,
            "client": self.client,
            "owns_client": self._owns_client,
        }

    def __setstate__(self, state: dict) -> None:
        self.options = state["options"]
        self.timeout = state["timeout"]
        self.deadline = state["deadline"]
        self.voyage = state.get("voyage")
        self.client = state["client"]
        self._owns_client = state["owns_client"]

    # -- result -----------------------------------------------------------------------------

    def _to_result(self, response: Response) -> Any:
        return self._tokens_with_logprobs(self._sampled(response))

    def _sampled(self, response: Response) -> SampledTokens:
        """The raw-token result, or its typed error (with a re-resolve hint for an expired checkpoint URL)."""
        try:
            return to_sampled_tokens(response)
        except ResponseFailedError as exc:
            if (
                self.options.tinker_lora_signed_url is not None
                and not isinstance(exc, ResponseExpiredError)
                and exc.code in _URL_EXPIRED_CODES
            ):
                raise _with_message(
                    exc,
                    f"{exc.message}; the Tinker checkpoint URL expired: resolve a fresh one with "
                    "get_tinker_checkpoint_signed_url() and build a new completer",
                ) from None
            raise

    @staticmethod
    def _tokens_with_logprobs(sampled: SampledTokens) -> Any:
        logprobs = list(sampled.logprobs) if sampled.logprobs is not None else None
        extra: Dict[str, Any] = {}
        if "sequence_id" in _RESULT_FIELDS:
            extra["sequence_id"] = sampled.response_id
        if "prompt_cache_hit_tokens" in _RESULT_FIELDS:
            extra["prompt_cache_hit_tokens"] = sampled.cached_prompt_tokens
        return TokensWithLogprobs(
            tokens=list(sampled.tokens),
            maybe_logprobs=logprobs,
            stop_reason=sampled.stop_reason,
            **extra,
        )


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
        f"tinker {_tinker_version()} has no RestClient.{name}() (tinker 0.36 removed it), so the signed checkpoint archive URL cannot "
        "be resolved. With tinker 0.38+, export the step with training_client.save_weights_external(name) and "
        "publish it as a Sail LoRA with sail_lite.tinker_weights.upload_external_weights(), then sample with "
        "lora=<its name>; or install a tinker that has the archive URL, e.g. pip install 'tinker>=0.33,<0.36', or "
        "get the signed URL another way and pass it as tinker_lora_signed_url"
    )


def _tinker_version() -> str:
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
