"""sail_lite: a synchronous, minimal-dependency client for the Sail inference API.

Importing this package imports neither the emulator (``sail_lite.emulator``)
nor Tinker: ``SailTokenCompleter`` and the checkpoint URL helpers load
``sail_lite.tinker`` on first access.
"""
import logging
from typing import Any

from ._future import ResponseFuture
from ._version import __version__
from .client import Client, Timeout
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
    SailError,
    ServerError,
    UnprocessableEntityError,
    UploadNotRewindableError,
)
from .journal import Journal, JournalError, JournalMismatchError
from .polling import PollPolicy
from .resources.tokens import SamplingOptions, validate_sampling_options
from .retry import RetryPolicy
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
    Usage,
)

__all__ = [
    "__version__",
    "Client",
    "Timeout",
    "RetryPolicy",
    "PollPolicy",
    "ResponseFuture",
    "Journal",
    "JournalError",
    "JournalMismatchError",
    "SamplingOptions",
    "validate_sampling_options",
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
    "Usage",
    "SailError",
    "ConfigurationError",
    "InvalidRequestError",
    "LoRANameError",
    "AdapterError",
    "APIConnectionError",
    "APITimeoutError",
    "UploadNotRewindableError",
    "MalformedResponseError",
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

_LAZY_TINKER = ("SailTokenCompleter", "get_tinker_checkpoint_signed_url", "get_tinker_checkpoint_signed_url_async")

# The library stays silent unless the application configures logging (or SAIL_LOG is set).
logging.getLogger(__name__).addHandler(logging.NullHandler())


def __getattr__(name: str) -> Any:
    if name in _LAZY_TINKER:
        from . import tinker

        return getattr(tinker, name)
    raise AttributeError("module 'sail_lite' has no attribute {!r}".format(name))
