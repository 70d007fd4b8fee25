"""Tinker external weights (tinker 0.38) to a Sail LoRA, streamed: no temporary file, flat memory.

tinker 0.36 removed ``RestClient.get_checkpoint_archive_url_from_tinker_path``,
so a sampler checkpoint can no longer be handed to Sail as a signed archive
URL. tinker 0.38 exports a PEFT-format checkpoint instead::

    saved = training_client.save_weights_external("step-40", ttl_seconds=7 * 86400).result()
    # saved.path == "tinker://<run>/external_weights/step-40"
    rest_client.get_external_weights_urls(saved.path).result()
    # ExternalWeightsUrlsResponse(urls={"adapter_config.json": <signed URL>, ...}, expires=<datetime>)

:func:`upload_external_weights` turns that into a Sail LoRA through the
documented LoRA route (wire.md: ``POST /files`` twice, then ``POST /loras``):

1. it resolves the signed URLs (from a tinker path and a service client, a
   ``save_weights_external`` result, an ``ExternalWeightsUrlsResponse``, or
   an ``APIFuture`` of any of them: ``.result()`` in sync code, ``await`` in
   :func:`upload_external_weights_async`);
2. it runs the local pre-flight (:mod:`sail_lite.adapters`) on the config and
   on the safetensors *header*, read with HTTP ``Range`` requests (or the
   head of a plain GET when the server ignores ``Range``), so a checkpoint
   whose base model, rank or tensors the LoRA route would refuse fails before
   a byte is uploaded;
3. it streams each signed URL straight into ``client.files.create`` (the
   download is read in 1 MiB chunks as the upload sends them; a retried
   upload re-opens the URL), hashing the weights as they pass;
4. it creates the LoRA and, with ``wait``, waits for its validations.

Names and lifetimes
-------------------
The LoRA name is derived from the tinker path
(:func:`lora_name_for_tinker_path`: ``tinker-<run>-<name>-<hash of the
path>``, valid per the LoRA name rules), so each saved step gets its own
LoRA and publishing the same step twice is a no-op. The weights' SHA-256 is
stored in the LoRA's description (with the tinker path and the two file
ids). When a LoRA of that name exists, the weights are hashed again from the
URL (a download, no upload): the same digest reuses the LoRA; another digest
(the step was re-saved with other weights) gets a name with the digest's
first 8 hex digits appended.

Sail's LoRA and file APIs (wire.md) have no ``DELETE`` route, and neither has
the emulator, so sail_lite cannot delete a LoRA or an uploaded file.
:func:`superseded_loras` lists, per training run, the LoRAs this module
published that newer ones replace, with their file ids, so they can be
removed where Sail allows it (its console or support); on the Tinker side,
pass ``ttl_seconds`` to ``save_weights_external`` (or
``delete_tinker_checkpoint=True`` here) so exported checkpoints do not
accumulate.

Signed URLs are credentials: they are never logged, and errors and reprs
show them without their query string.
"""

from __future__ import annotations

import asyncio
import datetime as _dt
import functools
import hashlib
import http.client
import io
import json
import logging
import os
import re
import struct
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import (
    TYPE_CHECKING,
    Any,
    Callable,
    Dict,
    Iterator,
    List,
    Mapping,
    Optional,
    Sequence,
    Tuple,
)

from ._checks import seconds
from ._redact import redact_url
from ._safetensors_stream import scan_safetensors_header
from ._transport import open_download
from .adapters import (
    CONFIG_NAME,
    MAX_HEADER_BYTES,
    WEIGHTS_NAME,
    AdapterProblem,
    AdapterReport,
    check_adapter_config,
)
from .errors import (
    AdapterError,
    APIConnectionError,
    ConfigurationError,
    ConflictError,
    DeadlineExceededError,
    InvalidRequestError,
    NotFoundError,
    PermissionDeniedError,
    status_error,
)
from .resources.loras import check_lora_name
from .types import LoRA

if TYPE_CHECKING:  # pragma: no cover
    from .client import Client

__all__ = [
    "ExternalWeights",
    "PublishedLoRA",
    "resolve_external_weights",
    "resolve_external_weights_async",
    "upload_external_weights",
    "upload_external_weights_async",
    "lora_name_for_tinker_path",
    "parse_tinker_path",
    "run_loras",
    "superseded_loras",
]

_logger = logging.getLogger(__name__)

_URLS_METHOD = "get_external_weights_urls"
_DELETE_METHOD = "delete_checkpoint_from_tinker_path"
_TINKER_PATH = re.compile(r"tinker://(?P<run>[^/]+)/(?P<kind>[^/]+)/(?P<name>.+)\Z")
_MARKER = "sail-lite tinker bridge"
_MARKER_FIELDS = re.compile(r"(\w+)=(\S+)")
#: An adapter_config.json is a few hundred bytes; a larger "config" is not one.
_MAX_CONFIG_BYTES = 1 << 20
#: The first ranged read: enough for the header of an adapter with a few hundred tensors.
_HEAD_BYTES = 1 << 16
_CHUNK = 1 << 20
Progress = Callable[[int, int], None]
#: What storage servers say about an expired signed URL: the emulator's JSON ``error.code``, GCS's XML
#: ``<Code>ExpiredToken</Code>``. S3 says only AccessDenied: ``expires`` (from tinker) decides then.
_EXPIRED_CODES = frozenset(
    {"url_expired", "ExpiredToken", "signed_url_expired", "expired_signature"}
)
_XML_CODE = re.compile(rb"<Code>([A-Za-z0-9_.-]{1,64})</Code>")


