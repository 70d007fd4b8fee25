"""A streamed ``multipart/form-data`` body for uploads of any size.

``requests``' ``files=`` reads the whole file and then builds the body in
memory again; an adapter file may be 100 GiB. :class:`MultipartUpload` is
an iterable with a precomputed ``len`` (so the request carries a
``Content-Length``) that reads its source in chunks while it is sent, so the
memory an upload costs stays flat whatever the file's size.
"""

from __future__ import annotations

import os
from typing import IO, Callable, Iterator, List, Optional, Tuple, Union

from .errors import InvalidRequestError, UploadNotRewindableError

__all__ = ["MultipartUpload", "Progress"]

Progress = Callable[[int, int], None]
_CHUNK = 1 << 20


def _quote(value: str) -> str:
    # RFC 7578: the filename is a quoted string; escape what would end it.
    return value.replace("\\", "\\\\").replace('"', "%22").replace("\r", "%0D").replace("\n", "%0A")


class MultipartUpload:
    """One file (plus text fields) as a streamed multipart body.

    ``source`` is a path or a binary file object opened for reading. A path
    is opened on the first iteration and closed at the end; a file object
    is read from its current position and never closed (it is the
    caller's). :meth:`rewind` prepares another send (a retry): it works for
    paths and seekable files, and raises :class:`UploadNotRewindableError`
    otherwise. ``progress(bytes_sent, total)`` is called as file bytes go
    out (``total`` is the file's size).
    """

    def __init__(
        self,
        source: Union[str, os.PathLike[str], IO[bytes]],
        *,
        fields: Optional[List[Tuple[str, str]]] = None,
        field_name: str = "file",
        filename: Optional[str] = None,
        progress: Optional[Progress] = None,
    ) -> None:
        self._path: Optional[str] = None
        self._file: Optional[IO[bytes]] = None
        if isinstance(source, (str, os.PathLike)):
            self._path = os.fspath(source)
            if not os.path.isfile(self._path):
                raise InvalidRequestError(f"cannot upload {self._path!r}: no such file")
            self.size = os.path.getsize(self._path)
            default_name = os.path.basename(self._path)
            self._start = 0
        elif hasattr(source, "read"):
            self._file = source
            self._start, self.size = self._measure(source)
            default_name = os.path.basename(str(getattr(source, "name", "") or "")) or "upload.bin"
        else:
            raise InvalidRequestError(
                f"file must be a path or a binary file object opened for reading, got {type(source).__name__}"
            )
        if progress is not None and not callable(progress):
            raise InvalidRequestError(
                f"progress must be a callable(bytes_sent, total), got {type(progress).__name__}"
            )
        self.filename = filename or default_name
        self._progress = progress
        self._sent_once = False
        boundary = "sail-lite-" + os.urandom(16).hex()
        self.content_type = "multipart/form-data; boundary=" + boundary
        head = b"".join(
            f'--{boundary}\r\nContent-Disposition: form-data; name="{_quote(name)}"\r\n\r\n{value}\r\n'.encode()
            for name, value in (fields or [])
        )
        head += (
            f'--{boundary}\r\nContent-Disposition: form-data; name="{_quote(field_name)}"; filename="{_quote(self.filename)}"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n"
        ).encode()
        self._head = head
        self._tail = f"\r\n--{boundary}--\r\n".encode("ascii")

    @staticmethod
    def _measure(file: IO[bytes]) -> Tuple[int, int]:
        """``(start, remaining size)`` of a file object, without reading it."""
        try:
            start = file.tell()
            end = file.seek(0, os.SEEK_END)
            file.seek(start)
            return start, end - start
        except (AttributeError, OSError, ValueError):
            pass
        try:
            return 0, os.fstat(file.fileno()).st_size
        except (AttributeError, OSError, ValueError):
            raise InvalidRequestError(
                "cannot tell the size of this file object: pass a path or a seekable file instead"
            ) from None

    def __len__(self) -> int:
        return len(self._head) + self.size + len(self._tail)

    def rewind(self) -> None:
        """Make the next iteration send the whole body again, or raise :class:`UploadNotRewindableError`."""
        if not self._sent_once or self._path is not None:
            return
        try:
            seekable = self._file.seekable()  # type: ignore[union-attr]
        except (AttributeError, ValueError):
            seekable = False
        if not seekable:
            raise UploadNotRewindableError(
                f"the upload of {self.filename!r} failed mid-way and its source cannot be rewound: nothing was re-sent; "
                "restart the upload (pass a path or a seekable file to let sail-lite retry it)"
            )
        self._file.seek(self._start)  # type: ignore[union-attr]

    def __iter__(self) -> Iterator[bytes]:
        self._sent_once = True
        yield self._head
        sent = 0
        if self._progress is not None:
            self._progress(0, self.size)
        if self._path is not None:
            with open(self._path, "rb") as file:
                for chunk in self._chunks(file):
                    sent += len(chunk)
                    self._report(sent)
                    yield chunk
        else:
            for chunk in self._chunks(self._file):  # type: ignore[arg-type]
                sent += len(chunk)
                self._report(sent)
                yield chunk
        if sent != self.size:
            # The Content-Length promised self.size bytes: a short source must not send a lying body.
            raise OSError(
                f"{self.filename!r} changed during the upload: expected {self.size} bytes, read {sent}"
            )
        yield self._tail

    def _chunks(self, file: IO[bytes]) -> Iterator[bytes]:
        remaining = self.size
        while remaining > 0:
            chunk = file.read(min(_CHUNK, remaining))
            if not chunk:
                return
            remaining -= len(chunk)
            yield chunk

    def _report(self, sent: int) -> None:
        if self._progress is not None:
            self._progress(sent, self.size)
