"""``client.models``: the model catalogue."""
from __future__ import annotations

from typing import TYPE_CHECKING, List

from ..errors import MalformedResponseError
from ..types import Model

if TYPE_CHECKING:  # pragma: no cover
    from ..client import Client

__all__ = ["Models", "list_data"]


def list_data(payload: object, what: str) -> list:
    """The ``data`` array of an ``{"object": "list", "data": [...]}`` reply."""
    data = payload.get("data") if isinstance(payload, dict) else None
    if not isinstance(data, list):
        raise MalformedResponseError("expected a list object with a 'data' array of {}".format(what))
    return data


class Models:
    def __init__(self, client: "Client") -> None:
        self._client = client

    def list(self) -> List[Model]:
        """``GET /models``: every model this API key can use."""
        return [Model.from_dict(item) for item in list_data(self._client._request("GET", "/models"), "models")]