def _storage_error_code(body: bytes) -> Optional[str]:
    """The error code of a storage server's error body (JSON ``error.code`` or XML ``<Code>``), if any."""
    try:
        payload = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        match = _XML_CODE.search(body)
        return match.group(1).decode("ascii") if match else None
    error = payload.get("error") if isinstance(payload, dict) else None
    code = error.get("code") if isinstance(error, dict) else None
    return code if isinstance(code, str) else None


# -- what tinker returns ----------------------------------------------------------------------


@dataclass(frozen=True)
class ExternalWeights:
    """The signed URLs of one external-weights checkpoint (tinker's ``ExternalWeightsUrlsResponse``).

    ``urls`` maps each file's path (relative to the checkpoint root) to its
    signed URL; ``expires`` is when they stop working (timezone-aware, or
    ``None`` when unknown); ``tinker_path`` is where they came from, when
    known. The repr never shows a URL's query string.
    """

    urls: Mapping[str, str] = field(repr=False)
    expires: Optional[_dt.datetime] = None
    tinker_path: Optional[str] = None

    def __repr__(self) -> str:
        return f"ExternalWeights(files={sorted(self.urls)}, expires={self.expires.isoformat() if self.expires else None}, tinker_path={self.tinker_path!r})"

    def url(self, file_name: str) -> Tuple[str, str]:
        """``(key, url)`` of the file whose base name is ``file_name``; :class:`AdapterError` when absent."""
        matches = [key for key in self.urls if key.rsplit("/", 1)[-1] == file_name]
        if not matches:
            encrypted = [key for key in self.urls if key.rsplit("/", 1)[-1] == file_name + ".age"]
            if encrypted:
                raise ConfigurationError(
                    f"the checkpoint's {file_name} is age-encrypted ({encrypted[0]}): Sail needs the plain PEFT files; save it with "
                    "save_weights_external() without age_encryption_recipients"
                )
            raise AdapterError(
                "the external-weights checkpoint has no {} (it has {}): is it a PEFT LoRA export?".format(
                    file_name, ", ".join(sorted(self.urls)) or "no files"
                ),
                problems=[
                    AdapterProblem("missing_file", f"{file_name} is missing from the checkpoint")
                ],
            )
        if len(matches) > 1:
            raise AdapterError(
                "the checkpoint holds {} {} files ({}): expected one".format(
                    len(matches), file_name, ", ".join(sorted(matches))
                ),
                problems=[AdapterProblem("invalid_checkpoint", f"more than one {file_name}")],
            )
        return matches[0], self.urls[matches[0]]


@dataclass(frozen=True)
class PublishedLoRA:
    """A LoRA published from Tinker external weights by this module.

    ``reused`` is True when an existing LoRA with the same weights digest was
    returned instead of uploading again. ``config_file_id`` and
    ``weights_file_id`` are the uploaded files (``None`` when the description
    of a reused LoRA does not name them).
    """

    lora: LoRA
    tinker_path: Optional[str]
    sha256: str
    reused: bool = False
    config_file_id: Optional[str] = None
    weights_file_id: Optional[str] = None

    @property
    def name(self) -> str:
        return self.lora.name


def parse_tinker_path(tinker_path: Any) -> Tuple[str, str, str]:
    """``(run, kind, name)`` of ``tinker://<run>/<kind>/<name>``; :class:`InvalidRequestError` otherwise."""
    match = _TINKER_PATH.match(tinker_path) if isinstance(tinker_path, str) else None
    if match is None:
        raise InvalidRequestError(
            "expected a tinker path like tinker://<run>/external_weights/<name> (from save_weights_external), "
            f"got {tinker_path!r}"
        )
    return match.group("run"), match.group("kind"), match.group("name")


def lora_name_for_tinker_path(tinker_path: str, *, prefix: str = "tinker") -> str:
    """A LoRA name for one checkpoint: ``<prefix>-<run>-<name>-<8 hex of sha256(path)>``, at most 64 chars.

    Lowercase letters, digits and dashes only (the LoRA name rules); the
    hash keeps two paths apart even when their readable parts collide after
    lowercasing or truncation. The same path always gives the same name.
    """
    run, _kind, name = parse_tinker_path(tinker_path)

    def slug(text: str, limit: int) -> str:
        return re.sub(r"[^a-z0-9]+", "-", text.lower())[:limit].strip("-")

    digest = hashlib.sha256(tinker_path.encode("utf-8")).hexdigest()[:8]
    parts = [slug(prefix, 12), slug(run, 16), slug(name, 24), digest]
    return check_lora_name("-".join(part for part in parts if part))


