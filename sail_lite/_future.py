"""``ResponseFuture``: a future of a background response that knows its ids early.

A pipeline that dies between "the create was accepted" and "the result
arrived" must be able to find its work again. So the future carries the
idempotency key from the moment it is made (a re-sent create with that key
is replayed by the server, never run twice) and the response id from the
moment the server accepts the create, and it can tell a callback as soon
as that happens, before any poll.
"""

from __future__ import annotations

import collections
import logging
from concurrent.futures import Future
from typing import Any, Callable, Deque, Optional

__all__ = ["ResponseFuture"]

_logger = logging.getLogger(__name__)


class ResponseFuture(Future):
    """A :class:`concurrent.futures.Future` of one background response's result.

    ``idempotency_key`` is set when the future is made (the key every
    attempt of the create carries); ``response_id`` is ``None`` until the
    server accepts the create, then the ``resp_...`` id to ``wait``,
    ``attach`` to or ``cancel`` from anywhere. ``cancel()`` cancels the
    response on the server. Only the public :class:`~concurrent.futures.Future`
    API is used: none of its internals.
    """

    def __init__(
        self, *, idempotency_key: Optional[str] = None, response_id: Optional[str] = None
    ) -> None:
        super().__init__()
        self.idempotency_key = idempotency_key
        self.response_id = response_id
        self._accepted_callbacks: Deque[Callable[[ResponseFuture], Any]] = collections.deque()

    def add_accepted_callback(self, fn: Callable[[ResponseFuture], Any]) -> None:
        """Call ``fn(future)`` once the create is accepted (``response_id`` set).

        Runs at once (in this thread) if it already was; otherwise in the
        pool thread that made the create, before the first poll. Never
        called when the create fails. An exception in ``fn`` is logged, as
        ``add_done_callback`` does, and does not affect the future.
        """
        self._accepted_callbacks.append(fn)
        if self.response_id is not None:
            self._drain()

    def set_accepted(self, response_id: str) -> None:
        """Record that the server accepted the create as ``response_id``; run the accepted-callbacks.

        Called once, by the submission layer, in the thread that made the create.
        """
        self.response_id = response_id
        self._drain()

    def _drain(self) -> None:
        # No lock: each side writes first (append / response_id), then drains, and a deque's
        # popleft hands each callback to exactly one thread. Whichever of add and set comes
        # second sees the other's write, so every callback runs once, never zero times.
        callbacks = self._accepted_callbacks
        while True:
            try:
                fn = callbacks.popleft()
            except IndexError:
                return
            try:
                fn(self)
            except Exception:
                _logger.exception("an accepted-callback of response %s raised", self.response_id)

    def __repr__(self) -> str:
        state = "done" if self.done() else "pending"
        return f"<ResponseFuture {state} response_id={self.response_id!r}>"
