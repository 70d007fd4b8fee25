"""Injected failures, per route, scripted ("the next N calls") or at a seeded rate.

Kinds, and when they strike:

=============  ==============================================================
``error``      before the server acts: ``status`` (503) with a wire.md error
               body, ``code`` and, if set, ``Retry-After``
``html``       before the server acts: ``status`` (502) with an HTML page, as
               a proxy in front of the API would answer
``delay``      waits ``delay`` seconds, then serves the request normally
``drop``       closes the connection before the server acts (nothing happened)
``lose_reply`` the server does the work, then closes without replying: the
               case that idempotency keys exist for
``truncate``   the server does the work, then sends half of the reply body
=============  ==============================================================
"""

from __future__ import annotations

import fnmatch
import random
import threading
from dataclasses import asdict, dataclass, fields
from typing import Any, Dict, List, Mapping, Optional

__all__ = ["Fault", "FaultSet", "FAULT_KINDS", "BEFORE", "AFTER"]

BEFORE = ("error", "html", "delay", "drop")
AFTER = ("lose_reply", "truncate")
FAULT_KINDS = BEFORE + AFTER


@dataclass(frozen=True)
class Fault:
    """One injected failure. ``path`` is a glob on the URL path (``/v1/responses/*``).

    ``times`` bounds how many calls it strikes (None: no bound); ``rate`` is the
    chance that a matching call is struck, drawn from a ``seed``-ed generator.
    """

    kind: str
    method: str = "*"
    path: str = "*"
    times: Optional[int] = None
    rate: float = 1.0
    seed: int = 0
    status: Optional[int] = None
    code: Optional[str] = None
    retry_after: Optional[float] = None
    delay: float = 0.0
    message: Optional[str] = None

    def __post_init__(self) -> None:
        if self.kind not in FAULT_KINDS:
            raise ValueError(
                "fault kind must be one of {}, not {!r}".format(", ".join(FAULT_KINDS), self.kind)
            )
        if self.times is not None and (not isinstance(self.times, int) or self.times < 1):
            raise ValueError("times must be a positive int or None")
        if not 0.0 <= float(self.rate) <= 1.0:
            raise ValueError("rate must be within 0..1")
        if self.status is not None and not 100 <= int(self.status) <= 599:
            raise ValueError("status must be an HTTP status code")
        if float(self.delay) < 0:
            raise ValueError("delay must be >= 0")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Fault:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError("unknown fault fields: {}".format(", ".join(unknown)))
        return cls(**data)

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)

    @property
    def reply_status(self) -> int:
        return (
            int(self.status) if self.status is not None else (502 if self.kind == "html" else 503)
        )

    def matches(self, method: str, path: str) -> bool:
        return fnmatch.fnmatchcase(method, self.method.upper()) and fnmatch.fnmatchcase(
            path, self.path
        )


class _Armed:
    __slots__ = ("fault", "left", "rng")

    def __init__(self, fault: Fault) -> None:
        self.fault = fault
        self.left = fault.times
        self.rng = random.Random(fault.seed)


class FaultSet:
    """The faults armed on one server; thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._armed: List[_Armed] = []
        self._fired = 0

    def add(self, fault: Fault) -> Fault:
        with self._lock:
            self._armed.append(_Armed(fault))
        return fault

    def clear(self) -> None:
        with self._lock:
            self._armed = []

    def list(self) -> List[Fault]:
        with self._lock:
            return [a.fault for a in self._armed]

    @property
    def fired(self) -> int:
        return self._fired

    def reset_counter(self) -> None:
        with self._lock:
            self._fired = 0

    def strike(self, method: str, path: str) -> Optional[Fault]:
        """The fault that strikes this call, if any (first armed match wins)."""
        with self._lock:
            for armed in self._armed:
                if not armed.fault.matches(method, path):
                    continue
                if armed.fault.rate < 1.0 and armed.rng.random() >= armed.fault.rate:
                    continue
                if armed.left is not None:
                    armed.left -= 1
                    if armed.left <= 0:
                        self._armed.remove(armed)
                self._fired += 1
                return armed.fault
        return None
