"""WebhookReceiver: a small stdlib HTTP server that hears Sail's completion webhooks.

A create that carries ``metadata.completion_webhook`` (and ``webhook_token``)
makes Sail ``POST`` the response object to that URL once the response is
finished (wire.md, Completion webhooks). The receiver turns such a delivery
into a signal for whoever watches that response id, so a waiting future can
stop polling densely.

Webhook bodies are not signed. By default a delivery only says "response X
may be done": the watcher is expected to ``GET`` the response (one
authoritative read) rather than believe the body. ``trust_body=True`` hands
the body to the watcher as a :class:`~sail_lite.types.Response` and saves
that GET, at a cost: anyone who can reach the URL with the token can make
the client accept a forged result (the token is only a shared secret: it
travels in the create's metadata, and the server echoes metadata back on
every read of the response), and nothing proves the body was not altered on
the way (plain ``http`` to a public URL). Use it only on a network you trust.

Deliveries may repeat, arrive for ids nobody waits for, or never arrive:
a watcher is called at most once per :meth:`WebhookReceiver.watch`, unknown
ids are answered 2xx and ignored, and a lost webhook must cost the caller
latency only (keep a sparse poll as the safety net). A delivery may also
come before anyone watches its id (a short turn ends before the create's
reply is read): the last ``remember`` such ids are kept, so watching one of
them calls the watcher at once.
"""

from __future__ import annotations

import hmac
import json
import logging
import secrets
import socket
import threading
from collections import OrderedDict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Dict, Optional, Tuple
from urllib.parse import urlsplit

from ._checks import Mapping
from .errors import ConfigurationError, MalformedResponseError
from .types import Response

__all__ = ["DEFAULT_MAX_BODY_BYTES", "DEFAULT_REMEMBER", "WebhookCallback", "WebhookReceiver"]

logger = logging.getLogger(__name__)

#: The largest delivery body accepted (a response object with its output).
DEFAULT_MAX_BODY_BYTES = 8 * 1024 * 1024
#: How many ids delivered while nobody watched them are remembered (see :meth:`WebhookReceiver.watch`).
DEFAULT_REMEMBER = 4096

#: ``callback(response_id, response)``: ``response`` is ``None`` unless the receiver trusts bodies.
WebhookCallback = Callable[[str, Optional[Response]], None]

_WILDCARDS = ("", "0.0.0.0", "::")


class _Server(ThreadingHTTPServer):
    daemon_threads = True  # a stuck sender never keeps the process alive
    allow_reuse_address = True
    request_queue_size = 128  # Sail may deliver many at once; the default 5 resets connections


class _Server6(_Server):
    address_family = socket.AF_INET6


