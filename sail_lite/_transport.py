"""One HTTP attempt: a ``requests`` call in, ``(status, headers, body)`` out.

Never retries and never logs. Maps every ``requests``/``urllib3`` failure to
:class:`~sail_lite.errors.APIConnectionError` (or its timeout subclass) with
a message that names the method and path but never a query string, so a
signed URL cannot leak through an error.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Mapping, Optional, Tuple, Union

import requests
from requests.adapters import HTTPAdapter
from requests.structures import CaseInsensitiveDict

from .errors import APIConnectionError, APITimeoutError

__all__ = ["Reply", "Transport", "redact_url"]

_QUERY = re.compile(r"\?[^\s'\"]*")


def redact_url(text: str) -> str:
    """``text`` with every URL query string replaced by ``?<redacted>``."""
    return _QUERY.sub("?<redacted>", text)


@dataclass(frozen=True)
class Reply:
    """What one HTTP attempt brought back."""

    status: int
    headers: CaseInsensitiveDict
    body: bytes

    @property
    def request_id(self) -> Optional[str]:
        return self.headers.get("x-request-id")


class Transport:
    """A ``requests.Session`` with a connection pool of ``pool_size``.

    The pool blocks when every connection is busy instead of opening extra
    ones it would then throw away, so no concurrency level produces
    "Connection pool is full" warnings: at most ``pool_size`` requests are
    on the wire at once. Thread-safe as ``requests.Session`` is for sending.
    """

    def __init__(self, *, pool_size: int, user_agent: str) -> None:
        session = requests.Session()
        adapter = HTTPAdapter(pool_connections=4, pool_maxsize=pool_size, pool_block=True, max_retries=0)
        session.mount("https://", adapter)
        session.mount("http://", adapter)
        session.headers["User-Agent"] = user_agent
        self._session = session

    def send(
        self,
        method: str,
        url: str,
        *,
        headers: Mapping[str, str],
        body: Union[bytes, Any, None],
        timeout: Tuple[float, float],
        path: str,
    ) -> Reply:
        """Send one request and read the whole reply.

        Raises :class:`APITimeoutError` or :class:`APIConnectionError` when no
        complete reply arrives (including a body cut short by the peer).
        """
        try:
            response = self._session.request(
                method, url, headers=dict(headers), data=body, timeout=timeout, allow_redirects=False
            )
            content = response.content
        except (requests.exceptions.ConnectTimeout, requests.exceptions.ReadTimeout) as exc:
            raise APITimeoutError(
                "{} {} timed out: {}".format(method, path, _describe(exc))
            ) from None
        except (requests.exceptions.RequestException, OSError) as exc:
            # Covers refused/reset connections, a body cut short
            # (ChunkedEncodingError), and an upload source failing mid-way.
            raise APIConnectionError(
                "{} {} failed before a complete reply: {}".format(method, path, _describe(exc))
            ) from None
        return Reply(status=response.status_code, headers=response.headers, body=content)

    def close(self) -> None:
        self._session.close()


def _describe(exc: BaseException) -> str:
    text = "{}: {}".format(type(exc).__name__, exc) if str(exc) else type(exc).__name__
    return redact_url(text)