# -- resolving URLs ---------------------------------------------------------------------------


def _as_weights(value: Any, tinker_path: Optional[str]) -> Optional[ExternalWeights]:
    """An ``ExternalWeights`` from tinker's response object or a dict with ``urls``; else None."""
    urls = value.get("urls") if isinstance(value, Mapping) else getattr(value, "urls", None)
    if urls is None:
        return None
    if (
        not isinstance(urls, Mapping)
        or not urls
        or not all(
            isinstance(k, str) and isinstance(v, str) and v.startswith(("http://", "https://"))
            for k, v in urls.items()
        )
    ):
        raise InvalidRequestError(
            f"the external-weights URLs must map file paths to http(s) URLs, got {len(urls) if isinstance(urls, Mapping) else type(urls).__name__} entries"
        )
    expires = (
        value.get("expires") if isinstance(value, Mapping) else getattr(value, "expires", None)
    )
    if (
        tinker_path is None
    ):  # the emulator's publish_external_weights() says where the files came from
        given = (
            value.get("tinker_path")
            if isinstance(value, Mapping)
            else getattr(value, "tinker_path", None)
        )
        tinker_path = given if isinstance(given, str) else None
    return ExternalWeights(
        urls=dict(urls), expires=_parse_expires(expires), tinker_path=tinker_path
    )


def _parse_expires(value: Any) -> Optional[_dt.datetime]:
    if value is None:
        return None
    if isinstance(value, str):
        try:
            value = _dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise InvalidRequestError(f"expires must be an ISO 8601 time, got {value!r}") from None
    if not isinstance(value, _dt.datetime):
        raise InvalidRequestError(
            f"expires must be a datetime or an ISO 8601 string, got {type(value).__name__}"
        )
    return value if value.tzinfo is not None else value.replace(tzinfo=_dt.timezone.utc)


def _path_of(value: Any) -> Optional[str]:
    """A tinker path from a string or a ``save_weights_external`` result (``.path``)."""
    if isinstance(value, str):
        return value
    path = value.get("path") if isinstance(value, Mapping) else getattr(value, "path", None)
    return path if isinstance(path, str) else None


def _is_future(value: Any) -> bool:
    return isinstance(value, Future) or (
        callable(getattr(value, "result", None))
        and not isinstance(value, Mapping)
        and getattr(value, "urls", None) is None
        and _path_of(value) is None
    )


def _rest_client(service_client: Any) -> Any:
    if service_client is None:
        raise InvalidRequestError(
            "a tinker path needs service_client= (a tinker.ServiceClient) to get its signed URLs; or pass the "
            "result of rest_client.get_external_weights_urls(path) instead of the path"
        )
    create = getattr(service_client, "create_rest_client", None)
    if callable(create):
        return create()
    if callable(getattr(service_client, _URLS_METHOD, None)):
        return service_client  # already a RestClient
    raise InvalidRequestError(
        f"service_client must be a tinker.ServiceClient or RestClient, got {type(service_client).__name__}"
    )


def _urls_method(rest: Any) -> Callable[[str], Any]:
    method = getattr(rest, _URLS_METHOD, None)
    if not callable(method):
        from .tinker import tinker_version

        raise ConfigurationError(
            f"tinker {tinker_version()} has no RestClient.{_URLS_METHOD}() (added in tinker 0.38): upgrade tinker, or for a sampler checkpoint "
            "with tinker < 0.36 use get_tinker_checkpoint_signed_url() and the completer's tinker_lora_signed_url"
        )
    return method  # type: ignore[no-any-return]


def _check_external(path: str) -> str:
    _run, kind, _name = parse_tinker_path(path)
    if kind != "external_weights":
        raise InvalidRequestError(
            f"{path} is a {kind} checkpoint, not external weights: save one with training_client.save_weights_external("
            "name) (tinker 0.38+), or with tinker < 0.36 pass a sampler checkpoint's archive URL from "
            "get_tinker_checkpoint_signed_url() to the completer"
        )
    return path


def resolve_external_weights(
    source: Any, *, service_client: Any = None, tinker_path: Optional[str] = None
) -> ExternalWeights:
    """The signed URLs of ``source``, blocking on any ``APIFuture`` with ``.result()``.

    ``source`` is a ``tinker://<run>/external_weights/<name>`` path (needs
    ``service_client``), a ``save_weights_external`` result, tinker's
    ``ExternalWeightsUrlsResponse`` (or a dict with ``urls`` and
    ``expires``, e.g. what the emulator publishes), an
    :class:`ExternalWeights`, or a future of any of them. ``tinker_path``
    names the checkpoint when ``source`` is URLs only.
    """
    while _is_future(source):
        source = source.result()
    return _resolve_plain(source, service_client, tinker_path, lambda future: future.result())


