"""``client.batches``: many Responses requests in one call, run on standard or flex."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Mapping, Optional, Sequence, Set

from .._checks import path_id, positive_int, shown
from ..errors import InvalidRequestError, MalformedResponseError
from ..types import Batch, Response
from ._common import build_metadata, check_window, list_like

if TYPE_CHECKING:  # pragma: no cover
    from .._requester import Requester

__all__ = ["Batches", "BATCH_WINDOWS", "MAX_BATCH_REQUESTS"]

BATCH_WINDOWS = ("standard", "balanced", "flex")
MAX_BATCH_REQUESTS = 100000
_CUSTOM_ID = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}\Z")


class Batches:
    """Batches of Responses requests. Every method takes ``timeout``, ``deadline`` and ``extra_headers``."""

    def __init__(self, requester: Requester) -> None:
        self._requester = requester

    def create(
        self,
        requests: Sequence[Mapping[str, Any]],
        *,
        label: Optional[str] = None,
        completion_window: Optional[str] = None,
        idempotency_key: Optional[str] = None,
        timeout: Optional[float] = None,
        deadline: Optional[float] = None,
        extra_headers: Optional[Mapping[str, str]] = None,
    ) -> Batch:
        """``POST /batches`` with ``requests`` = ``[{"custom_id": ..., "params": {Responses body}}]``.

        Checked before sending: 1..100,000 items, ``custom_id`` of 1-64 chars
        ``[a-z0-9][a-z0-9_-]*`` and unique, ``params`` an object with a
        ``model``, item windows ``standard`` or ``flex`` only
        (``completion_window`` sets it on items that have none). Retried
        safely under one idempotency key.
        """
        call = self._requester.call(
            timeout=timeout,
            deadline=deadline,
            extra_headers=extra_headers,
            idempotency_key=idempotency_key,
        )
        items = list(requests) if list_like(requests) else None
        if not items or len(items) > MAX_BATCH_REQUESTS:
            raise InvalidRequestError(
                f"a batch needs 1 to {MAX_BATCH_REQUESTS} requests, each {{'custom_id': ..., 'params': {{...}}}}"
            )
        completion_window = check_window(completion_window, background=True, lora=False)
        if completion_window is not None and completion_window not in BATCH_WINDOWS:
            raise InvalidRequestError(
                f"batch items run on standard or flex, not {completion_window!r}"
            )
        seen: Set[str] = set()
        wire_items = [
            _batch_item(position, item, completion_window, seen)
            for position, item in enumerate(items)
        ]
        body: Dict[str, Any] = {"endpoint": "/v1/responses", "requests": wire_items}
        if label is not None:
            if not isinstance(label, str):
                raise InvalidRequestError(f"label must be a string, got {type(label).__name__}")
            body["label"] = label
        payload = self._requester.request(
            "POST", "/batches", call, json_body=body, kind="upload", key_header="Idempotency-Key"
        )
        return Batch.from_dict(payload)

    def retrieve(
        self,
        batch_id: str,
        *,
        timeout: Optional[float] = None,
        deadline: Optional[float] = None,
        extra_headers: Optional[Mapping[str, str]] = None,
    ) -> Batch:
        """``GET /batches/{id}``, with each item's status in ``request_status``."""
        call = self._requester.call(timeout=timeout, deadline=deadline, extra_headers=extra_headers)
        return self._retrieve(path_id(batch_id, "batch id"), call)

    def _retrieve(self, batch_id: str, call: Any) -> Batch:
        return Batch.from_dict(self._requester.request("GET", "/batches/" + batch_id, call))

    def list(
        self,
        *,
        limit: Optional[int] = None,
        after_id: Optional[str] = None,
        timeout: Optional[float] = None,
        deadline: Optional[float] = None,
        extra_headers: Optional[Mapping[str, str]] = None,
    ) -> List[Batch]:
        """``GET /batches``: a page of batches, newest first; pass the last id as ``after_id`` for the next."""
        call = self._requester.call(timeout=timeout, deadline=deadline, extra_headers=extra_headers)
        query = []
        if limit is not None:
            query.append("limit={}".format(positive_int("limit", limit)))
        if after_id is not None:
            query.append("after_id=" + path_id(after_id, "after_id"))
        path = "/batches" + ("?" + "&".join(query) if query else "")
        payload = self._requester.request("GET", path, call)
        if isinstance(payload, dict) and isinstance(payload.get("data"), list):
            payload = payload["data"]  # tolerate the list-object shape too
        if not isinstance(payload, list):
            raise MalformedResponseError("GET /batches did not return a JSON array")
        return [Batch.from_dict(item) for item in payload]

    def result(
        self,
        batch_id: str,
        custom_id: str,
        *,
        timeout: Optional[float] = None,
        deadline: Optional[float] = None,
        extra_headers: Optional[Mapping[str, str]] = None,
    ) -> Response:
        """``GET /batches/{id}/{custom_id}``: that item's response object (any status)."""
        call = self._requester.call(timeout=timeout, deadline=deadline, extra_headers=extra_headers)
        path = "/batches/{}/{}".format(
            path_id(batch_id, "batch id"), path_id(custom_id, "custom_id")
        )
        return Response.from_dict(self._requester.request("GET", path, call))

    def wait(
        self,
        batch_id: str,
        *,
        deadline: Optional[float] = None,
        timeout: Optional[float] = None,
        extra_headers: Optional[Mapping[str, str]] = None,
        on_poll: Optional[Callable[[Batch], None]] = None,
    ) -> Batch:
        """Block until every item is terminal, polling on the standard window's schedule.

        ``on_poll(batch)`` sees every poll (progress). Raises
        :class:`DeadlineExceededError` when ``deadline`` seconds pass; the
        batch goes on on the server.
        """
        call = self._requester.call(timeout=timeout, deadline=deadline, extra_headers=extra_headers)
        batch_id = path_id(batch_id, "batch id")
        return self._requester.poll_until(
            lambda: self._retrieve(batch_id, call),
            lambda batch: batch.is_done,
            window="standard",
            call=call,
            what=f"batch {batch_id}",
            on_poll=on_poll,
        )


def _batch_item(
    position: int, item: Any, completion_window: Optional[str], seen: Set[str]
) -> Dict[str, Any]:
    """One checked batch item on the wire (``seen``: the custom ids so far, this one added)."""
    custom_id = item.get("custom_id") if isinstance(item, Mapping) else None
    params = item.get("params") if isinstance(item, Mapping) else None
    if not isinstance(custom_id, str) or not _CUSTOM_ID.match(custom_id):
        raise InvalidRequestError(
            f"requests[{position}].custom_id must be 1-64 chars of [a-z0-9_-] starting with [a-z0-9], got {shown(custom_id)}"
        )
    if custom_id in seen:
        raise InvalidRequestError(f"custom_id {custom_id!r} appears twice; each must be unique")
    seen.add(custom_id)
    if not isinstance(params, Mapping) or not isinstance(params.get("model"), str):
        raise InvalidRequestError(
            f"requests[{position}].params must be a Responses body with a model"
        )
    params = dict(params)
    metadata = build_metadata(params.get("metadata"), background=True) or {}
    window = metadata.get("completion_window") or completion_window
    if window is not None:
        if window not in BATCH_WINDOWS:
            raise InvalidRequestError(
                f"requests[{position}] asks for the {window!r} window; batch items run on standard or flex"
            )
        metadata["completion_window"] = window
    if metadata:
        params["metadata"] = metadata
    return {"custom_id": custom_id, "params": params}
