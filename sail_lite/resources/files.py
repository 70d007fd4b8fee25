"""``client.files``: streamed uploads (files may be up to 100 GiB each)."""
from __future__ import annotations

import os
from typing import IO, TYPE_CHECKING, Optional, Union

from .._multipart import MultipartUpload, Progress
from ..types import FileObject

if TYPE_CHECKING:  # pragma: no cover
    from ..client import Client

__all__ = ["Files"]


class Files:
    def __init__(self, client: "Client") -> None:
        self._client = client

    def create(
        self,
        file: Union[str, "os.PathLike[str]", IO[bytes]],
        *,
        purpose: str = "lora",
        progress: Optional[Progress] = None,
        timeout: Optional[float] = None,
    ) -> FileObject:
        """``POST /files``: upload ``file`` (a path or a binary file object) as multipart.

        Blocks until the server has the whole file. The body is streamed in
        1 MiB chunks with a precomputed ``Content-Length``, so memory stays
        flat whatever the size. ``progress(bytes_sent, total)`` follows the
        upload. A failed attempt is retried only when the source can be
        rewound (a path, or a seekable file); otherwise
        :class:`~sail_lite.errors.UploadNotRewindableError` says to restart
        it. A retry after a lost reply may leave an unused duplicate file on
        the server; it never duplicates inference.
        """
        body = MultipartUpload(file, fields=[("purpose", purpose)], progress=progress)
        client = self._client
        payload = client._request(
            "POST", "/files", body=body, headers={"Content-Type": body.content_type},
            read_timeout=timeout if timeout is not None else client.timeout.upload,
        )
        return FileObject.from_dict(payload)