async def resolve_external_weights_async(
    source: Any, *, service_client: Any = None, tinker_path: Optional[str] = None
) -> ExternalWeights:
    """:func:`resolve_external_weights` for asyncio code: futures are awaited, not blocked on."""
    while _is_future(source):
        source = await _awaited(source)
    if isinstance(source, ExternalWeights) or _as_weights(source, tinker_path) is not None:
        return _resolve_plain(source, service_client, tinker_path, None)
    path = _path_of(source)
    if path is None:
        raise InvalidRequestError(_SOURCE_HELP.format(type(source).__name__))
    reply = await _awaited(_urls_method(_rest_client(service_client))(_check_external(path)))
    return _resolve_plain(reply, service_client, path, None)


_SOURCE_HELP = (
    "source must be a tinker://<run>/external_weights/<name> path, a save_weights_external() result, "
    "the result of get_external_weights_urls(), or a future of one; got {}"
)


def _resolve_plain(
    source: Any,
    service_client: Any,
    tinker_path: Optional[str],
    resolve: Optional[Callable[[Any], Any]],
) -> ExternalWeights:
    if isinstance(source, ExternalWeights):
        return (
            source
            if tinker_path is None
            else ExternalWeights(source.urls, source.expires, tinker_path)
        )
    weights = _as_weights(source, tinker_path)
    if weights is not None:
        return weights
    path = _path_of(source)
    if path is None or resolve is None:
        raise InvalidRequestError(_SOURCE_HELP.format(type(source).__name__))
    reply = _urls_method(_rest_client(service_client))(_check_external(path))
    while _is_future(reply):
        reply = resolve(reply)
    weights = _as_weights(reply, path)
    if weights is None:
        raise ConfigurationError(
            f"tinker's get_external_weights_urls() returned a {type(reply).__name__} without urls"
        )
    return weights


async def _awaited(value: Any) -> Any:
    if hasattr(value, "__await__"):
        return await value
    if isinstance(value, Future):
        return await asyncio.wrap_future(value)
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(None, value.result)


# -- reading signed URLs ----------------------------------------------------------------------


class _Downloads:
    """GETs of signed URLs through the client's own requests Session.

    So the client's proxies, ``verify=`` and CA bundle apply to storage as to
    every call. Sail's API key never goes to storage (these GETs carry no
    ``Authorization``), redirects follow :func:`open_download`'s rules (the
    same host, over http(s), never https -> http, a few hops), and no message
    shows a query string. ``deadline_at`` (monotonic) bounds every open and
    every read of a body; ``timeout`` bounds connecting and each read.
    """

    def __init__(
        self,
        session: Any,
        timeout: float,
        clock: Callable[[], _dt.datetime],
        deadline_at: Optional[float] = None,
    ) -> None:
        self._session = session
        self.timeout = timeout
        self.clock = clock
        self.deadline_at = deadline_at
        self.expires: Optional[_dt.datetime] = None  # of the URLs being read, when tinker said

    def open(self, url: str, label: str, *, first: int = 0, last: Optional[int] = None) -> Any:
        """The open :class:`Download` (``status``, ``headers``, ``read(n)``, ``close()``) of a 200 or 206 GET."""
        headers = {}
        if first or last is not None:
            headers["Range"] = "bytes={}-{}".format(first, "" if last is None else last)
        remaining = None if self.deadline_at is None else self.deadline_at - time.monotonic()
        if remaining is not None and remaining <= 0:
            raise DeadlineExceededError(f"the deadline passed before downloading {label}")
        response = open_download(
            self._session,
            url,
            label=label,
            timeout=self.timeout,
            deadline=remaining,
            headers=headers,
        )
        if response.status not in (200, 206):
            try:
                body = response.read(4096)
            except APIConnectionError:
                body = b""
            response.close()
            raise self._status_error(response.status, body, label, url)
        return response

    def _status_error(self, status: int, body: bytes, label: str, url: str) -> Exception:
        code = _storage_error_code(body)
        expired = code in _EXPIRED_CODES or (
            status in (400, 401, 403) and self.expires is not None and self.clock() >= self.expires
        )
        if expired:
            return PermissionDeniedError(
                f"the signed URL of {label} ({redact_url(url)}) expired: get fresh ones with rest_client.get_external_weights_urls(), "
                "or pass the tinker path and service_client= so sail_lite re-signs them",
                status=status,
                code="url_expired",
            )
        return status_error(
            status,
            {
                "error": {
                    "message": "downloading {} from {} failed: HTTP {}{}".format(
                        label, redact_url(url), status, f" ({code})" if code else ""
                    ),
                    "code": code,
                }
            },
        )

    @staticmethod
    def read_exactly(response: Any, count: int) -> bytes:
        parts = []
        remaining = count
        while remaining > 0:
            chunk = response.read(min(remaining, _CHUNK))
            if not chunk:
                break
            parts.append(chunk)
            remaining -= len(chunk)
        return b"".join(parts)

    def close(self) -> None:
        pass  # the Session is the client's: it closes with the client


def _total_size(response: Any, label: str) -> int:
    content_range = response.headers.get("Content-Range", "") or ""
    if response.status == 206 and "/" in content_range:
        total = content_range.rsplit("/", 1)[1].strip()
    else:
        total = (response.headers.get("Content-Length", "") or "").strip()
    if not total.isdigit():
        raise APIConnectionError(
            f"the storage server did not say how large {label} is (no Content-Length): it cannot "
            "be streamed with a known length"
        )
    return int(total)


