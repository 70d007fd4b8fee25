"""Streaming request bodies: length-bounded or chunked readers, and a multipart/form-data parser.

The parser never holds a file part in memory: it streams it, chunk by
chunk, to a sink, keeping only a delimiter-sized tail between reads. Small
fields (``purpose``) are bounded; headers are bounded; a body that ends
before its closing boundary is an error.
"""

from __future__ import annotations

import hashlib
import re
import socket
from typing import BinaryIO, Callable, Dict, Optional, Tuple

from .params import ApiError

__all__ = ["BodyReader", "FilePart", "parse_multipart", "boundary_of", "safe_filename"]

_CHUNK = 1 << 16
_MAX_PART_HEADERS = 16 * 1024
_MAX_FIELD = 64 * 1024
_PARAM = re.compile(r';\s*([A-Za-z0-9_*-]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^;]*)')


_CHUNK_SIZE_LINE = re.compile(rb"[0-9A-Fa-f]{1,16}(?:;[^\r\n]*)?\r?\n\Z")
_MAX_TRAILERS = 64


class BodyReader:
    """Reads exactly one request body: ``Content-Length`` bytes, or a chunked stream.

    Every read is bounded by ``size`` whatever the client declared: a chunk
    size must be hex digits (``-1`` or ``0x10`` is a 400, never a read to
    EOF). A socket timeout while reading (the connection's idle timeout) is
    a 408; after any error the reader is ``broken``: the connection must close,
    nothing more is read from it.
    """

    def __init__(
        self,
        rfile: BinaryIO,
        length: Optional[int],
        chunked: bool = False,
        on_first_read: Optional[Callable[[], None]] = None,
    ) -> None:
        self._rfile = rfile
        self._left = length if not chunked else 0
        self._chunked = chunked
        self._ended = not chunked and not length
        self._on_first_read = on_first_read
        self.broken = False
        self.started = False
        self.consumed = 0

    @property
    def ended(self) -> bool:
        return self._ended

    @property
    def remaining(self) -> Optional[int]:
        """Bytes still to read when the length is known (``None`` for a chunked body)."""
        return None if self._chunked else (self._left or 0)

    def read(self, size: int = _CHUNK) -> bytes:
        if self._ended:
            return b""
        if self.broken:
            raise ApiError(400, "the request body could not be read", code="invalid_body")
        self.started = True
        try:
            if self._on_first_read is not None:
                start, self._on_first_read = self._on_first_read, None
                start()
            return self._read(max(1, size))
        except ApiError:
            self.broken = True
            raise
        except (socket.timeout, OSError):
            self.broken = True
            raise ApiError(
                408,
                "the request body stopped arriving (the connection's idle timeout passed)",
                code="request_timeout",
                type="timeout_error",
            ) from None

    def _read(self, size: int) -> bytes:
        if self._left == 0 and self._chunked:
            self._next_chunk()
            if self._ended:
                return b""
        data = self._rfile.read(min(size, self._left))
        if not data:
            raise ApiError(
                400, "the request body ended before its declared length", code="incomplete_body"
            )
        self._left -= len(data)
        self.consumed += len(data)
        if self._left == 0:
            if self._chunked:
                if self._rfile.readline(8) not in (b"\r\n", b"\n"):
                    raise ApiError(
                        400,
                        "a chunk of the chunked body is longer than its declared size",
                        code="invalid_body",
                    )
            else:
                self._ended = True
        return data

    def _next_chunk(self) -> None:
        line = self._rfile.readline(1024)
        if not _CHUNK_SIZE_LINE.match(line):
            raise ApiError(
                400,
                "malformed chunked transfer encoding (a chunk size must be hex digits)",
                code="invalid_body",
            )
        size = int(line.split(b";", 1)[0], 16)
        if size == 0:
            for _ in range(_MAX_TRAILERS):
                if self._rfile.readline(1024) in (b"\r\n", b"\n", b""):
                    break
            else:
                raise ApiError(400, "too many trailers after the chunked body", code="invalid_body")
            self._ended = True
        self._left = size

    def drain(self, limit: int) -> bool:
        """Read and drop up to ``limit`` more bytes; True when the body was fully read.

        Gives up at once (False) when the declared rest is over ``limit``, or the
        reader is broken: the caller closes the connection instead.
        """
        if self.broken:
            return False
        if self.remaining is not None and self.remaining > limit:
            return False
        budget = self.consumed + limit
        try:
            while not self._ended and self.consumed < budget:
                self.read(min(_CHUNK, budget - self.consumed))
        except ApiError:
            return False
        return self._ended


class FilePart:
    __slots__ = ("filename", "size", "digest")

    def __init__(self, filename: str, size: int, digest: bytes) -> None:
        self.filename, self.size, self.digest = filename, size, digest


