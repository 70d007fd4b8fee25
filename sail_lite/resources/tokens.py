"""``client.tokens``: raw-token sampling (token ids in, ids + logprobs out), no Tinker needed.

Each sample is one background ``POST /responses`` on the raw-token path of
wire.md (``raw_prompt_tokens`` + placeholder ``input``), polled to
completion on the client's poller. No chat template, no tokenizer: the ids
go to the model verbatim.
"""

from __future__ import annotations

import functools
import json
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Dict, Iterable, Iterator, Optional, Sequence, Union

if sys.version_info >= (
    3,
    9,
):  # isinstance(x, Mapping) on every request: the abc's check is the fast one
    from collections.abc import Mapping
else:  # pragma: no cover - 3.8: typing's alias, so that annotations still resolve
    from typing import Mapping

from .._checks import model_id, number_in, positive_int
from .._future import ResponseFuture
from .._redact import redact_url
from ..errors import InvalidRequestError
from ..submission import Submitter, block_on, to_sampled_tokens
from ..types import SampledTokens
from ._common import (
    DEFAULT_WINDOW,
    RAW_PROMPT_PLACEHOLDER,
    build_metadata,
    check_prompt_tokens,
    check_window,
    compact_json,
    normalize_stop,
)
from .responses import Responses

if TYPE_CHECKING:  # pragma: no cover
    from .._requester import Requester
    from ..journal import Journal
    from ..pipeline import Progress

__all__ = [
    "Tokens",
    "SamplingOptions",
    "validate_sampling_options",
    "to_sampled_tokens",
    "LOGPROBS_INCLUDE",
]

LOGPROBS_INCLUDE = "message.output_text.logprobs"

StopArg = Union[int, str, Sequence[str], Sequence[int], None]


@dataclass(frozen=True)
class SamplingOptions:
    """Checked, normalized sampling options: everything but the prompt and stop."""

    model: str
    max_tokens: int
    temperature: float = 1.0
    top_p: float = 1.0
    completion_window: str = DEFAULT_WINDOW
    lora: Optional[str] = None
    tinker_lora_signed_url: Optional[str] = None
    adapter_config: Optional[str] = None  # compact JSON, keys sorted
    tinker_lora_name: Optional[str] = None
    metadata: Optional[Mapping[str, str]] = None
    logprobs: bool = True

    def __repr__(self) -> str:
        # A signed URL's query is a credential: never show it.
        shown = redact_url(self.tinker_lora_signed_url) if self.tinker_lora_signed_url else None
        return (
            f"SamplingOptions(model={self.model!r}, max_tokens={self.max_tokens}, temperature={self.temperature}, top_p={self.top_p}, completion_window={self.completion_window!r}, "
            f"lora={self.lora!r}, tinker_lora_signed_url={shown!r}, tinker_lora_name={self.tinker_lora_name!r}, logprobs={self.logprobs})"
        )

    def body(
        self, prompt_tokens: Sequence[int], stop: StopArg, max_tokens: Optional[int] = None
    ) -> Dict[str, Any]:
        """The wire.md raw-token ``POST /responses`` body (always background)."""
        limit = (
            self.max_tokens
            if max_tokens is None
            else min(self.max_tokens, positive_int("max_tokens", max_tokens))
        )
        extra: Dict[str, Any] = dict(self.metadata or {})
        if self.tinker_lora_signed_url is not None:
            extra["lora"] = self.tinker_lora_signed_url
            extra["tinker_adapter_config"] = self.adapter_config
            if self.tinker_lora_name is not None:
                extra["tinker_lora_name"] = self.tinker_lora_name
        body: Dict[str, Any] = {
            "model": self.model,
            "input": RAW_PROMPT_PLACEHOLDER,
            "raw_prompt_tokens": check_prompt_tokens(prompt_tokens),
            "max_output_tokens": limit,
            "temperature": self.temperature,
            "top_p": self.top_p,
            "background": True,
            "metadata": build_metadata(
                extra, lora=self.lora, completion_window=self.completion_window, background=True
            ),
        }
        wire_stop = normalize_stop(stop)
        if wire_stop:
            body["stop"] = wire_stop
        if self.logprobs:
            body["include"] = [LOGPROBS_INCLUDE]
        return body


