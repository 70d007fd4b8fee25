"""Tinker checkpoints: archives and external weights, signed expiring URLs, download and safe extraction.

A checkpoint archive (tinker < 0.36) is a tar holding ``adapter_config.json``
and ``adapter_model.safetensors`` (possibly under a folder), served at
``/_tinker/archives/<id>.tar?expires=<unix>&sig=<hmac>``. External weights
(tinker 0.38 ``save_weights_external``) are the same two files served one by
one at ``/_tinker/external/<id>/<file name>?expires=<unix>&sig=<hmac>``. The
signature is an HMAC-SHA256 of what the URL names and its expiry under a
per-server secret. Extraction refuses absolute names, ``..``, links, devices and
anything that is not a regular file or folder, and reads only the two
adapter files, bounded in size.
"""

from __future__ import annotations

import datetime
import hashlib
import hmac
import io
import os
import re
import tarfile
import urllib.error
import urllib.parse
import urllib.request
from typing import Dict, Optional, Tuple

from .params import ApiError

__all__ = [
    "ARCHIVE_PREFIX",
    "EXTERNAL_PREFIX",
    "EXTERNAL_FILES",
    "sign_external",
    "expires_iso",
    "ArchiveError",
    "pack_adapter",
    "sign",
    "verify",
    "download",
    "extract_adapter",
    "redact",
]

ARCHIVE_PREFIX = "/_tinker/archives/"
EXTERNAL_PREFIX = "/_tinker/external/"
EXTERNAL_FILES = ("adapter_config.json", "adapter_model.safetensors")
_MEMBERS = ("adapter_config.json", "adapter_model.safetensors")


class ArchiveError(Exception):
    """A checkpoint that cannot be used; ``code`` is the response error code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def redact(url: str) -> str:
    """A URL without its query (the signature is a credential)."""
    return url.split("?", 1)[0]


def pack_adapter(adapter_dir: str) -> bytes:
    """The two PEFT files of ``adapter_dir`` as a tar archive (under a ``checkpoint/`` folder)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for name in _MEMBERS:
            archive.add(
                os.path.join(adapter_dir, name), arcname="checkpoint/" + name, recursive=False
            )
    return buffer.getvalue()


def _signature(secret: bytes, archive_id: str, expires: int) -> str:
    return hmac.new(secret, f"{archive_id}:{expires}".encode(), hashlib.sha256).hexdigest()


def sign(secret: bytes, base: str, archive_id: str, expires: int) -> str:
    query = urllib.parse.urlencode(
        {"expires": expires, "sig": _signature(secret, archive_id, expires)}
    )
    return f"{base}{ARCHIVE_PREFIX}{archive_id}.tar?{query}"


def sign_external(secret: bytes, base: str, weights_id: str, filename: str, expires: int) -> str:
    """The signed URL of one external-weights file."""
    query = urllib.parse.urlencode(
        {"expires": expires, "sig": _signature(secret, weights_id + "/" + filename, expires)}
    )
    return f"{base}{EXTERNAL_PREFIX}{weights_id}/{filename}?{query}"


def expires_iso(expires: int) -> str:
    """A Unix time as ISO-8601 UTC (``2026-11-01T12:00:00+00:00``; ``datetime.fromisoformat`` reads it on 3.8)."""
    return datetime.datetime.fromtimestamp(expires, datetime.timezone.utc).isoformat()


def verify(secret: bytes, archive_id: str, query: str, now: float) -> None:
    """Raise a 403 :class:`ApiError` unless the query holds a valid, unexpired signature."""
    values = urllib.parse.parse_qs(query)
    expires_text = (values.get("expires") or [""])[0]
    sig = (values.get("sig") or [""])[0]
    if not re.match(r"[0-9]{1,12}\Z", expires_text) or not hmac.compare_digest(
        sig, _signature(secret, archive_id, int(expires_text))
    ):
        raise ApiError(
            403,
            "the signed checkpoint URL is invalid (bad or missing signature)",
            code="invalid_signature",
        )
    if int(expires_text) < now:
        raise ApiError(403, "the signed checkpoint URL expired", code="url_expired")