def _read_weights_header(
    downloads: _Downloads, url: str, config_bytes: bytes, models: List[str], *, preflight: bool
) -> int:
    """The weights file's size; with ``preflight``, its header streamed through the pre-flight.

    The header is read with ranged GETs (or from the head of a plain GET when
    the server ignores ``Range``), a chunk at a time: memory stays bounded
    whatever the header's size (up to ``MAX_HEADER_BYTES``).
    """
    label = WEIGHTS_NAME
    response = downloads.open(url, label, first=0, last=_HEAD_BYTES - 1)
    try:
        size = _total_size(response, label)
        head = downloads.read_exactly(response, min(_HEAD_BYTES, size))
        if preflight:
            data = _header_bytes(downloads, url, response, head, size)
            try:
                _preflight(config_bytes, data, size, models)
            finally:
                data.close()
        return size
    finally:
        response.close()


def _header_bytes(
    downloads: _Downloads, url: str, response: Any, head: bytes, size: int
) -> Iterator[bytes]:
    """The file's bytes from offset 0, as far as its header goes: ``head``, then the rest in chunks."""
    yield head
    offset = len(head)
    if len(head) < 8:
        return
    (length,) = struct.unpack("<Q", head[:8])
    need = min(8 + min(length, MAX_HEADER_BYTES + 1), size)
    if offset >= need:
        return
    rest = response
    if response.status == 206:
        rest = downloads.open(url, WEIGHTS_NAME, first=offset, last=need - 1)
    try:
        while offset < need:
            chunk = downloads.read_exactly(rest, min(_CHUNK, need - offset))
            if not chunk:
                return
            offset += len(chunk)
            yield chunk
    finally:
        if rest is not response:
            rest.close()


class _SignedURLFile:
    """A signed URL as a seekable binary file of known size, for ``client.files.create``.

    Reading streams the URL (1 MiB at a time, never the whole file); seeking
    back to the start (a retried upload) re-opens it. Every byte read on a
    pass from the start feeds ``sha256``. Only ``seek(0)`` and
    ``seek(0, SEEK_END)`` are supported: what a streamed multipart upload needs.
    """

    def __init__(self, downloads: _Downloads, url: str, *, name: str, size: int) -> None:
        self._downloads, self._url, self.name, self._size = downloads, url, name, size
        self._response: Any = None
        self._pos = 0
        self.sha256 = hashlib.sha256()

    def __repr__(self) -> str:
        return f"_SignedURLFile({self.name!r}, {self._size} bytes, {redact_url(self._url)})"

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        target = self._size + offset if whence == os.SEEK_END else offset
        if target not in (0, self._size):
            raise io.UnsupportedOperation("a signed URL stream seeks to its start or its end only")
        if target == 0:
            self._close()
            self.sha256 = hashlib.sha256()
        self._pos = target
        return target

    def read(self, count: int = -1) -> bytes:
        if self._pos >= self._size:
            return b""
        if self._response is None:
            self._response = self._downloads.open(self._url, self.name)
            if _total_size(self._response, self.name) != self._size:
                raise OSError(f"{self.name} changed size since its header was read")
        want = (
            self._size - self._pos
            if count is None or count < 0
            else min(count, self._size - self._pos)
        )
        try:
            chunk = self._response.read(min(want, _CHUNK))
        except (
            OSError,
            http.client.HTTPException,
        ) as exc:  # an OSError lets the upload retry (and re-open)
            raise OSError(
                f"reading {self.name} from {redact_url(self._url)} failed: {type(exc).__name__}"
            ) from None
        self._pos += len(chunk)
        self.sha256.update(chunk)
        return chunk

    def hash_all(self) -> str:
        """The SHA-256 of the whole file, read from the URL (nothing uploaded)."""
        self.seek(0)
        while self.read(_CHUNK):
            pass
        if self._pos != self._size:
            raise OSError(f"{self.name} ended after {self._pos} of {self._size} bytes")
        digest = self.sha256.hexdigest()
        self.seek(0)  # ready to be uploaded from the start
        return digest

    def _close(self) -> None:
        if self._response is not None:
            self._response.close()
            self._response = None

    def close(self) -> None:
        self._close()


class _NamedBytes(io.BytesIO):
    """Bytes with a file name, for the multipart ``filename``."""

    def __init__(self, data: bytes, name: str) -> None:
        super().__init__(data)
        self.name = name


# -- the bridge -------------------------------------------------------------------------------


def _marker(
    sha256: str, tinker_path: Optional[str], config_file_id: str, weights_file_id: str
) -> str:
    fields = ["sha256=" + sha256, "config=" + config_file_id, "weights=" + weights_file_id]
    if tinker_path:
        fields.append("path=" + tinker_path)
    return "[{}: {}]".format(_MARKER, " ".join(fields))