def validate_sampling_options(
    *,
    model: str,
    max_tokens: int,
    temperature: float = 1.0,
    top_p: float = 1.0,
    completion_window: str = DEFAULT_WINDOW,
    lora: Optional[str] = None,
    tinker_lora_signed_url: Optional[str] = None,
    adapter_config: Union[Mapping[str, Any], str, None] = None,
    tinker_lora_name: Optional[str] = None,
    metadata: Optional[Mapping[str, Any]] = None,
    logprobs: bool = True,
) -> SamplingOptions:
    """Check sampling options once (e.g. at a completer's construction).

    Raises :class:`InvalidRequestError` naming what to change: an empty
    model, ``max_tokens`` < 1, temperature outside 0..2 or top_p outside
    0..1, an unknown window or ``asap`` (raw-token sampling is always
    background, and background requests cannot use asap), ``lora`` together
    with ``tinker_lora_signed_url``, a signed URL without ``adapter_config``,
    or an ``adapter_config`` string that is not a JSON object. A retired
    window (``priority``, ``15m``) becomes ``balanced`` with a
    ``DeprecationWarning``.
    """
    model_id(model)
    positive_int("max_tokens", max_tokens)
    window = check_window(
        completion_window,
        background=True,
        lora=lora is not None or tinker_lora_signed_url is not None,
    )
    if lora is not None and tinker_lora_signed_url is not None:
        raise InvalidRequestError(
            "pass either lora (an uploaded LoRA) or tinker_lora_signed_url (a Tinker checkpoint), not both"
        )
    if tinker_lora_signed_url is not None:
        _check_signed_url(tinker_lora_signed_url, adapter_config)
    return SamplingOptions(
        model=model,
        max_tokens=max_tokens,
        temperature=number_in("temperature", temperature, 0.0, 2.0),
        top_p=number_in("top_p", top_p, 0.0, 1.0),
        completion_window=window or DEFAULT_WINDOW,
        lora=lora,
        tinker_lora_signed_url=tinker_lora_signed_url,
        adapter_config=None if adapter_config is None else _adapter_config_json(adapter_config),
        tinker_lora_name=tinker_lora_name,
        metadata=build_metadata(metadata),
        logprobs=bool(logprobs),
    )


def _check_signed_url(url: Any, adapter_config: Any) -> None:
    if not isinstance(url, str) or not url.startswith(("http://", "https://")):
        raise InvalidRequestError(
            "tinker_lora_signed_url must be an http(s) URL from get_tinker_checkpoint_signed_url"
        )
    if adapter_config is None:
        raise InvalidRequestError(
            "tinker_lora_signed_url needs adapter_config: pass the checkpoint's PEFT adapter_config.json "
            "contents (a dict or a JSON string)"
        )


def _adapter_config_json(adapter_config: Any) -> str:
    """The adapter config (a mapping or JSON text of an object) as compact JSON, keys sorted."""
    if isinstance(adapter_config, str):
        try:
            parsed = json.loads(adapter_config)
        except ValueError as exc:
            raise InvalidRequestError(f"adapter_config is not valid JSON: {exc}") from None
    else:
        parsed = adapter_config
    if not isinstance(parsed, Mapping):
        raise InvalidRequestError(
            "adapter_config must be a JSON object (the contents of adapter_config.json)"
        )
    return compact_json(parsed)


def _options_arguments(options: SamplingOptions) -> Dict[str, Any]:
    """A :class:`SamplingOptions` as the sampling keywords that make it again (what a map records)."""
    return {
        "model": options.model,
        "max_tokens": options.max_tokens,
        "temperature": options.temperature,
        "top_p": options.top_p,
        "completion_window": options.completion_window,
        "lora": options.lora,
        "tinker_lora_signed_url": options.tinker_lora_signed_url,
        "adapter_config": options.adapter_config,
        "tinker_lora_name": options.tinker_lora_name,
        "metadata": dict(options.metadata) if options.metadata is not None else None,
        "logprobs": options.logprobs,
    }


def _given(**arguments: Any) -> Dict[str, Any]:
    """The arguments that were given (not ``None``): what a map records with its job."""
    return {name: value for name, value in arguments.items() if value is not None}