def download(url: str, *, max_bytes: int, timeout: float = 30.0) -> bytes:
    """GET an archive; :class:`ArchiveError` with a message that never shows the query."""
    shown = redact(url)
    try:
        with urllib.request.urlopen(url, timeout=timeout) as reply:  # noqa: S310 - our own server
            data = reply.read(max_bytes + 1)
    except urllib.error.HTTPError as exc:
        if exc.code == 403 and b"expired" in exc.read(4096):
            raise ArchiveError(
                "tinker_checkpoint_url_expired",
                f"the Tinker checkpoint URL {shown} expired: resolve a "
                "fresh signed URL (get_tinker_checkpoint_signed_url) and retry",
            ) from None
        raise ArchiveError(
            "tinker_checkpoint_url_invalid",
            f"the Tinker checkpoint URL {shown} is invalid (HTTP {exc.code}): "
            "resolve a fresh signed URL and retry",
        ) from None
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise ArchiveError(
            "tinker_checkpoint_unreachable",
            "could not download the Tinker checkpoint {}: {}".format(
                shown, getattr(exc, "reason", exc)
            ),
        ) from None
    if len(data) > max_bytes:
        raise ArchiveError(
            "tinker_checkpoint_too_large",
            f"the Tinker checkpoint archive exceeds {max_bytes} bytes",
        )
    return data


def _unsafe(member: tarfile.TarInfo) -> Optional[str]:
    name = member.name
    parts = name.replace("\\", "/").split("/")
    if name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
        return "an absolute path"
    if ".." in parts:
        return "a '..' path"
    if member.issym() or member.islnk():
        return "a link"
    if not (member.isfile() or member.isdir()):
        return "a device or special file"
    return None


def extract_adapter(data: bytes, target: str, *, max_member_bytes: int) -> Tuple[str, str]:
    """Write the archive's two adapter files into ``target``; return (config path, weights path)."""
    try:
        archive = tarfile.open(fileobj=io.BytesIO(data), mode="r:*")
    except (tarfile.TarError, EOFError, OSError):
        raise ArchiveError(
            "invalid_tinker_checkpoint", "the Tinker checkpoint is not a tar archive"
        ) from None
    found: Dict[str, tarfile.TarInfo] = {}
    with archive:
        try:
            members = archive.getmembers()
        except (tarfile.TarError, EOFError, OSError):
            raise ArchiveError(
                "invalid_tinker_checkpoint", "the Tinker checkpoint archive is corrupt"
            ) from None
        for member in members:
            reason = _unsafe(member)
            if reason:
                raise ArchiveError(
                    "unsafe_tinker_checkpoint",
                    f"the Tinker checkpoint holds {reason} ({member.name[:200]!r}): refused",
                )
            base = member.name.replace("\\", "/").rsplit("/", 1)[-1]
            if member.isfile() and base in _MEMBERS:
                if base in found:
                    raise ArchiveError(
                        "invalid_tinker_checkpoint", f"the Tinker checkpoint holds {base} twice"
                    )
                if member.size > max_member_bytes:
                    raise ArchiveError(
                        "tinker_checkpoint_too_large",
                        f"{base} in the Tinker checkpoint exceeds {max_member_bytes} bytes",
                    )
                found[base] = member
        missing = [name for name in _MEMBERS if name not in found]
        if missing:
            raise ArchiveError(
                "invalid_tinker_checkpoint",
                "the Tinker checkpoint lacks {}".format(" and ".join(missing)),
            )
        paths = []
        for name in _MEMBERS:
            source = archive.extractfile(found[name])
            path = os.path.join(target, name)
            with source, open(path, "wb") as out:
                while True:
                    chunk = source.read(1 << 20)
                    if not chunk:
                        break
                    out.write(chunk)
            paths.append(path)
    return paths[0], paths[1]
