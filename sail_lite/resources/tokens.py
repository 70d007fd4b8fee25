"""``client.tokens``: raw-token sampling (token ids in, ids + logprobs out), no Tinker needed.

Each sample is one background ``POST /responses`` on the raw-token path of
wire.md (``raw_prompt_tokens`` + placeholder ``input``), polled to
completion on the client's poller. No chat template, no tokenizer: the ids
go to the model verbatim.
"""

from __future__ import annotations

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
from ..types import Response, SampledTokens
from ._common import (
    DEFAULT_WINDOW,
    RAW_PROMPT_PLACEHOLDER,
    build_metadata,
    check_prompt_tokens,
    check_window,
    compact_json,
    normalize_stop,
)
from .responses import Responses, check_result

if TYPE_CHECKING:  # pragma: no cover
    from .._requester import Requester
    from ..journal import Journal
    from ..pipeline import Progress

__all__ = [
    "Tokens",
    "SamplingOptions",
    "validate_sampling_options",
    "sampling_arguments",
    "LOGPROBS_INCLUDE",
]

LOGPROBS_INCLUDE = "message.output_text.logprobs"

StopArg = Union[str, Sequence[str], Sequence[int], None]


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
    config_json = None
    if tinker_lora_signed_url is not None:
        if not isinstance(tinker_lora_signed_url, str) or not tinker_lora_signed_url.startswith(
            ("http://", "https://")
        ):
            raise InvalidRequestError(
                "tinker_lora_signed_url must be an http(s) URL from get_tinker_checkpoint_signed_url"
            )
        if adapter_config is None:
            raise InvalidRequestError(
                "tinker_lora_signed_url needs adapter_config: pass the checkpoint's PEFT adapter_config.json "
                "contents (a dict or a JSON string)"
            )
    if adapter_config is not None:
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
        config_json = compact_json(parsed)
    return SamplingOptions(
        model=model,
        max_tokens=max_tokens,
        temperature=number_in("temperature", temperature, 0.0, 2.0),
        top_p=number_in("top_p", top_p, 0.0, 1.0),
        completion_window=window or DEFAULT_WINDOW,
        lora=lora,
        tinker_lora_signed_url=tinker_lora_signed_url,
        adapter_config=config_json,
        tinker_lora_name=tinker_lora_name,
        metadata=build_metadata(metadata),
        logprobs=bool(logprobs),
    )


SAMPLING_ARGUMENTS = (
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
    "logprobs",
)


def sampling_arguments(arguments: Mapping[str, Any]) -> Dict[str, Any]:
    """The :func:`validate_sampling_options` arguments out of a caller's ``locals()``.

    The one place the sampling options are forwarded: a signature that
    repeats them (for its type hints) hands them on through here.
    """
    return {name: arguments[name] for name in SAMPLING_ARGUMENTS}


def to_sampled_tokens(response: Response) -> SampledTokens:
    """The terminal response's raw-token result, or its typed error."""
    return SampledTokens.from_response(check_result(response))