def boundary_of(content_type: str) -> bytes:
    kind, _, rest = content_type.partition(";")
    if kind.strip().lower() != "multipart/form-data":
        raise ApiError(
            400,
            "POST /files takes multipart/form-data (with parts purpose and file)",
            code="invalid_body",
        )
    params = _params(";" + rest)
    boundary = params.get("boundary", "")
    if not boundary or len(boundary) > 200:
        raise ApiError(400, "the multipart Content-Type has no boundary", code="invalid_body")
    return boundary.encode("latin-1")


def _params(text: str) -> Dict[str, str]:
    values = {}
    for name, value in _PARAM.findall(text):
        value = value.strip()
        if value.startswith('"'):
            value = re.sub(r"\\(.)", r"\1", value[1:-1])
        values[name.lower()] = value
    return values


def safe_filename(name: str) -> str:
    """The client's filename, refused if it tries to be a path."""
    if (
        not name
        or len(name) > 255
        or name in (".", "..")
        or any(c in name for c in "/\\\0")
        or name != name.strip()
    ):
        raise ApiError(
            400,
            f"the file part's filename {name[:80]!r} is not a plain file name (no paths, no '..')",
            code="invalid_filename",
            param="file",
        )
    return name


class _Stream:
    def __init__(self, reader: BodyReader) -> None:
        self.reader = reader
        self.buf = b""

    def more(self) -> bool:
        data = self.reader.read(_CHUNK)
        self.buf += data
        return bool(data)


def parse_multipart(
    reader: BodyReader,
    boundary: bytes,
    open_sink: Callable[[str], BinaryIO],
    *,
    max_file_bytes: int,
) -> Tuple[Dict[str, str], Optional[FilePart]]:
    """Parse the body: (small fields, the streamed ``file`` part if any).

    ``open_sink(filename)`` returns a writable binary file for the ``file``
    part; a file larger than ``max_file_bytes`` is a 413.
    """
    stream = _Stream(reader)
    first = b"--" + boundary
    separator = b"\r\n" + first
    while first not in stream.buf:
        if len(stream.buf) > _MAX_PART_HEADERS or not stream.more():
            raise ApiError(400, "the multipart body has no opening boundary", code="invalid_body")
    stream.buf = stream.buf[stream.buf.index(first) + len(first) :]
    fields: Dict[str, str] = {}
    upload: Optional[FilePart] = None
    while True:
        while len(stream.buf) < 2 and stream.more():
            pass
        if stream.buf.startswith(b"--"):
            return fields, upload  # the closing boundary
        while b"\r\n\r\n" not in stream.buf:
            if len(stream.buf) > _MAX_PART_HEADERS or not stream.more():
                raise ApiError(400, "a multipart part has no complete headers", code="invalid_body")
        head, stream.buf = stream.buf.split(b"\r\n\r\n", 1)
        disposition = ""
        for line in head.decode("latin-1").split("\r\n"):
            name, _, value = line.partition(":")
            if name.strip().lower() == "content-disposition":
                disposition = value
        params = _params(disposition)
        name = params.get("name")
        if not name:
            raise ApiError(
                400,
                "a multipart part lacks Content-Disposition: form-data; name=...",
                code="invalid_body",
            )
        if name == "file" and "filename" in params:
            if upload is not None:
                raise ApiError(
                    400, "send one file part per upload", code="invalid_body", param="file"
                )
            filename = safe_filename(params["filename"])
            with open_sink(filename) as sink:
                size, digest = _copy_part(stream, separator, sink, max_file_bytes)
            upload = FilePart(filename, size, digest)
        else:
            chunks = []
            _copy_part(stream, separator, _Collector(chunks), _MAX_FIELD)
            fields[name] = b"".join(chunks).decode("utf-8", "replace")


class _Collector:
    def __init__(self, chunks: list) -> None:
        self.write = chunks.append


def _copy_part(stream: _Stream, separator: bytes, sink: object, limit: int) -> Tuple[int, bytes]:
    """Copy one part's bytes to ``sink`` up to the next boundary; (size, sha256)."""
    digest = hashlib.sha256()
    size = 0
    keep = len(separator) - 1
    while True:
        index = stream.buf.find(separator)
        if index >= 0:
            data, stream.buf = stream.buf[:index], stream.buf[index + len(separator) :]
        elif len(stream.buf) > keep:
            data, stream.buf = stream.buf[:-keep], stream.buf[-keep:]
        else:
            data = b""
        if data:
            size += len(data)
            if size > limit:
                raise ApiError(
                    413, f"the part exceeds the {limit}-byte limit", code="file_too_large"
                )
            digest.update(data)
            sink.write(data)  # type: ignore[attr-defined]
        if index >= 0:
            return size, digest.digest()
        if not stream.more():
            raise ApiError(
                400, "the multipart body ended before its closing boundary", code="invalid_body"
            )
