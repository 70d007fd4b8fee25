"""Completion webhooks: POST a finished response's object to ``metadata.completion_webhook``.

No thread per response: one scheduler thread keeps a heap of (due time,
delivery) and hands due deliveries to a small pool that does the POSTs. A
delivery is due when the response's turn ends; an attempt that gets a non-2xx
answer or a network error is retried ``retries`` times, ``retry_delay`` seconds
apart, each attempt bounded by ``timeout``. Deliveries go to loopback hosts
only (127.0.0.0/8, ::1, localhost): the emulator never calls out to a network.

Injected faults (:class:`WebhookFault`): ``drop`` (the attempt is counted but
never sent, and not retried, as a delivery lost after the sender thought it
done), ``delay`` (the attempt waits ``delay`` seconds first), ``duplicate``
(the same body is sent twice).
"""

from __future__ import annotations

import collections
import heapq
import http.client
import ipaddress
import itertools
import json
import logging
import random
import threading
import time
import urllib.parse
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Tuple

from .connections import WorkerPool

__all__ = ["WebhookFault", "WebhookDispatcher", "WEBHOOK_FAULT_KINDS", "loopback_url"]

_logger = logging.getLogger(__name__)

WEBHOOK_FAULT_KINDS = ("drop", "delay", "duplicate")
_COUNT_KEYS = ("attempted", "succeeded", "failed", "dropped", "duplicated", "gave_up")


@dataclass(frozen=True)
class WebhookFault:
    """One injected delivery failure: ``times`` bounds how many attempts it strikes (None: no bound);
    ``rate`` is the chance an attempt is struck, from a ``seed``-ed generator."""

    kind: str
    times: Optional[int] = None
    rate: float = 1.0
    seed: int = 0
    delay: float = 0.0

    def __post_init__(self) -> None:
        if self.kind not in WEBHOOK_FAULT_KINDS:
            raise ValueError(f"webhook fault kind must be one of {', '.join(WEBHOOK_FAULT_KINDS)}")
        if self.times is not None and (not isinstance(self.times, int) or self.times < 1):
            raise ValueError("times must be a positive int or None")
        if not 0.0 <= float(self.rate) <= 1.0:
            raise ValueError("rate must be between 0 and 1")


def loopback_url(url: Any) -> Optional[urllib.parse.SplitResult]:
    """The parsed URL when it is http(s) to a loopback host, else None (no webhook, silently)."""
    if not isinstance(url, str) or len(url) > 2048:
        return None
    try:
        parts = urllib.parse.urlsplit(url)
        host = parts.hostname or ""
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or not host:
        return None
    if host == "localhost":
        return parts
    try:
        return parts if ipaddress.ip_address(host).is_loopback else None
    except ValueError:
        return None


class _Delivery:
    __slots__ = ("response_id", "url", "token", "render", "attempt")

    def __init__(
        self, response_id: str, url: urllib.parse.SplitResult, token: Optional[str], render: Any
    ) -> None:
        self.response_id, self.url, self.token, self.render = response_id, url, token, render
        self.attempt = 0


