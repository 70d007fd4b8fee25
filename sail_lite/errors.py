"""The exceptions sail_lite raises.

Every error is data: it carries what a caller needs to decide what to do
next (the HTTP status, the server's error ``code`` and ``type``, the
``x-request-id`` to quote to support, the background response id to resume
or cancel, how many attempts were made, how long the server asked us to
wait). All of them pickle, so they cross process boundaries intact.

::

    SailError
    ├── ConfigurationError          a missing API key, a bad base URL
    ├── InvalidRequestError         bad arguments, caught before any I/O (also ValueError)
    │   ├── LoRANameError           a LoRA name breaking the naming rules
    │   └── AdapterError            a PEFT adapter folder that fails pre-flight (.problems)
    ├── APIConnectionError          the request did not get an HTTP reply (also ConnectionError)
    │   ├── APITimeoutError         ... because a connect timed out or the reply did not arrive
    │   │                           whole within the attempt's wall-clock bound (also TimeoutError)
    │   ├── TLSError                ... because the server's certificate failed verification
    │   │                           (never retried)
    │   └── UploadNotRewindableError  a streamed upload failed and cannot be re-sent
    ├── MalformedResponseError      a 2xx reply we could not parse (truncated, HTML, wrong shape,
    │   │                           nested too deeply)
    │   └── ResponseTooLargeError   a reply body (decompressed) larger than max_response_bytes
    ├── APIStatusError              the server answered with a non-2xx status
    │   ├── BadRequestError         400
    │   │   └── IdempotencyError    400 code=idempotency_error
    │   ├── AuthenticationError     401
    │   ├── PermissionDeniedError   403 (also PermissionError)
    │   ├── NotFoundError           404 (also LookupError)
    │   ├── RequestTimeoutError     408 (also TimeoutError)
    │   ├── ConflictError           409 (a LoRA name taken; request_in_progress)
    │   ├── RequestTooLargeError    413
    │   ├── UnprocessableEntityError 422
    │   ├── RateLimitError          429
    │   └── ServerError             500 and other 5xx
    │       └── OverloadedError     503, 529 (capacity; retry later)
    ├── ResponseFailedError         a background response ended failed (.response)
    │   ├── ResponseCancelledError  ... cancelled
    │   └── ResponseExpiredError    ... expired
    ├── ClientClosedError           the client closed while a call still waited
    │                               (.response_id: the work goes on on the server)
    ├── DeadlineExceededError       a call's total deadline passed (also TimeoutError;
    │                               .response_id says what to resume or cancel)
    └── LoRAValidationError         a LoRA's validation failed on a model
                                    (.result_code, .result_message)
"""

from __future__ import annotations

from typing import Any, Dict, Mapping, Optional, Sequence, Tuple, Type

__all__ = [
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
    "status_error",
]


def rebuild_error(cls: Type[SailError], message: str, state: Dict[str, Any]) -> SailError:
    """An error of ``cls`` with ``message`` and attributes ``state``, without calling ``__init__``.

    The one way an error is made again from its parts: unpickling, the journal's stored failures and
    the completer's re-raised copies all come through here.
    """
    error = cls.__new__(cls)
    Exception.__init__(error, message)
    error.__dict__.update(state)
    return error


