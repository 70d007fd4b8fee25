"""``client.files``: streamed uploads (files may be up to 100 GiB each)."""

from __future__ import annotations

import os
from typing import IO, TYPE_CHECKING, Mapping, Optional, Union

from .._checks import shown
from .._multipart import MultipartUpload, Progress
from ..errors import InvalidRequestError
from ..types import FileObject

if TYPE_CHECKING:  # pragma: no cover
    from .._requester import Requester

__all__ = ["Files"]


class Files:
    def __init__(self, requester: Requester) -> None:
        self._requester = requester

    def create(
        self,
        file: Union[str, os.PathLike[str], IO[bytes]],
        *,
        purpose: str = "lora",
        progress: Optional[Progress] = None,
        idempotency_key: Optional[str] = None,
        timeout: Optional[float] = None,
        deadline: Optional[float] = None,
        extra_headers: Optional[Mapping[str, str]] = None,
    ) -> FileObject:
        """``POST /files``: upload ``file`` (a path or a binary file object) as multipart.

        Blocks until the server has the whole file. The body is streamed in
        1 MiB chunks with a precomputed ``Content-Length``, so memory stays
        flat whatever the size. ``progress(bytes_sent, total)`` follows the
        upload; ``timeout`` bounds the wait for the reply once the body is
        sent. A failed attempt is retried only when the source can be
        rewound (a path, or a seekable file); otherwise
        :class:`~sail_lite.errors.UploadNotRewindableError` says to restart
        it. Every attempt carries one idempotency key (``idempotency_key``,
        or a minted one, on the error if the call gives up); a server that
        does not honour it on uploads may keep an unused duplicate file after
        a lost reply. An upload never runs inference.
        """
        if not isinstance(purpose, str) or not purpose or not purpose.isprintable():
            raise InvalidRequestError(
                f"purpose must be a non-empty string such as 'lora', got {shown(purpose)}"
            )
        call = self._requester.call(
            timeout=timeout,
            deadline=deadline,
            extra_headers=extra_headers,
            idempotency_key=idempotency_key,
        )
        body = MultipartUpload(file, fields=[("purpose", purpose)], progress=progress)
        payload = self._requester.request(
            "POST",
            "/files",
            call,
            body=body,
            content_type=body.content_type,
            kind="upload",
            key_header="Idempotency-Key",
        )
        return FileObject.from_dict(payload)
