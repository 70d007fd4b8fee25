"""``ResponseFuture``: a future of a background response that knows its ids early.

A pipeline that dies between "the create was accepted" and "the result
arrived" must be able to find its work again. So the future carries the
idempotency key from the moment it is made (a re-sent create with that key
is replayed by the server, never run twice) and the response id from the
moment the server accepts the create, and it can tell a callback as soon
as that happens, before any poll.
"""

from __future__ import annotations

import logging
from concurrent.futures import Future
from typing import Any, Callable, List, Optional

__all__ = ["ResponseFuture"]

_logger = logging.getLogger(__name__)


class ResponseFuture(Future):
    """A :class:`concurrent.futures.Future` of one background response's result.

    ``idempotency_key`` is set when the future is made (the key every
    attempt of the create carries); ``response_id`` is ``None`` until the
    server accepts the create, then the ``resp_...`` id to ``wait``,
    ``attach`` to or ``cancel`` from anywhere. ``cancel()`` cancels the
    response on the server.
    """

    def __init__(
        self, *, idempotency_key: Optional[str] = None, response_id: Optional[str] = None
    ) -> None:
        super().__init__()
        self.idempotency_key = idempotency_key
        self.response_id = response_id
        self._accepted_callbacks: List[Callable[[ResponseFuture], Any]] = []

    def add_accepted_callback(self, fn: Callable[[ResponseFuture], Any]) -> None:
        """Call ``fn(future)`` once the create is accepted (``response_id`` set).

        Runs at once (in this thread) if it already was; otherwise in the
        pool thread that made the create, before the first poll. Never
        called when the create fails. An exception in ``fn`` is logged, as
        ``add_done_callback`` does, and does not affect the future.
        """
        with self._condition:  # Future's own lock: one order for accept and add
            if self.response_id is None:
                self._accepted_callbacks.append(fn)
                return
        self._call(fn)

    def set_accepted(self, response_id: str) -> None:
        """Record the accepted create's ``response_id`` and run the accepted-callbacks (the submitter does)."""
        with self._condition:
            self.response_id = response_id
            callbacks, self._accepted_callbacks = self._accepted_callbacks, []
        for fn in callbacks:
            self._call(fn)

    def _call(self, fn: Callable[[ResponseFuture], Any]) -> None:
        try:
            fn(self)
        except Exception:
            _logger.exception("an accepted-callback of response %s raised", self.response_id)

    def __repr__(self) -> str:
        return "<ResponseFuture {} response_id={!r}>".format(
            "done" if self.done() else "pending", self.response_id
        )