class Tokens:
    """Raw-token sampling. Thread-safe; results are :class:`~sail_lite.types.SampledTokens`."""

    def __init__(self, requester: Requester, responses: Responses) -> None:
        self._requester = requester
        self._responses = responses

    def sample(self, prompt_tokens: Sequence[int], **kwargs: Any) -> SampledTokens:
        """Sample from ``prompt_tokens`` and block until the result.

        Keyword arguments are those of :meth:`submit`. Raises the typed error
        of a failed, cancelled or expired response, or
        :class:`DeadlineExceededError` (carrying the response id) when
        ``deadline`` passes.
        """
        return self.submit(prompt_tokens, **kwargs).result()

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
    ) -> ResponseFuture[SampledTokens]:
        """Start a sample and return a future of its :class:`SampledTokens`.

        Returns at once. Pass either the sampling arguments or pre-checked
        ``options`` (from :func:`validate_sampling_options`), in which case
        ``max_tokens`` caps ``options.max_tokens`` (the smaller wins).
        ``timeout`` bounds each HTTP call, ``deadline`` the whole sample.
        Cancelling the future cancels the response on the server. The
        future's ``idempotency_key`` and ``response_id`` (see
        :class:`~sail_lite.ResponseFuture`) let a pipeline resume it.

        Durable, as :meth:`map` (and with the same names): with a
        :class:`~sail_lite.Journal` (and a ``job`` name, else the journal's
        own), the key derives from the job, the request and its
        ``occurrence`` among equal requests (counted per journal object, or
        given), and the request is recorded before it is sent. Submitting the
        same request again (after a crash, in a new process) returns a future
        that is already done from the journal, re-attaches to it by response
        id while it runs, or re-sends it with the same key (the server
        replays it). ``identity`` names the request instead of its content
        (e.g. a row id: a changed prompt under it is then a
        :class:`~sail_lite.journal.JournalMismatchError`); ``retry_failed``
        sends a journaled failure again. ``job`` without a journal derives
        the key only, and needs ``occurrence``. See
        :func:`sail_lite.pipeline.submit_request`.
        """
        call = self._requester.call(
            timeout=timeout,
            deadline=deadline,
            extra_headers=extra_headers,
            idempotency_key=idempotency_key,
        )
        if options is None:
            if model is None or max_tokens is None:
                raise InvalidRequestError("sampling needs model and max_tokens (or options=...)")
            options = validate_sampling_options(**sampling_arguments(locals()))
            max_tokens = None
        elif not isinstance(options, SamplingOptions):
            raise InvalidRequestError(
                "options must be a SamplingOptions (from validate_sampling_options)"
            )
        body = options.body(prompt_tokens, stop, max_tokens)
        if journal is not None or job is not None:
            return self._responses._submit_durably(
                body,
                to_sampled_tokens,
                call,
                kind="tokens.submit",
                journal=journal,
                job=job,
                identity=identity,
                occurrence=occurrence,
                retry_failed=retry_failed,
            )
        return self._responses._submit(body, to_sampled_tokens, call)

    def map(
        self,
        prompts: Iterable[Union[Sequence[int], Mapping[str, Any]]],
        *,
        journal: Optional[Journal] = None,
        job: Optional[str] = None,
        max_in_flight: int = 64,
        progress: Optional[Callable[[Progress], None]] = None,
        on_interrupt: Optional[str] = None,
        return_exceptions: bool = False,
        retry_failed: bool = False,
        timeout: Optional[float] = None,
        deadline: Optional[float] = None,
        **sampling: Any,
    ) -> Iterator[SampledTokens]:
        """Sample every prompt; yield the :class:`SampledTokens` in input order, ``max_in_flight`` at once.

        ``sampling`` is :meth:`submit`'s keyword arguments (``model``,
        ``max_tokens``, ``stop``, ...); a prompt may also be a mapping with
        ``prompt_tokens`` and its own overrides. Prompts are read lazily and
        memory stays flat for any number of them. With a ``job`` name every
        request's idempotency key is derived from the job, the prompt and its
        occurrence, so a re-run after a crash is replayed by the server, not
        billed again; with a :class:`~sail_lite.Journal` the run also
        resumes (finished prompts from the file, in-flight ones re-attached).
        ``progress(Progress)`` reports done / in flight / failed, rate and
        ETA. See :func:`sail_lite.pipeline.run_map` for ``on_interrupt``,
        ``return_exceptions`` and ``retry_failed``.
        """
        from ..pipeline import _map_job

        return _map_job(
            "tokens",
            self,
            prompts,
            sampling,
            journal=journal,
            job=job,
            max_in_flight=max_in_flight,
            progress=progress,
            on_interrupt=on_interrupt,
            return_exceptions=return_exceptions,
            retry_failed=retry_failed,
            timeout=timeout,
            deadline=deadline,
        )

    def attach(
        self,
        response_id: str,
        *,
        deadline: Optional[float] = None,
        timeout: Optional[float] = None,
        extra_headers: Optional[Mapping[str, str]] = None,
    ) -> ResponseFuture[SampledTokens]:
        """A future of the :class:`SampledTokens` of a raw-token response made earlier, by its id.

        For resuming: a pipeline that recorded ``future.response_id`` picks
        the sample up again here (from any process) instead of re-sending it.
        """
        call = self._requester.call(timeout=timeout, deadline=deadline, extra_headers=extra_headers)
        return self._responses._attach(response_id, to_sampled_tokens, call)