class WebhookReceiver:
    """Hears completion webhooks on ``host:port`` and calls the watcher of each response id once.

    ``port=0`` takes any free port. ``public_url`` is the URL Sail should
    call (default ``http://host:port/sail/webhook``; required when ``host``
    is a wildcard address such as ``0.0.0.0``, or behind a tunnel or proxy);
    only its path is served, on ``host:port``. ``token`` is the bearer token
    Sail must send (generated with :mod:`secrets` when not given); it is
    compared in constant time. A body over ``max_body_bytes`` is refused
    (413) unread; a sender gets ``read_timeout`` seconds per read. The
    last ``remember`` ids delivered while nobody watched them are kept (ids
    only, never bodies), so a delivery that beats its watcher is not lost.

    Answers: 200 for a delivery that parsed (watched or not), 401 for a
    wrong or missing token, 404 for another path, 405 for another method,
    411 without ``Content-Length``, 413 too large, 400 for a body that is
    not a JSON object with an ``id``. The reply is written before the watcher
    runs, so a slow watcher never delays Sail. Watchers run on the
    delivery's handler thread; an exception in one is logged and dropped.

    The server is bound on construction (a busy port fails here, as
    :class:`ConfigurationError`) and serves after :meth:`start` (or
    ``with``). Thread-safe.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        public_url: Optional[str] = None,
        token: Optional[str] = None,
        path: str = "/sail/webhook",
        trust_body: bool = False,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
        read_timeout: float = 10.0,
        remember: int = DEFAULT_REMEMBER,
    ) -> None:
        if token is not None and (
            not isinstance(token, str) or not token or not token.isprintable() or " " in token
        ):
            raise ConfigurationError("token must be a non-empty string without spaces")
        self.token = token if token is not None else secrets.token_urlsafe(32)
        self.trust_body = trust_body
        self.max_body_bytes = max_body_bytes
        if isinstance(remember, bool) or not isinstance(remember, int) or remember < 0:
            raise ConfigurationError(f"remember must be an int >= 0, got {remember!r}")
        self._watchers: Dict[str, WebhookCallback] = {}
        self._remember = remember
        self._early: OrderedDict[str, None] = OrderedDict()  # delivered, nobody watching yet
        self._lock = threading.Lock()
        self._counts = {"delivered": 0, "ignored": 0, "rejected": 0}
        self._thread: Optional[threading.Thread] = None
        self._closed = False
        self._server = _bind(host, port, _handler_class(self, read_timeout))
        self.host = host
        self.port: int = self._server.server_address[1]
        self.public_url = _public_url(public_url, host, self.port, path)
        self.path = urlsplit(self.public_url).path or "/"

    def __repr__(self) -> str:
        return f"WebhookReceiver({self.public_url!r}, watching {self.watching})"

    def __enter__(self) -> WebhookReceiver:
        return self.start()

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    def start(self) -> WebhookReceiver:
        """Serve in a daemon thread (idempotent). Returns the receiver."""
        with self._lock:
            if self._closed:
                raise ConfigurationError("this WebhookReceiver is closed; make a new one")
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._server.serve_forever,
                    kwargs={"poll_interval": 0.1},
                    name=f"sail-webhooks-{self.port}",
                    daemon=True,
                )
                self._thread.start()
        return self

    def close(self) -> None:
        """Stop serving and free the port (idempotent). Watchers are dropped, never called."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            thread, self._thread = self._thread, None
            self._watchers.clear()
            self._early.clear()
        if thread is not None:
            self._server.shutdown()
            thread.join()
        self._server.server_close()

    def metadata(self) -> Dict[str, str]:
        """What to merge into a create's ``metadata``: ``completion_webhook`` and ``webhook_token``."""
        return {"completion_webhook": self.public_url, "webhook_token": self.token}

    def watch(self, response_id: str, callback: WebhookCallback) -> None:
        """Call ``callback(response_id, response)`` on the next delivery for ``response_id``, once.

        ``response`` is ``None`` unless ``trust_body``. Watching again
        replaces the callback. After the call the id is no longer watched:
        a watcher whose authoritative read shows the response still running
        watches it again. If a delivery for ``response_id`` came while
        nobody watched it (and is among the last ``remember``), the callback
        runs now, in this thread, with ``None`` (the body was not kept): the
        watcher's authoritative read settles it.
        """
        with self._lock:
            early = self._early.pop(response_id, False) is None
            if not early:
                self._watchers[response_id] = callback
        if early:
            self.run(callback, response_id, None)

    def unwatch(self, response_id: str) -> bool:
        """Stop watching ``response_id``; True if it was watched."""
        with self._lock:
            return self._watchers.pop(response_id, None) is not None

    @property
    def watching(self) -> int:
        """How many response ids have a watcher."""
        with self._lock:
            return len(self._watchers)

    def counts(self) -> Dict[str, int]:
        """Deliveries so far: ``delivered`` (a watcher called), ``ignored`` (2xx, nobody waited
        or already called; a later :meth:`watch` of a remembered one still calls it), ``rejected``
        (answered 4xx)."""
        with self._lock:
            return dict(self._counts)

    # -- called by the request handler

    def authorized(self, header: Optional[str]) -> bool:
        expected = f"Bearer {self.token}".encode()
        return hmac.compare_digest((header or "").encode("utf-8", "replace"), expected)

    def note_rejected(self) -> None:
        with self._lock:
            self._counts["rejected"] += 1

    def take(self, body: bytes) -> Tuple[Optional[str], Optional[Response]]:
        """Parse a delivery: (its response id, the trusted response or ``None``).

        Raises :class:`MalformedResponseError` for a body that is not a JSON
        object with an ``id`` string (or, trusted, not a response).
        """
        try:
            payload = json.loads(body.decode("utf-8"))
        except (UnicodeDecodeError, ValueError, RecursionError):
            raise MalformedResponseError("webhook body is not JSON") from None
        if not isinstance(payload, Mapping) or not isinstance(payload.get("id"), str):
            raise MalformedResponseError("webhook body is not an object with an 'id'")
        response = Response.from_dict(payload) if self.trust_body else None
        return payload["id"], response

    def claim(self, response_id: str, response: Optional[Response]) -> Optional[WebhookCallback]:
        """Take the watcher of ``response_id`` (it is called at most once), or count an ignore."""
        with self._lock:
            callback = None
            if response is None or response.is_terminal:  # a trusted non-final body says nothing
                callback = self._watchers.pop(response_id, None)
                if callback is None and self._remember:
                    self._early[response_id] = None
                    self._early.move_to_end(response_id)
                    if len(self._early) > self._remember:
                        self._early.popitem(last=False)
            self._counts["delivered" if callback is not None else "ignored"] += 1
        return callback

    @staticmethod
    def run(callback: WebhookCallback, response_id: str, response: Optional[Response]) -> None:
        """Call a claimed watcher; an exception is logged, never raised to the sender."""
        try:
            callback(response_id, response)
        except Exception:
            logger.exception("a webhook watcher for %s raised", response_id)