def _marker_fields(lora: LoRA) -> Dict[str, str]:
    """The fields of this module's marker in a LoRA description ({} when it has none)."""
    description = lora.description or ""
    start = description.rfind("[" + _MARKER + ":")
    if start < 0:
        return {}
    end = description.find("]", start)
    return dict(_MARKER_FIELDS.findall(description[start : end if end >= 0 else None]))


def upload_external_weights(
    client: Client,
    source: Any,
    *,
    supported_models: Sequence[str],
    service_client: Any = None,
    tinker_path: Optional[str] = None,
    name: Optional[str] = None,
    display_name: Optional[str] = None,
    description: Optional[str] = None,
    wait: bool = True,
    deadline: Optional[float] = None,
    preflight: bool = True,
    progress: Optional[Progress] = None,
    download_timeout: float = 60.0,
    delete_tinker_checkpoint: bool = False,
    now: Optional[Callable[[], _dt.datetime]] = None,
) -> PublishedLoRA:
    """Publish a Tinker external-weights checkpoint as a Sail LoRA; block until done.

    ``source`` is anything :func:`resolve_external_weights` takes; with a
    tinker path (or a ``save_weights_external`` result) and
    ``service_client``, URLs that expired (or would within a minute) are
    re-signed once. ``name`` defaults to :func:`lora_name_for_tinker_path`
    (pass one when ``source`` is URLs without a tinker path). ``preflight``
    checks the config and the safetensors header for ``supported_models``
    first (:class:`AdapterError` lists every problem). ``progress(done,
    total)`` follows the bytes of both files. With ``wait``, blocks until
    every model's validation is usable (:class:`LoRAValidationError` when
    one fails); ``deadline`` (seconds) bounds the uploads and the wait. ``delete_tinker_checkpoint``
    deletes the external-weights checkpoint on Tinker once the LoRA exists.

    Raises :class:`PermissionDeniedError` (``code="url_expired"``) for
    expired URLs that cannot be re-signed, :class:`ConflictError` when the
    name is taken by a LoRA with other weights under both the derived name
    and its digest-suffixed variant.
    """
    clock = now or (lambda: _dt.datetime.now(_dt.timezone.utc))
    deadline_at = None if deadline is None else time.monotonic() + seconds("deadline", deadline)
    weights = _fresh_weights(
        resolve_external_weights(source, service_client=service_client, tinker_path=tinker_path),
        service_client,
        clock,
    )
    models = _model_list(supported_models)
    name = _lora_name(name, weights)
    downloads = _Downloads(
        client.session, seconds("download_timeout", download_timeout), clock, deadline_at
    )
    publish = functools.partial(
        _publish,
        client,
        downloads=downloads,
        models=models,
        name=name,
        display_name=display_name,
        description=description,
        wait=wait,
        deadline_at=deadline_at,
        preflight=preflight,
        progress=progress,
        delete_tinker_checkpoint=delete_tinker_checkpoint,
        service_client=service_client,
    )
    try:
        return _resigned_once(publish, weights, service_client)
    finally:
        downloads.close()


def _resigned_once(
    publish: Callable[[ExternalWeights], PublishedLoRA],
    weights: ExternalWeights,
    service_client: Any,
) -> PublishedLoRA:
    """``publish(weights)``; if its URLs expire mid-way and can be re-signed, once more, re-signed."""
    try:
        return publish(weights)
    except PermissionDeniedError as exc:
        if exc.code != "url_expired" or weights.tinker_path is None or service_client is None:
            raise
        _logger.info("the signed URLs of %s expired mid-way; re-signing once", weights.tinker_path)
        return publish(_resign(weights, service_client))


def _fresh_weights(
    weights: ExternalWeights, service_client: Any, clock: Callable[[], _dt.datetime]
) -> ExternalWeights:
    """``weights`` re-signed when its URLs expired (or would within a minute and can be re-signed)."""
    if weights.expires is None:
        return weights
    can_resign = weights.tinker_path is not None and service_client is not None
    soon = clock() + _dt.timedelta(seconds=60)
    if weights.expires <= clock() or (can_resign and weights.expires <= soon):
        return _resign(weights, service_client)  # raises when it cannot
    return weights


def _model_list(supported_models: Any) -> List[str]:
    models = [supported_models] if isinstance(supported_models, str) else list(supported_models)
    if not models or not all(isinstance(m, str) and m for m in models):
        raise InvalidRequestError(
            "supported_models must be a non-empty list of model ids, e.g. ['moonshotai/Kimi-K2.6']"
        )
    return models


def _lora_name(name: Optional[str], weights: ExternalWeights) -> str:
    if name is None:
        if weights.tinker_path is None:
            raise InvalidRequestError(
                "name= is needed when the source is URLs without a tinker path "
                "(or pass tinker_path=)"
            )
        name = lora_name_for_tinker_path(weights.tinker_path)
    check_lora_name(name)
    return name