class Tokens:
    """Raw-token sampling. Thread-safe; results are :class:`~sail_lite.types.SampledTokens`.

    ``sample``, ``submit`` and ``map`` take the same sampling keywords, with
    one meaning (``submit``'s): ``model`` and ``max_tokens`` (or pre-checked
    ``options``), ``stop`` (a string, strings, a token id or token ids),
    ``temperature``, ``top_p``, ``completion_window``, a LoRA (``lora``, or a
    Tinker checkpoint: ``tinker_lora_signed_url`` with ``adapter_config`` and
    ``tinker_lora_name``), ``metadata`` and ``logprobs``.
    """

    def __init__(self, requester: Requester, responses: Responses) -> None:
        self._responses = responses
        self.submission: Submitter = responses.submission

    def sample(
        self,
        prompt_tokens: Sequence[int],
        *,
        model: Optional[str] = None,
        max_tokens: Optional[int] = None,
        stop: StopArg = None,
        options: Optional[SamplingOptions] = None,
        temperature: float = 1.0,
        top_p: float = 1.0,
        completion_window: str = DEFAULT_WINDOW,
        lora: Optional[str] = None,
        tinker_lora_signed_url: Optional[str] = None,
        adapter_config: Union[Mapping[str, Any], str, None] = None,
        tinker_lora_name: Optional[str] = None,
        metadata: Optional[Mapping[str, Any]] = None,
        logprobs: bool = True,
        timeout: Optional[float] = None,
        deadline: Optional[float] = None,
        idempotency_key: Optional[str] = None,
        extra_headers: Optional[Mapping[str, str]] = None,
        journal: Optional[Journal] = None,
        job: Optional[str] = None,
        identity: Any = None,
        occurrence: Optional[int] = None,
        retry_failed: bool = False,
    ) -> SampledTokens:
        """Sample from ``prompt_tokens`` and block until the result: :meth:`submit`, then wait.

        Takes :meth:`submit`'s arguments. Raises the typed error of a failed,
        cancelled or expired response, or :class:`DeadlineExceededError`
        (carrying the response id) when ``deadline`` passes. Ctrl-C cancels
        the sample on the server (bounded) and the ``KeyboardInterrupt``
        names it (:func:`~sail_lite.submission.block_on`).
        """
        start = functools.partial(
            self.submit,
            prompt_tokens,
            model=model,
            max_tokens=max_tokens,
            stop=stop,
            options=options,
            temperature=temperature,
            top_p=top_p,
            completion_window=completion_window,
            lora=lora,
            tinker_lora_signed_url=tinker_lora_signed_url,
            adapter_config=adapter_config,
            tinker_lora_name=tinker_lora_name,
            metadata=metadata,
            logprobs=logprobs,
            timeout=timeout,
            deadline=deadline,
            idempotency_key=idempotency_key,
            extra_headers=extra_headers,
            journal=journal,
            job=job,
            identity=identity,
            occurrence=occurrence,
            retry_failed=retry_failed,
        )
        return block_on(start)  # the sample is tracked as it is made: Ctrl-C finds it

    def submit(
        self,
        prompt_tokens: Sequence[int],
        *,
        model: Optional[str] = None,
        max_tokens: Optional[int] = None,
        stop: StopArg = None,
        options: Optional[SamplingOptions] = None,
        temperature: float = 1.0,
        top_p: float = 1.0,
        completion_window: str = DEFAULT_WINDOW,
        lora: Optional[str] = None,
        tinker_lora_signed_url: Optional[str] = None,
        adapter_config: Union[Mapping[str, Any], str, None] = None,
        tinker_lora_name: Optional[str] = None,
        metadata: Optional[Mapping[str, Any]] = None,
        logprobs: bool = True,
        timeout: Optional[float] = None,
        deadline: Optional[float] = None,
        idempotency_key: Optional[str] = None,
        extra_headers: Optional[Mapping[str, str]] = None,
        journal: Optional[Journal] = None,
        job: Optional[str] = None,
        identity: Any = None,
        occurrence: Optional[int] = None,
        retry_failed: bool = False,
    ) -> ResponseFuture:
        """Start a sample and return a future of its :class:`SampledTokens`; returns at once.

        Takes the sampling keywords, or pre-checked ``options`` (then
        ``max_tokens`` caps ``options.max_tokens``), and the durable ones
        (see the class docstring). ``timeout`` bounds each HTTP call,
        ``deadline`` the whole sample. Cancelling the future cancels the
        response on the server.
        """
        call = self.submission.call(
            timeout=timeout,
            deadline=deadline,
            extra_headers=extra_headers,
            idempotency_key=idempotency_key,
        )
        if options is None:
            if model is None or max_tokens is None:
                raise InvalidRequestError("sampling needs model and max_tokens (or options=...)")
            options = validate_sampling_options(
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
                logprobs=logprobs,
            )
            max_tokens = None
        return self.submission.submit(
            _checked(options).body(prompt_tokens, stop, max_tokens),
            to_sampled_tokens,
            call,
            kind="tokens.submit",
            journal=journal,
            job=job,
            identity=identity,
            occurrence=occurrence,
            retry_failed=retry_failed,
        )

    def map(
        self,
        prompts: Iterable[Union[Sequence[int], Mapping[str, Any]]],
        *,
        model: Optional[str] = None,
        max_tokens: Optional[int] = None,
        stop: StopArg = None,
        options: Optional[SamplingOptions] = None,
        temperature: Optional[float] = None,
        top_p: Optional[float] = None,
        completion_window: Optional[str] = None,
        lora: Optional[str] = None,
        tinker_lora_signed_url: Optional[str] = None,
        adapter_config: Union[Mapping[str, Any], str, None] = None,
        tinker_lora_name: Optional[str] = None,
        metadata: Optional[Mapping[str, Any]] = None,
        logprobs: Optional[bool] = None,
        journal: Optional[Journal] = None,
        job: Optional[str] = None,
        max_in_flight: int = 64,
        progress: Optional[Callable[[Progress], None]] = None,
        on_interrupt: Optional[str] = None,
        return_exceptions: bool = False,
        retry_failed: bool = False,
        timeout: Optional[float] = None,
        deadline: Optional[float] = None,
        extra_headers: Optional[Mapping[str, str]] = None,
    ) -> Iterator[SampledTokens]:
        """Sample every prompt; yield the :class:`SampledTokens` in input order, ``max_in_flight`` at once.

        The sampling keywords (``None``: :meth:`submit`'s default) are shared
        by every prompt; a prompt may be a mapping with ``prompt_tokens`` and
        its own overrides. Lazy, memory-flat, keyed by ``job`` and resumable
        from a ``journal``: see :func:`sail_lite.pipeline.run_map`. Arguments
        are checked here, at the call.
        """
        shared = _shared_sampling(
            options,
            stop=stop,
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
            logprobs=logprobs,
        )
        from ..pipeline import map_job  # the engine loads with the first map, not the client

        return map_job(
            "tokens",
            self,
            prompts,
            shared,
            journal=journal,
            job=job,
            max_in_flight=max_in_flight,
            progress=progress,
            on_interrupt=on_interrupt,
            return_exceptions=return_exceptions,
            retry_failed=retry_failed,
            timeout=timeout,
            deadline=deadline,
            extra_headers=extra_headers,
        )

    def attach(
        self,
        response_id: str,
        *,
        deadline: Optional[float] = None,
        timeout: Optional[float] = None,
        extra_headers: Optional[Mapping[str, str]] = None,
    ) -> ResponseFuture:
        """A future of the :class:`SampledTokens` of a raw-token response made earlier, by its id.

        For resuming: a pipeline that recorded ``future.response_id`` picks
        the sample up again here (from any process) instead of re-sending it.
        """
        call = self.submission.call(timeout=timeout, deadline=deadline, extra_headers=extra_headers)
        return self.submission.attach(response_id, to_sampled_tokens, call)


def _checked(options: Any) -> SamplingOptions:
    if not isinstance(options, SamplingOptions):
        raise InvalidRequestError(
            "options must be a SamplingOptions (from validate_sampling_options)"
        )
    return options


def _shared_sampling(options: Any, *, stop: Any, **sampling: Any) -> Dict[str, Any]:
    """A map's shared sampling keywords, checked now: the ones given, or ``options`` spelled out.

    Prompts may bring ``model`` and ``max_tokens`` themselves, so stand-ins
    fill those two for the check when they are not given here.
    """
    if options is not None:
        options = _checked(options)
        cap = sampling["max_tokens"]
        sampling = _options_arguments(options)
        if cap is not None:
            sampling["max_tokens"] = min(options.max_tokens, positive_int("max_tokens", cap))
    shared = _given(stop=stop, **sampling)
    validate_sampling_options(**{"model": "-", "max_tokens": 1, **_given(**sampling)})
    normalize_stop(stop)
    return shared