def _bind(host: str, port: int, handler: type) -> ThreadingHTTPServer:
    server_class = _Server6 if ":" in host else _Server
    try:
        return server_class((host, port), handler)
    except (OSError, OverflowError, ValueError) as exc:
        raise ConfigurationError(f"cannot listen for webhooks on {host}:{port}: {exc}") from None


def _public_url(public_url: Optional[str], host: str, port: int, path: str) -> str:
    if public_url is None:
        if host in _WILDCARDS:
            raise ConfigurationError(
                f"listening on {host or 'every address'}, pass public_url= (the URL Sail should call)"
            )
        shown = f"[{host}]" if ":" in host else host
        return f"http://{shown}:{port}{path if path.startswith('/') else '/' + path}"
    parts = urlsplit(public_url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigurationError(f"public_url must be an http(s) URL, not {public_url!r}")
    return public_url


def _handler_class(receiver: WebhookReceiver, read_timeout: float) -> type:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        timeout = read_timeout
        server_version = "sail-lite-webhooks"
        sys_version = ""

        def do_POST(self) -> None:
            status = self._check()
            if status != 200:
                receiver.note_rejected()
                self._reply(status)
                return
            try:
                response_id, response = receiver.take(self._body)
            except MalformedResponseError:
                receiver.note_rejected()
                self._reply(400)
                return
            # claimed before the reply (a sender that hears 200 finds it taken), called after
            # it (Sail never waits on a watcher)
            callback = receiver.claim(response_id, response)
            self._reply(200)
            if callback is not None:
                receiver.run(callback, response_id, response)

        def _check(self) -> int:
            if urlsplit(self.path).path != receiver.path:
                return 404
            if not receiver.authorized(self.headers.get("Authorization")):
                return 401
            length = self.headers.get("Content-Length")
            if length is None:
                return 411
            if not length.isdigit():
                return 400
            if int(length) > receiver.max_body_bytes:
                return 413
            self._body = self.rfile.read(int(length))
            return 200 if len(self._body) == int(length) else 400

        def _reply(self, status: int) -> None:
            body = json.dumps({"ok": status == 200}).encode()
            self.send_response(status)
            if status == 401:
                self.send_header("WWW-Authenticate", "Bearer")
            if status != 200:
                self.close_connection = True  # an unread body must not be taken for a request
                self.send_header("Connection", "close")
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            self.wfile.flush()

        def _refuse(self) -> None:
            receiver.note_rejected()
            self._reply(405)

        do_GET = do_PUT = do_DELETE = do_PATCH = _refuse

        def log_message(self, format: str, *args: Any) -> None:
            logger.debug("webhook %s: " + format, self.address_string(), *args)

    return Handler
