"""sail_lite: a synchronous, minimal-dependency client for the Sail inference API.

Importing this package imports neither the emulator (``sail_lite.emulator``)
nor Tinker: ``SailTokenCompleter`` and the checkpoint URL helpers load
``sail_lite.tinker`` on first access. ``Client`` (and with it requests), the
wire types (``Response`` and the others) and ``ResponseFuture`` load on first
access too; ``from sail_lite import Client`` works as usual.
"""

import logging as _logging
import typing as _typing

from ._version import __version__
from .errors import (
    AdapterError,
    APIConnectionError,
    APIStatusError,
    APITimeoutError,
    AuthenticationError,
    BadRequestError,
    ClientClosedError,
    ConfigurationError,
    ConflictError,
    DeadlineExceededError,
    IdempotencyError,
    InvalidRequestError,
    LoRANameError,
    LoRAValidationError,
    MalformedResponseError,
    NotFoundError,
    OverloadedError,
    PermissionDeniedError,
    RateLimitError,
    RequestTimeoutError,
    RequestTooLargeError,
    ResponseCancelledError,
    ResponseExpiredError,
    ResponseFailedError,
    ResponseTooLargeError,
    SailError,
    ServerError,
    TLSError,
    UnprocessableEntityError,
    UploadNotRewindableError,
)
from .polling import PollPolicy
from .retry import RetryPolicy

if (
    _typing.TYPE_CHECKING
):  # these load on first access (``__getattr__`` below); IDEs and type checkers see them here
    from ._future import ResponseFuture
    from .client import Client, Timeout
    from .journal import Journal, JournalError, JournalMismatchError
    from .resources.tokens import SamplingOptions, validate_sampling_options
    from .streaming import ChatCompletionChunk, MessageStreamEvent, ResponseStreamEvent, Stream
    from .tinker import (
        SailTokenCompleter,
        get_tinker_checkpoint_signed_url,
        get_tinker_checkpoint_signed_url_async,
    )
    from .types import (
        Batch,
        ChatCompletion,
        FileObject,
        LoRA,
        LoRAValidation,
        Message,
        Model,
        Response,
        SampledTokens,
        TokenCount,
        Usage,
    )
    from .webhooks import WebhookReceiver

__all__ = [
    "__version__",
    "Client",
    "Timeout",
    "RetryPolicy",
    "PollPolicy",
    "ResponseFuture",
    "WebhookReceiver",
    "Journal",
    "JournalError",
    "JournalMismatchError",
    "SamplingOptions",
    "validate_sampling_options",
    "Stream",
    "ResponseStreamEvent",
    "ChatCompletionChunk",
    "MessageStreamEvent",
    "SailTokenCompleter",
    "get_tinker_checkpoint_signed_url",
    "get_tinker_checkpoint_signed_url_async",
    "Batch",
    "ChatCompletion",
    "FileObject",
    "LoRA",
    "LoRAValidation",
    "Message",
    "Model",
    "Response",
    "SampledTokens",
    "TokenCount",
    "Usage",
    "SailError",
    "ConfigurationError",
    "InvalidRequestError",
    "LoRANameError",
    "AdapterError",
    "APIConnectionError",
    "APITimeoutError",
    "TLSError",
    "UploadNotRewindableError",
    "MalformedResponseError",
    "ResponseTooLargeError",
    "APIStatusError",
    "BadRequestError",
    "IdempotencyError",
    "AuthenticationError",
    "PermissionDeniedError",
    "NotFoundError",
    "RequestTimeoutError",
    "ConflictError",
    "RequestTooLargeError",
    "UnprocessableEntityError",
    "RateLimitError",
    "ServerError",
    "OverloadedError",
    "ResponseFailedError",
    "ResponseCancelledError",
    "ResponseExpiredError",
    "ClientClosedError",
    "DeadlineExceededError",
    "LoRAValidationError",
]

_LAZY_TINKER = (
    "SailTokenCompleter",
    "get_tinker_checkpoint_signed_url",
    "get_tinker_checkpoint_signed_url_async",
)
# Loaded on first use, so that importing sail_lite stays cheap: no requests until a Client is made (the
# emulator, ``python -m sail_lite.emulator``, never needs it), no concurrent.futures, no resources, and no
# wire types (twelve frozen dataclasses, whose generated methods are compiled when their module loads).
_LAZY = {
    "Client": ".client",
    "Timeout": ".client",
    "Batch": ".types",
    "ChatCompletion": ".types",
    "FileObject": ".types",
    "LoRA": ".types",
    "LoRAValidation": ".types",
    "Message": ".types",
    "Model": ".types",
    "Response": ".types",
    "SampledTokens": ".types",
    "TokenCount": ".types",
    "Usage": ".types",
    "ResponseFuture": "._future",
    "WebhookReceiver": ".webhooks",
    "SamplingOptions": ".resources.tokens",
    "validate_sampling_options": ".resources.tokens",
    "Stream": ".streaming",
    "ResponseStreamEvent": ".streaming",
    "ChatCompletionChunk": ".streaming",
    "MessageStreamEvent": ".streaming",
    "Journal": ".journal",
    "JournalError": ".journal",
    "JournalMismatchError": ".journal",
}

# The library stays silent unless the application configures logging (or SAIL_LOG is set).
_logging.getLogger(__name__).addHandler(_logging.NullHandler())


def __getattr__(name: str) -> object:
    if name in _LAZY_TINKER:
        from . import tinker

        return getattr(tinker, name)
    if (
        name == "types"
    ):  # `import sail_lite; sail_lite.types.Response` worked while the package imported it
        import importlib

        return importlib.import_module(".types", __name__)
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'sail_lite' has no attribute {name!r}")


def __dir__() -> list:
    return sorted(set(globals()) | set(_LAZY) | set(_LAZY_TINKER))