class SailError(Exception):
    """Base of every sail_lite error.

    Attributes are ``None`` when they do not apply: ``status`` (HTTP status),
    ``code``/``type``/``param`` (from the server's error body),
    ``request_id`` (the reply's ``x-request-id``), ``response_id`` (the
    background response concerned), ``attempts`` (HTTP attempts made by the
    request loop), ``retry_after`` (seconds the server asked us to wait).
    """

    def __init__(
        self,
        message: str,
        *,
        status: Optional[int] = None,
        code: Optional[str] = None,
        type: Optional[str] = None,
        param: Optional[str] = None,
        request_id: Optional[str] = None,
        response_id: Optional[str] = None,
        attempts: Optional[int] = None,
        retry_after: Optional[float] = None,
        idempotency_key: Optional[str] = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.code = code
        self.type = type
        self.param = param
        self.request_id = request_id
        self.response_id = response_id
        self.attempts = attempts
        self.retry_after = retry_after
        self.idempotency_key = idempotency_key

    @property
    def status_code(self) -> Optional[int]:
        return self.status

    def __reduce__(self) -> Tuple[Any, ...]:
        state = dict(self.__dict__)
        return (rebuild_error, (type(self), self.message, state))

    def __str__(self) -> str:
        details = []
        for label, value in (
            ("status", self.status),
            ("code", self.code),
            ("response", self.response_id),
            ("request", self.request_id),
            ("attempts", self.attempts),
            ("retry after", self.retry_after),
            ("idempotency key", self.idempotency_key),
        ):
            if value is not None:
                details.append(f"{label} {value}")
        if not details:
            return self.message
        return "{} ({})".format(self.message, ", ".join(details))


class ConfigurationError(SailError):
    """The client cannot be configured as asked (e.g. no API key anywhere)."""


class InvalidRequestError(SailError, ValueError):
    """An argument is wrong; raised before anything is sent."""


class LoRANameError(InvalidRequestError):
    """A LoRA name breaks the naming rules (2-64 chars of [a-z0-9-], alphanumeric ends)."""


class AdapterError(InvalidRequestError):
    """A PEFT adapter fails the local pre-flight check.

    ``problems`` lists every problem found (each has ``code`` and ``message``),
    so a user can fix them all at once.
    """

    def __init__(self, message: str, *, problems: Sequence[Any] = (), **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.problems = tuple(problems)
        if self.code is None and self.problems:
            self.code = getattr(self.problems[0], "code", None)


class APIConnectionError(SailError, ConnectionError):
    """No complete HTTP reply was received (connection refused, reset, DNS, a cut-off body...).

    ``request_sent`` is ``False`` when the failure came before the request
    could reach the server (e.g. the connection was refused), so even a
    write without an idempotency key may be sent again.
    """

    def __init__(self, message: str, *, request_sent: bool = True, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.request_sent = request_sent


class APITimeoutError(APIConnectionError, TimeoutError):
    """A connect timed out, or the whole reply did not arrive within the attempt's time bound."""


class TLSError(APIConnectionError):
    """The server's TLS certificate failed verification (wrong CA, name, expiry).

    Not retried: fix ``verify=`` (a CA bundle path), ``REQUESTS_CA_BUNDLE``
    or ``SSL_CERT_FILE``, or the server's certificate.
    """


class UploadNotRewindableError(APIConnectionError):
    """A streamed upload failed mid-way and its source cannot be rewound.

    Nothing was retried: re-open the file (or pass a path) and upload again.
    """


class MalformedResponseError(SailError):
    """The server replied 2xx but the body is not the JSON we expect."""


class ResponseTooLargeError(MalformedResponseError):
    """A reply body, counted after decompression, passed the client's ``max_response_bytes``."""


class APIStatusError(SailError):
    """The server answered with a non-2xx HTTP status."""


class BadRequestError(APIStatusError, ValueError):
    """400: the request is invalid; fix it, retrying will not help."""


class IdempotencyError(BadRequestError):
    """400 idempotency_error: the key was already used with a different body."""


class AuthenticationError(APIStatusError):
    """401: the API key is missing or wrong."""


class PermissionDeniedError(APIStatusError, PermissionError):
    """403: the API key may not do this."""


class NotFoundError(APIStatusError, LookupError):
    """404: no such object in your organization."""


class RequestTimeoutError(APIStatusError, TimeoutError):
    """408: the server timed out waiting for a synchronous completion."""


class ConflictError(APIStatusError):
    """409: a name is taken, or an idempotent replay is still running."""


class RequestTooLargeError(APIStatusError):
    """413: the request body is larger than the server accepts."""


class UnprocessableEntityError(APIStatusError):
    """422: the request is well-formed but cannot be processed."""


class RateLimitError(APIStatusError):
    """429: too many requests; ``retry_after`` says when to come back."""


class ServerError(APIStatusError):
    """5xx: the server failed; usually transient."""


class OverloadedError(ServerError):
    """503/529: no capacity right now; ``retry_after`` says when to come back."""


class ResponseFailedError(SailError):
    """A background response ended without a result.

    ``response`` is the terminal :class:`sail_lite.types.Response`.
    """

    def __init__(self, message: str, *, response: Any = None, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.response = response


class ResponseCancelledError(ResponseFailedError):
    """The background response was cancelled."""


class ResponseExpiredError(ResponseFailedError):
    """The background response expired before it ran."""


class ClientClosedError(SailError):
    """The client was closed (or used after close) while a call still waited.

    For a background response the work goes on on the server:
    ``response_id`` lets a new client ``wait`` on it or ``cancel`` it.
    """


class DeadlineExceededError(SailError, TimeoutError):
    """A call's total deadline passed: its attempts, back-off sleeps and polls took too long.

    For a background response the work is still on the server:
    ``response_id`` lets you ``wait`` on it again or ``cancel`` it.
    """


class LoRAValidationError(SailError):
    """A LoRA's latest validation on a model failed.

    ``result_code`` and ``result_message`` are the server's reasons; ``lora``
    is the :class:`sail_lite.types.LoRA` as last seen.
    """

    def __init__(
        self,
        message: str,
        *,
        lora: Any = None,
        model: Optional[str] = None,
        result_code: Optional[str] = None,
        result_message: Optional[str] = None,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("code", result_code)
        super().__init__(message, **kwargs)
        self.lora = lora
        self.model = model
        self.result_code = result_code
        self.result_message = result_message


def _status_class(status: int, code: Optional[str]) -> Type[APIStatusError]:
    if status == 400:
        return IdempotencyError if code == "idempotency_error" else BadRequestError
    if status in (503, 529):
        return OverloadedError
    exact = {
        401: AuthenticationError,
        403: PermissionDeniedError,
        404: NotFoundError,
        408: RequestTimeoutError,
        409: ConflictError,
        413: RequestTooLargeError,
        422: UnprocessableEntityError,
        429: RateLimitError,
    }.get(status)
    if exact is not None:
        return exact
    return ServerError if status >= 500 else APIStatusError


def status_error(
    status: int,
    payload: Any,
    *,
    request_id: Optional[str] = None,
    retry_after: Optional[float] = None,
    attempts: Optional[int] = None,
    response_id: Optional[str] = None,
) -> APIStatusError:
    """Build the typed error for a non-2xx reply.

    ``payload`` is the decoded JSON body, or anything else (``None``, text)
    when the body was not the wire.md error shape, e.g. a proxy's HTML page.
    """
    error: Mapping[str, Any] = {}
    if isinstance(payload, Mapping) and isinstance(payload.get("error"), Mapping):
        error = payload["error"]
    message = error.get("message")
    if not isinstance(message, str) or not message:
        message = f"HTTP {status} from the Sail API"
        if isinstance(payload, str) and payload.strip():
            message += f" (non-JSON body: {payload.strip()[:120]!r})"

    def text(key: str) -> Optional[str]:
        value = error.get(key)
        return value if isinstance(value, str) else None

    code = text("code")
    return _status_class(status, code)(
        message,
        status=status,
        code=code,
        type=text("type"),
        param=text("param"),
        request_id=request_id,
        response_id=response_id,
        attempts=attempts,
        retry_after=retry_after,
    )
