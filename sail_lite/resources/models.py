"""``client.models``: the model catalogue."""

from __future__ import annotations

from typing import TYPE_CHECKING, List, Mapping, Optional

from ..types import Model
from ._common import list_data

if TYPE_CHECKING:  # pragma: no cover
    from .._requester import Requester

__all__ = ["Models"]


class Models:
    def __init__(self, requester: Requester) -> None:
        self._requester = requester

    def list(
        self,
        *,
        timeout: Optional[float] = None,
        deadline: Optional[float] = None,
        extra_headers: Optional[Mapping[str, str]] = None,
    ) -> List[Model]:
        """``GET /models``: every model this API key can use."""
        call = self._requester.call(timeout=timeout, deadline=deadline, extra_headers=extra_headers)
        return [
            Model.from_dict(item)
            for item in list_data(self._requester.request("GET", "/models", call), "models")
        ]