async def upload_external_weights_async(
    client: Client, source: Any, **kwargs: Any
) -> PublishedLoRA:
    """:func:`upload_external_weights` for asyncio code.

    Tinker futures in ``source`` are awaited on the loop; the downloads,
    uploads and validation wait (blocking HTTP) run on the loop's default
    executor, so the loop stays free. Cancelling the await abandons the
    wait but not an upload already under way.
    """
    weights = await resolve_external_weights_async(
        source,
        service_client=kwargs.get("service_client"),
        tinker_path=kwargs.pop("tinker_path", None),
    )
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(
        None, functools.partial(upload_external_weights, client, weights, **kwargs)
    )


def _resign(weights: ExternalWeights, service_client: Any) -> ExternalWeights:
    if weights.tinker_path is None or service_client is None:
        raise PermissionDeniedError(
            "the signed URLs expired at {}: get fresh ones with rest_client.get_external_weights_urls(), or pass "
            "the tinker path and service_client= so sail_lite re-signs them".format(
                weights.expires.isoformat() if weights.expires else "an unknown time"
            ),
            code="url_expired",
        )
    return resolve_external_weights(weights.tinker_path, service_client=service_client)


def _publish(
    client: Client,
    weights: ExternalWeights,
    downloads: _Downloads,
    *,
    models: List[str],
    name: str,
    display_name: Optional[str],
    description: Optional[str],
    wait: bool,
    deadline_at: Optional[float],
    preflight: bool,
    progress: Optional[Progress],
    delete_tinker_checkpoint: bool,
    service_client: Any,
) -> PublishedLoRA:
    _config_key, config_url = weights.url(CONFIG_NAME)
    _weights_key, weights_url = weights.url(WEIGHTS_NAME)
    downloads.expires = weights.expires
    config_bytes = _read_config(downloads, config_url)
    size = _read_weights_header(downloads, weights_url, config_bytes, models, preflight=preflight)
    source = _SignedURLFile(downloads, weights_url, name=WEIGHTS_NAME, size=size)
    finish = functools.partial(
        _finish,
        client,
        models=models,
        wait=wait,
        deadline_at=deadline_at,
        delete_tinker_checkpoint=delete_tinker_checkpoint,
        service_client=service_client,
    )
    try:
        reused, name = _reuse_or_rename(client, name, source, weights.tinker_path)
        if reused is not None:
            return finish(reused)
        config_file, weights_file = _upload_files(
            client, config_bytes, source, size, progress, deadline_at
        )
        sha = source.sha256.hexdigest()
    finally:
        source.close()
    marker = _marker(sha, weights.tinker_path, config_file.id, weights_file.id)
    lora = client.loras.create(
        name,
        supported_models=models,
        config_file_id=config_file.id,
        weights_file_id=weights_file.id,
        display_name=display_name if display_name is not None else weights.tinker_path,
        description=f"{description} {marker}" if description else marker,
    )
    _logger.info(
        "published %s as LoRA %s (%d bytes)", weights.tinker_path or "external weights", name, size
    )
    return finish(
        PublishedLoRA(lora, weights.tinker_path, sha, False, config_file.id, weights_file.id)
    )


def _reuse_or_rename(
    client: Client, name: str, source: _SignedURLFile, tinker_path: Optional[str]
) -> Tuple[Optional[PublishedLoRA], str]:
    """A LoRA already published with these weights, or the name to publish them under.

    A name taken by other weights becomes ``name-<sha8>``; taken again by other weights, a
    :class:`ConflictError`.
    """
    existing = _existing(client, name)
    if existing is None:
        return None, name
    sha = source.hash_all()
    reused = _reusable(existing, sha, tinker_path)
    if reused is not None:
        return reused, name
    suffixed = f"{name[:55].rstrip('-')}-{sha[:8]}"
    existing = _existing(client, suffixed)
    if existing is None:
        return None, suffixed
    reused = _reusable(existing, sha, tinker_path)
    if reused is None:
        raise ConflictError(
            f"LoRAs named {name!r} and {suffixed!r} exist with other weights: pass another name=",
            status=409,
            code="name_taken",
        )
    return reused, suffixed


def _upload_files(
    client: Client,
    config_bytes: bytes,
    source: _SignedURLFile,
    size: int,
    progress: Optional[Progress],
    deadline_at: Optional[float],
) -> Tuple[Any, Any]:
    """Upload the config, then stream the weights from storage to Sail; the two file objects."""
    total = len(config_bytes) + size

    def tracker(offset: int) -> Optional[Progress]:
        if progress is None:
            return None
        return lambda sent, _size: progress(offset + sent, total)

    config_file = client.files.create(
        _NamedBytes(config_bytes, CONFIG_NAME),
        purpose="lora",
        progress=tracker(0),
        deadline=_remaining(deadline_at),
    )
    weights_file = client.files.create(
        source,
        purpose="lora",
        progress=tracker(len(config_bytes)),
        deadline=_remaining(deadline_at),
    )
    if source.tell() != size:
        raise APIConnectionError(
            f"the upload of {WEIGHTS_NAME} ended after {source.tell()} of {size} bytes"
        )
    return config_file, weights_file


