"""``client.loras``: the LoRA registry (filled in by the files/LoRA work)."""
from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from ..client import Client

__all__ = ["LoRAs"]


class LoRAs:
    def __init__(self, client: "Client") -> None:
        self._client = client