class WebhookDispatcher:
    """Schedules and sends webhook deliveries; :meth:`counts` says what happened per response."""

    def __init__(
        self,
        *,
        retries: int = 3,
        retry_delay: float = 30.0,
        timeout: float = 30.0,
        workers: int = 4,
    ) -> None:
        self.retries, self.retry_delay, self.timeout = retries, retry_delay, timeout
        self._pool = WorkerPool(workers, "sail-emulator-webhook")
        self._heap: List[Tuple[float, int, _Delivery]] = []
        self._order = itertools.count()
        self._cond = threading.Condition()
        self._faults: List[List[Any]] = []  # [fault, strikes left or None, generator]
        self._counts: Dict[str, Dict[str, int]] = collections.defaultdict(collections.Counter)
        self._closed = False
        self._thread = threading.Thread(
            target=self._run, name="sail-emulator-webhooks", daemon=True
        )
        self._thread.start()

    # -- configuration and counters --------------------------------------------------------------------

    def add_fault(self, fault: WebhookFault) -> None:
        with self._cond:
            self._faults.append([fault, fault.times, random.Random(fault.seed)])

    def clear(self) -> None:
        """Forget pending deliveries, faults and counters."""
        with self._cond:
            self._heap.clear()
            self._faults.clear()
            self._counts.clear()

    @staticmethod
    def empty_counts() -> Dict[str, int]:
        return {key: 0 for key in _COUNT_KEYS}

    def counts(self, response_id: Optional[str] = None) -> Dict[str, Any]:
        """Per response id: ``attempted``, ``succeeded``, ``failed``, ``dropped``, ``duplicated``,
        ``gave_up``; for one id, that id's counters (all zero if none)."""
        keys = _COUNT_KEYS
        with self._cond:
            if response_id is not None:
                found = self._counts.get(response_id, {})
                return {key: found.get(key, 0) for key in keys}
            return {rid: {key: c.get(key, 0) for key in keys} for rid, c in self._counts.items()}

    def totals(self) -> Dict[str, int]:
        totals: Dict[str, int] = collections.Counter()
        for counts in self.counts().values():
            totals.update(counts)
        return dict(totals)

    # -- scheduling ------------------------------------------------------------------------------------

    def schedule(
        self,
        response_id: str,
        url: urllib.parse.SplitResult,
        token: Optional[str],
        delay: float,
        render: Callable[[], Dict[str, Any]],
    ) -> None:
        """Deliver ``render()`` to ``url`` in ``delay`` seconds (``render`` runs at delivery time)."""
        self._push(time.monotonic() + max(0.0, delay), _Delivery(response_id, url, token, render))

    def _push(self, due: float, delivery: _Delivery) -> None:
        with self._cond:
            if self._closed:
                return
            heapq.heappush(self._heap, (due, next(self._order), delivery))
            self._cond.notify()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._closed:
                    now = time.monotonic()
                    if self._heap and self._heap[0][0] <= now:
                        break
                    self._cond.wait(self._heap[0][0] - now if self._heap else None)
                if self._closed:
                    return
                delivery = heapq.heappop(self._heap)[2]
            try:
                self._pool.submit(self._attempt, delivery)
            except RuntimeError:
                return

    def close(self, deadline: float) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._thread.join(max(0.0, deadline - time.monotonic()))
        self._pool.close(deadline)

    # -- one attempt -----------------------------------------------------------------------------------

    def _strike(self) -> Optional[WebhookFault]:
        with self._cond:
            for entry in self._faults:
                fault, left, rng = entry
                if left == 0 or rng.random() >= fault.rate:
                    continue
                if left is not None:
                    entry[1] = left - 1
                return fault
        return None

    def _count(self, response_id: str, key: str) -> None:
        with self._cond:
            self._counts[response_id][key] += 1

    def _attempt(self, delivery: _Delivery) -> None:
        delivery.attempt += 1
        self._count(delivery.response_id, "attempted")
        fault = self._strike()
        if fault is not None and fault.kind == "drop":
            self._count(delivery.response_id, "dropped")
            return
        if fault is not None and fault.kind == "delay":
            time.sleep(fault.delay)
        body = json.dumps(delivery.render(), separators=(",", ":")).encode("utf-8")
        ok = self._post(delivery, body)
        if fault is not None and fault.kind == "duplicate":
            self._count(delivery.response_id, "duplicated")
            self._post(delivery, body)
        if ok:
            self._count(delivery.response_id, "succeeded")
            return
        self._count(delivery.response_id, "failed")
        if delivery.attempt <= self.retries:
            self._push(time.monotonic() + self.retry_delay, delivery)
        else:
            self._count(delivery.response_id, "gave_up")
            _logger.info(
                "webhook for %s not delivered after %d attempts",
                delivery.response_id,
                delivery.attempt,
            )

    def _post(self, delivery: _Delivery, body: bytes) -> bool:
        """One POST; True on a 2xx. Never the token or the URL's query in a log."""
        url = delivery.url
        kind = http.client.HTTPSConnection if url.scheme == "https" else http.client.HTTPConnection
        connection = kind(url.hostname, url.port, timeout=self.timeout)
        headers = {"Content-Type": "application/json", "User-Agent": "sail-emulator-webhook"}
        if delivery.token:
            headers["Authorization"] = f"Bearer {delivery.token}"
        path = (url.path or "/") + (f"?{url.query}" if url.query else "")
        try:
            connection.request("POST", path, body=body, headers=headers)
            reply = connection.getresponse()
            reply.read(1 << 16)
            return 200 <= reply.status < 300
        except (OSError, http.client.HTTPException):
            _logger.debug("webhook attempt for %s failed", delivery.response_id)
            return False
        finally:
            connection.close()
