"""A fake background-response service for the engine's unit tests: futures shaped like ResponseFuture.

It keeps the server-side semantics the engine relies on: a key seen before
replays the stored response (no new run), ``attach`` finds a response by id,
cancelling a future cancels the response. Tests drive completion by hand
(``auto=False``) or let every request finish at once.
"""

from __future__ import annotations

import itertools
import threading
from collections import Counter
from concurrent.futures import Future
from typing import Any, Callable, Dict, List, Optional

from sail_lite.errors import (
    APIConnectionError,
    InvalidRequestError,
    NotFoundError,
    ResponseFailedError,
)


class FakeFuture(Future):
    def __init__(self, key: Optional[str]) -> None:
        super().__init__()
        self.idempotency_key = key
        self.response_id: Optional[str] = None
        self._accepted: List[Callable[[Any], None]] = []

    def add_accepted_callback(self, fn: Callable[[Any], None]) -> None:
        if self.response_id is not None:
            fn(self)
        else:
            self._accepted.append(fn)

    def accept(self, response_id: str) -> None:
        self.response_id = response_id
        for fn in self._accepted:
            fn(self)


class FakeService:
    """``submit(item, key)`` / ``attach(response_id)`` with replay-by-key and counted runs."""

    def __init__(self, *, auto: bool = True) -> None:
        self.auto = auto
        self.lock = threading.Lock()
        self.runs: Counter = (
            Counter()
        )  # inference runs per key (None keys counted under their response id)
        self.by_key: Dict[str, str] = {}
        self.results: Dict[str, Any] = {}
        self.items: Dict[str, Any] = {}
        self.cancelled_ids: set = set()
        self.open: List[FakeFuture] = []
        self.submits: List[Optional[str]] = []
        self.attaches: List[str] = []
        self.forgotten: set = set()
        self.max_open = 0
        self._ids = itertools.count()

    @property
    def total_runs(self) -> int:
        return sum(self.runs.values())

    def submit(self, item: Any, key: Optional[str]) -> FakeFuture:
        if item == "bad":
            raise InvalidRequestError("bad item: fix it")
        future = FakeFuture(key)
        with self.lock:
            self.submits.append(key)
            if key is not None and key in self.by_key:
                response_id = self.by_key[key]
            else:
                response_id = f"resp_{next(self._ids)}"
                if key is not None:
                    self.by_key[key] = response_id
                self.runs[key or response_id] += 1
                self.items[response_id] = item
                self.results[response_id] = {"item": item, "id": response_id}
        future.accept(response_id)
        self._track(future)
        return future

    def attach(self, response_id: str) -> FakeFuture:
        future = FakeFuture(None)
        with self.lock:
            self.attaches.append(response_id)
        if response_id in self.forgotten or response_id not in self.results:
            future.set_exception(
                NotFoundError("no such response", status=404, response_id=response_id)
            )
            return future
        future.response_id = response_id
        self._track(future)
        return future

    def _track(self, future: FakeFuture) -> None:
        def on_done(f: Future) -> None:
            if f.cancelled() and future.response_id is not None:
                with self.lock:
                    self.cancelled_ids.add(future.response_id)
            with self.lock:
                if future in self.open:
                    self.open.remove(future)

        future.add_done_callback(on_done)
        with self.lock:
            self.open.append(future)
            self.max_open = max(self.max_open, len(self.open))
        if self.auto:
            self.complete(future)

    def complete(self, future: FakeFuture) -> None:
        response_id = future.response_id
        assert response_id is not None
        item = self.items[response_id]
        if response_id in self.cancelled_ids:
            return
        if item == "fail":
            future.set_exception(
                ResponseFailedError(
                    f"response {response_id} failed", code="server_error", response_id=response_id
                )
            )
        elif item == "flaky":
            future.set_exception(APIConnectionError("connection reset"))
        else:
            future.set_result(self.results[response_id])

    def complete_all(
        self, order: Optional[Callable[[List[FakeFuture]], List[FakeFuture]]] = None
    ) -> None:
        with self.lock:
            todo = list(self.open)
        for future in order(todo) if order else todo:
            if not future.done():
                self.complete(future)
