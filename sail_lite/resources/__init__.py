"""One module per API noun; each is thin: build the body, call the client.

Each module loads on first use (``from sail_lite.resources import Responses``
or a client's first ``client.responses``), so a client that only samples
never imports the LoRA, file or batch code.
"""

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from .batches import Batches
    from .chat import Chat
    from .files import Files
    from .loras import LoRAs
    from .messages import Messages
    from .models import Models
    from .responses import Responses
    from .tokens import Tokens

__all__ = ["Batches", "Chat", "Files", "LoRAs", "Messages", "Models", "Responses", "Tokens"]

_MODULES = {
    "Batches": ".batches",
    "Chat": ".chat",
    "Files": ".files",
    "LoRAs": ".loras",
    "Messages": ".messages",
    "Models": ".models",
    "Responses": ".responses",
    "Tokens": ".tokens",
}


def __getattr__(name: str) -> object:
    if name in _MODULES:
        import importlib

        value = getattr(importlib.import_module(_MODULES[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'sail_lite.resources' has no attribute {name!r}")


def __dir__() -> list:
    return sorted(set(globals()) | set(_MODULES))
