"""One module per API noun; each is thin: build the body, call the client."""
from .batches import Batches
from .chat import Chat
from .files import Files
from .loras import LoRAs
from .messages import Messages
from .models import Models
from .responses import Responses
from .tokens import Tokens

__all__ = ["Batches", "Chat", "Files", "LoRAs", "Messages", "Models", "Responses", "Tokens"]