def _read_config(downloads: _Downloads, url: str) -> bytes:
    response = downloads.open(url, CONFIG_NAME)
    try:
        data = downloads.read_exactly(response, _MAX_CONFIG_BYTES + 1)
    finally:
        response.close()
    if len(data) > _MAX_CONFIG_BYTES:
        raise AdapterError(
            f"{CONFIG_NAME} is over {_MAX_CONFIG_BYTES} bytes: not a PEFT adapter config",
            problems=[AdapterProblem("invalid_config_json", "the config is too large")],
        )
    return data


def _preflight(config_bytes: bytes, header: Iterator[bytes], size: int, models: List[str]) -> None:
    """wire.md's LoRA rules on the config and the safetensors header; :class:`AdapterError` lists every problem."""
    problems: List[AdapterProblem] = []
    warnings: List[str] = []
    config: Optional[Dict[str, Any]] = None
    try:
        parsed = json.loads(config_bytes.decode("utf-8"))
        if isinstance(parsed, dict):
            config = parsed
        else:
            problems.append(
                AdapterProblem("invalid_config_json", "adapter_config.json must hold a JSON object")
            )
    except (UnicodeDecodeError, ValueError):
        problems.append(
            AdapterProblem("invalid_config_json", "adapter_config.json is not valid JSON")
        )
    scan = scan_safetensors_header(header, size, config)
    problems.extend(scan.problems)
    if config is not None:
        config_problems, warnings = check_adapter_config(config, models)
        problems.extend(config_problems)
        if scan.tensors or not problems:
            problems.extend(scan.tensor_problems)
    for warning in warnings:
        _logger.warning("%s", warning)
    AdapterReport(tuple(problems), tuple(warnings), config).raise_for_problems()


def _existing(client: Client, name: str) -> Optional[LoRA]:
    try:
        return client.loras.retrieve(name)
    except NotFoundError:
        return None


def _reusable(lora: LoRA, sha: str, tinker_path: Optional[str]) -> Optional[PublishedLoRA]:
    fields = _marker_fields(lora)
    if fields.get("sha256") != sha:
        return None
    _logger.info("LoRA %s already holds these weights (sha256 %s...): reused", lora.name, sha[:12])
    return PublishedLoRA(
        lora,
        fields.get("path", tinker_path),
        sha,
        True,
        fields.get("config"),
        fields.get("weights"),
    )


def _remaining(deadline_at: Optional[float]) -> Optional[float]:
    """Seconds left before ``deadline_at`` (monotonic), at least a millisecond; ``None`` without a deadline."""
    return None if deadline_at is None else max(deadline_at - time.monotonic(), 1e-3)


def _finish(
    client: Client,
    published: PublishedLoRA,
    models: List[str],
    wait: bool,
    deadline_at: Optional[float],
    delete_tinker_checkpoint: bool,
    service_client: Any,
) -> PublishedLoRA:
    lora = published.lora
    if wait:
        for model in models:
            lora = client.loras.wait_for_validation(
                lora.name, model, deadline=_remaining(deadline_at)
            )
    if delete_tinker_checkpoint and published.tinker_path is not None:
        rest = _rest_client(service_client)
        delete = getattr(rest, _DELETE_METHOD, None)
        if not callable(delete):
            raise ConfigurationError(f"this tinker has no RestClient.{_DELETE_METHOD}()")
        result = delete(published.tinker_path)
        while _is_future(result):
            result = result.result()
    return PublishedLoRA(
        lora,
        published.tinker_path,
        published.sha256,
        published.reused,
        published.config_file_id,
        published.weights_file_id,
    )


# -- lifetimes --------------------------------------------------------------------------------


def run_loras(client: Client, tinker_run: str) -> List[PublishedLoRA]:
    """The LoRAs this module published from one Tinker training run, oldest first.

    ``tinker_run`` is the run id or any tinker path of the run. Found by the
    marker in each LoRA's description (the tinker path, the weights digest
    and the two file ids).
    """
    run = parse_tinker_path(tinker_run)[0] if tinker_run.startswith("tinker://") else tinker_run
    prefix = f"tinker://{run}/"
    found = []
    for position, lora in enumerate(client.loras.list()):
        fields = _marker_fields(lora)
        if fields.get("path", "").startswith(prefix):
            found.append(
                (
                    lora.created_at or 0,
                    position,
                    PublishedLoRA(
                        lora,
                        fields["path"],
                        fields.get("sha256", ""),
                        True,
                        fields.get("config"),
                        fields.get("weights"),
                    ),
                )
            )
    return [item[2] for item in sorted(found, key=lambda item: item[:2])]


def superseded_loras(client: Client, tinker_run: str, *, keep: int = 1) -> List[PublishedLoRA]:
    """The LoRAs of ``tinker_run`` that the newest ``keep`` replace: what the run no longer needs.

    Sail's API has no DELETE route for LoRAs or files (wire.md), so this
    lists them, with their ``config_file_id``/``weights_file_id``, for
    removal where Sail allows it; nothing is changed on the server.
    """
    if isinstance(keep, bool) or not isinstance(keep, int) or keep < 0:
        raise InvalidRequestError(f"keep must be an int >= 0, got {keep!r}")
    published = run_loras(client, tinker_run)
    return published[: max(len(published) - keep, 0)]
