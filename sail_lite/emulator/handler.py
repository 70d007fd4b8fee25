"""HTTP: routes, auth, faults, and wire.md error bodies. Parse -> state -> JSON.

Every reply is written in one ``sendall`` (status line, headers and body
together) on a ``TCP_NODELAY`` socket, so keep-alive clients see no Nagle
stalls. A request body the handler did not read to its end closes the
connection after the reply, so a keep-alive stream never desynchronises.
"""

from __future__ import annotations

import functools
import gc
import json
import logging
import os
import random
import re
import secrets
import socket
import urllib.parse
from http.server import BaseHTTPRequestHandler
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional, Pattern, Tuple

from .archives import ARCHIVE_PREFIX, EXTERNAL_PREFIX, verify
from .faults import AFTER, Fault
from .multipart import BodyReader, boundary_of, parse_multipart
from .params import (
    ApiError,
    InferenceParams,
    fingerprint,
    parse_batch_body,
    parse_chat_body,
    parse_count_tokens_body,
    parse_lora_body,
    parse_lora_patch,
    parse_messages_body,
    parse_response_body,
)
from .state import Organization, ResponseRecord
from .streaming import EventStream, Frame, encode_frame

if TYPE_CHECKING:  # pragma: no cover
    from . import EmulatorServer

__all__ = ["Handler"]

_logger = logging.getLogger("sail_lite.emulator")

_DRAIN_LIMIT = (
    1 << 20
)  # unread bodies up to this size are drained to keep the connection; larger ones close it
_CONTENT_LENGTH = re.compile(r"[0-9]{1,18}\Z")
# One encoder for every reply: json.dumps with options builds a new one per call. It keeps no state between calls.
_ENCODER = json.JSONEncoder(separators=(",", ":"))

RouteResult = Tuple[int, Any, Dict[str, str]]

#: A request body larger than this is followed by handing freed memory back (release_free_memory).
LARGE_BODY = 8 << 20


class _Context:
    """One request, as the route functions see it."""

    __slots__ = ("handler", "match", "query", "org", "api_key")

    def __init__(self, handler: Handler, match: re.Match[str], query: str) -> None:
        self.handler = handler
        self.match = match
        self.query = query
        self.org: Organization
        self.api_key = ""

    def json(self, limit: Optional[int] = None) -> Any:
        return self.handler.read_json(limit)

    def header(self, name: str) -> Optional[str]:
        return self.handler.headers.get(name)


class _Sent(Exception):
    """A route that wrote its own reply (a streamed file): nothing more to send."""


class _Cut(Exception):
    """A stream cut on purpose (a ``truncate`` fault)."""


class _Route:
    __slots__ = ("method", "pattern", "template", "func", "auth")

    def __init__(
        self,
        method: str,
        template: str,
        func: Callable[[Handler, _Context], RouteResult],
        auth: str,
    ) -> None:
        self.method = method
        self.template = template
        regex = re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", template)
        self.pattern: Pattern[str] = re.compile(regex + r"\Z")
        self.func = func
        self.auth = auth  # "key", "admin" or "none"


class Handler(BaseHTTPRequestHandler):
    """The request handler; ``self.emulator`` is the :class:`EmulatorServer`."""

    protocol_version = "HTTP/1.1"
    server_version = "sail-emulator"
    sys_version = ""

    routes: List[_Route] = []  # filled in below, once
    _reader: Optional[BodyReader] = None
    _fault_kind: Optional[str] = None
    large_body = False  # set when a body over LARGE_BODY was read: free memory is handed back after
    emulator: EmulatorServer

    # -- connection lifecycle ------------------------------------------------------------------------------

    @classmethod
    def serve_one(
        cls,
        emulator: EmulatorServer,
        sock: socket.socket,
        rfile: Any,
        wfile: Any,
        client_address: Any,
    ) -> bool:
        """Serve one request whose head is in ``rfile``; True when the connection may be kept.

        The connection loop owns the socket (reads heads, keeps it alive): this
        handler only reads this request's head and body and writes its reply.
        """
        handler = cls.__new__(cls)
        handler.emulator = emulator
        handler.request = handler.connection = sock
        handler.client_address = client_address
        handler.server = None
        handler.rfile, handler.wfile = rfile, wfile
        handler.close_connection = True
        handler.handle_one_request()
        if handler.large_body:
            release_free_memory()
        return not handler.close_connection

    def parse_request(self) -> bool:
        """The stdlib's parse, then the framing rules that keep one request from hiding another."""
        if not super().parse_request():
            return False
        problem = framing_problem(self.headers)
        if problem is None:
            return True
        self.close_connection = True
        error = ApiError(400, problem, code="invalid_framing")
        self._reply(400, error.body(), {}, drain=False)
        return False

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the stdlib's name
        _logger.debug("%s - %s", self.address_string(), format % args)

    def log_request(self, code: Any = "-", size: Any = "-") -> None:
        # Never the query string: a signed archive URL carries its signature there.
        if _logger.isEnabledFor(
            logging.DEBUG
        ):  # every reply comes here: no split when nobody listens
            _logger.debug("%s %s -> %s", self.command, self.path.split("?", 1)[0], code)

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PATCH(self) -> None:
        self._dispatch("PATCH")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    # -- the body ------------------------------------------------------------------------------------------

    def _body_reader(self) -> BodyReader:
        if self._reader is None:
            encoding = (self.headers.get("Transfer-Encoding") or "").strip().lower()
            if encoding not in ("", "chunked", "identity"):
                self.close_connection = True
                raise ApiError(
                    400,
                    f"Transfer-Encoding {encoding[:40]!r} is not supported: send chunked or a Content-Length",
                    code="invalid_body",
                )
            chunked = encoding == "chunked"
            length = None
            if not chunked:
                length_text = self.headers.get("Content-Length")
                if length_text is not None:
                    if not _CONTENT_LENGTH.match(
                        length_text.strip()
                    ):  # ASCII digits only: "²".isdigit() is True
                        self.close_connection = True
                        raise ApiError(
                            400,
                            "Content-Length must be a non-negative integer in ASCII digits",
                            code="invalid_body",
                        )
                    length = int(length_text.strip())
            self._reader = BodyReader(self.rfile, length, chunked, on_first_read=self._continue)
        return self._reader

    def handle_expect_100(self) -> bool:
        # Say "100 Continue" only when a route starts reading the body, i.e. after authentication.
        return True

    def _continue(self) -> None:
        if (self.headers.get("Expect") or "").strip().lower() == "100-continue":
            self.wfile.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def read_json(self, limit: Optional[int] = None) -> Any:
        """The body as JSON, at most ``limit`` bytes (``max_body_bytes``): 413 beyond, 400 if malformed."""
        reader = self._body_reader()
        limit = self.emulator.max_body_bytes if limit is None else limit
        if reader.remaining is not None and reader.remaining > limit:
            self.close_connection = True  # 413 without reading the rest
            raise ApiError(
                413,
                f"the request body is {reader.remaining} bytes; the limit is {limit}",
                code="request_too_large",
            )
        buffer = self._read_body(reader, limit)
        if not buffer or buffer.isspace():
            return {}
        try:
            # Decoded here, so the bytes can go before the parse: a large body is held twice at most.
            text = buffer.decode(json.detect_encoding(buffer), "surrogatepass")
        except (UnicodeDecodeError, LookupError):
            raise ApiError(
                400, "the request body is not valid JSON (not UTF-8)", code="invalid_json"
            ) from None
        del buffer
        try:
            return json.loads(text)
        except RecursionError:
            raise ApiError(
                400, "the request body nests JSON too deeply", code="invalid_json"
            ) from None
        except ValueError as exc:
            raise ApiError(
                400,
                "the request body is not valid JSON ({})".format(getattr(exc, "msg", "not UTF-8")),
                code="invalid_json",
            ) from None

    def _read_body(self, reader: BodyReader, limit: int) -> bytearray:
        """The whole body in one growing buffer (a large one grows in place: realloc remaps pages)."""
        buffer = bytearray()
        while True:
            data = reader.read(min(1 << 20, limit + 1 - len(buffer)))
            if not data:
                return buffer
            buffer += data
            if not self.large_body and len(buffer) > LARGE_BODY:
                self.large_body = True
                unmap_large_blocks()
            if len(buffer) > limit:
                self.close_connection = True
                raise ApiError(
                    413, f"the request body exceeds {limit} bytes", code="request_too_large"
                )

    # -- dispatch ------------------------------------------------------------------------------------------

    def send_error(
        self, code: int, message: Optional[str] = None, explain: Optional[str] = None
    ) -> None:
        """The stdlib's own rejections (bad request line, huge headers) get a wire.md JSON body too."""
        self.close_connection = True
        if (
            code == 501
        ):  # the stdlib's answer to an unknown method: a client error, not a server one
            code, message = 405, "method {!r} is not supported".format((self.command or "")[:20])
        error = ApiError(
            code, message or self.responses.get(code, ("error",))[0], code="invalid_http"
        )
        self._reply(code, error.body(), {}, drain=False)

    def _dispatch(self, method: str) -> None:
        self._reader = None
        path, _, query = self.path.partition("?")
        route, match = self._route(method, path)
        self.emulator.state.count_request(
            "{} {}".format(method, route.template if route else "(unmatched)")
        )
        fault = self.emulator.faults.strike(method, path)
        self._fault_kind = fault.kind if fault is not None else None
        if fault is not None and fault.kind not in AFTER:
            if self._before(fault):
                return
        try:
            if route is None or match is None:
                if any(r.pattern.match(path) for r in self.routes):
                    raise ApiError(
                        405, f"{method} is not allowed on {path[:200]}", code="method_not_allowed"
                    )
                raise ApiError(404, f"no route for {method} {path[:200]}", code="not_found")
            context = _Context(self, match, query)
            self._authenticate(route, context)
            status, body, headers = route.func(self, context)
        except _Sent:
            return
        except ApiError as exc:
            status, body, headers = exc.status, exc.body(), exc.headers
        except (
            RecursionError
        ):  # a body that parsed but nests too deeply for the checks that walk it
            status, body, headers = (
                400,
                ApiError(400, "the request nests too deeply", code="invalid_json").body(),
                {},
            )
        except (
            Exception
        ):  # a bug must not take the server down: a 500 with a body, and the traceback logged
            _logger.exception("emulator error on %s %s", method, path)
            status, body, headers = 500, ApiError(500, "internal emulator error").body(), {}
        if fault is not None and fault.kind == "lose_reply":
            self._finish_body()
            self.close_connection = True
            return
        self._reply(status, body, headers, truncate=fault is not None and fault.kind == "truncate")

    def _route(self, method: str, path: str) -> Tuple[Optional[_Route], Optional[re.Match[str]]]:
        for route in self.routes:
            if route.method == method:
                match = route.pattern.match(path)
                if match:
                    return route, match
        return None, None

    def _before(self, fault: Fault) -> bool:
        """Apply a fault that strikes before the server acts; True when the request is over."""
        if fault.kind == "delay":
            self.emulator.stopping.wait(fault.delay)
            return False
        if fault.kind == "drop":
            self.close_connection = True
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            return True
        status = fault.reply_status
        headers = {}
        if fault.retry_after is not None:
            headers["Retry-After"] = _seconds(fault.retry_after)
        if fault.kind == "html":
            page = f"<html><head><title>{status}</title></head><body><h1>{status} Bad Gateway</h1></body></html>"
            self._reply(status, page.encode("utf-8"), headers, content_type="text/html")
        else:
            message = fault.message or f"injected fault: HTTP {status}"
            error = ApiError(status, message, code=fault.code, headers=headers)
            self._reply(status, error.body(), error.headers)
        return True

    def _finish_body(self) -> None:
        """Drain a small unread body; otherwise the connection closes after this reply."""
        if self.close_connection:
            return  # closing anyway: do not wait for bytes nobody needs
        try:
            reader = self._body_reader()
            if (
                not reader.started
                and not reader.ended
                and (self.headers.get("Expect") or "").strip().lower() == "100-continue"
            ):
                self.close_connection = (
                    True  # the client waits for a 100 we will not send: never ask for the body
                )
                return
            if not reader.drain(_DRAIN_LIMIT):
                self.close_connection = True
        except (ApiError, OSError, ValueError):
            self.close_connection = True

    def _reply(
        self,
        status: int,
        body: Any,
        headers: Dict[str, str],
        *,
        truncate: bool = False,
        content_type: str = "application/json",
        drain: bool = True,
    ) -> None:
        if drain:
            self._finish_body()
        payload = body if isinstance(body, bytes) else _ENCODER.encode(body).encode("utf-8")
        # A request id names a reply in logs; it is no secret, so random.getrandbits, not os.urandom,
        # which releases the GIL: one hand-off per reply among the connection threads.
        lines = [
            "HTTP/1.1 {} {}".format(status, self.responses.get(status, ("",))[0]),
            "Content-Type: " + content_type,
            f"Content-Length: {len(payload)}",
            f"x-request-id: req_{random.getrandbits(64):016x}",
        ]
        lines.extend(f"{name}: {value}" for name, value in headers.items())
        if self.close_connection or truncate:
            lines.append("Connection: close")
        if truncate:
            payload = payload[: len(payload) // 2]
            self.close_connection = True
        if getattr(self, "command", None):
            self.log_request(status)
        self.emulator.link_delay()
        try:
            self.wfile.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + payload)
        except OSError:
            self.close_connection = True

    # -- auth ----------------------------------------------------------------------------------------------

    def _authenticate(self, route: _Route, context: _Context) -> None:
        if route.auth == "none":
            return
        authorization = self.headers.get("Authorization") or ""
        token = authorization[7:].strip() if authorization[:7].lower() == "bearer " else None
        if route.auth == "admin":
            if not token or not secrets.compare_digest(token, self.emulator.admin_token):
                raise ApiError(
                    401,
                    "admin routes need Authorization: Bearer <admin token>",
                    code="invalid_admin_token",
                )
            return
        if token is None and route.template in ("/v1/messages", "/v1/messages/count_tokens"):
            token = self.headers.get("x-api-key")
        if not token:
            raise ApiError(
                401,
                "missing API key: send Authorization: Bearer <your Sail API key>",
                code="missing_api_key",
            )
        org = self.emulator.state.authenticate(token)
        if org is None:
            raise ApiError(401, "invalid API key", code="invalid_api_key")
        context.org = org
        context.api_key = token

    # -- inference, shared by responses, chat, messages ----------------------------------------------------

    def _infer(
        self,
        context: _Context,
        params: InferenceParams,
        route: str,
        key_header: str,
        render: Callable[[ResponseRecord], Dict[str, Any]],
    ) -> RouteResult:
        record, status = self.emulator.state.infer(
            context.org,
            context.api_key,
            params,
            route=route,
            key=self.headers.get(key_header),
            key_header=key_header,
            own_url=self.emulator.url,
            wait=(lambda record: None) if params.stream else self._wait_for,
        )
        if params.stream:
            self._stream(EventStream(route, self.emulator.state, record))
        return status, render(record), {}

    def _stream(self, events: EventStream) -> None:
        """Answer with server-sent events (chunked, so the connection stays usable), then say it was sent.

        The opening events go at once; while the turn runs a ping goes every
        ``stream_ping_interval`` seconds of silence; then the output, token by
        token (``stream_token_interval`` apart). A server stopping meanwhile
        sends an ``error`` event. A ``truncate`` fault cuts the stream halfway
        and closes the connection with no closing events.
        """
        emulator = self.emulator
        self._finish_body()
        head = (
            "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n"
            f"Transfer-Encoding: chunked\r\nx-request-id: req_{random.getrandbits(64):016x}\r\n"
            + ("Connection: close\r\n" if self.close_connection else "")
            + "\r\n"
        )
        self.log_request(200)
        emulator.link_delay()
        try:
            self.wfile.write(head.encode("latin-1"))
            for frame in events.opening():
                self._send_frame(frame)
            if not self._stream_wait(events):
                self._send_frame(events.error("server_stopping", "the emulator is stopping"))
            else:
                self._send_frames(events)
            self.wfile.write(b"0\r\n\r\n")
        except (OSError, _Cut):
            self.close_connection = True  # the client left, or the stream was cut on purpose
        raise _Sent()

    def _send_frames(self, events: EventStream) -> None:
        interval = self.emulator.stream_token_interval
        frames = list(events.rest())
        cut = len(frames) // 2 if self._fault_kind == "truncate" else None
        for index, frame in enumerate(frames):
            if index == cut:
                raise _Cut()
            if interval and index and self.emulator.stopping.wait(interval):
                self._send_frame(events.error("server_stopping", "the emulator is stopping"))
                return
            self._send_frame(frame)

    def _send_frame(self, frame: Frame) -> None:
        data = encode_frame(frame)
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")

    def _stream_wait(self, events: EventStream) -> bool:
        """Wait for the turn to end, pinging on long silences; False if the server is stopping."""
        emulator = self.emulator
        while True:
            remaining = events.record.end_at - emulator.state.clock()
            if remaining <= 0:
                return True
            if emulator.stopping.wait(min(remaining, emulator.stream_ping_interval)):
                return False
            if events.record.end_at - emulator.state.clock() > 0:
                self._send_frame(events.ping())

    def _wait_for(self, record: ResponseRecord) -> None:
        """Hold a synchronous request until its turn ends (bounded by the sync timeout)."""
        emulator = self.emulator
        remaining = record.end_at - emulator.state.clock()
        if remaining <= 0:
            return
        if remaining > emulator.sync_timeout:
            emulator.stopping.wait(emulator.sync_timeout)
            raise ApiError(
                504,
                f"timed out after {emulator.sync_timeout:g} s waiting for a synchronous completion; the response {record.id} "
                "keeps running: use background: true and poll it",
                code="sync_timeout",
                type="timeout_error",
            )
        if emulator.stopping.wait(remaining):
            raise ApiError(503, "the emulator is stopping", code="server_stopping")

    # -- routes --------------------------------------------------------------------------------------------

    def models(self, context: _Context) -> RouteResult:
        data = [
            {"id": m.id, "object": "model", "created": 1735689600, "owned_by": m.owned_by}
            for m in self.emulator.state.models.values()
        ]
        return 200, {"object": "list", "data": data}, {}

    def create_response(self, context: _Context) -> RouteResult:
        state = self.emulator.state
        params = parse_response_body(context.json(), state.models, catalogue=state.catalogue)
        return self._infer(context, params, "responses", "Idempotency-Key", state.response_json)

    def retrieve_response(self, context: _Context) -> RouteResult:
        state = self.emulator.state
        return 200, state.response_json(state.get_response(context.org, context.match["id"])), {}

    def cancel_response(self, context: _Context) -> RouteResult:
        state = self.emulator.state
        record = state.get_response(context.org, context.match["id"])
        state.cancel_response(record)
        return 200, state.response_json(record), {}

    def chat(self, context: _Context) -> RouteResult:
        state = self.emulator.state
        return self._infer(
            context,
            parse_chat_body(context.json(), state.models, state.catalogue),
            "chat",
            "Idempotency-Key",
            state.chat_json,
        )

    def messages(self, context: _Context) -> RouteResult:
        state = self.emulator.state
        return self._infer(
            context,
            parse_messages_body(context.json(), state.models, state.catalogue),
            "messages",
            "anthropic-idempotency-key",
            state.message_json,
        )

    def count_tokens(self, context: _Context) -> RouteResult:
        """Anthropic's token counter: the prompt ``/messages`` would bill, with the byte-level tokenizer."""
        _, prompt = parse_count_tokens_body(context.json(), self.emulator.state.models)
        return 200, {"input_tokens": len(prompt)}, {}

    def create_file(self, context: _Context) -> RouteResult:
        emulator = self.emulator
        boundary = boundary_of(self.headers.get("Content-Type") or "")
        reader = self._body_reader()
        declared = reader.remaining
        if declared is not None and declared > emulator.max_file_bytes + _DRAIN_LIMIT:
            self.close_connection = True  # 413 without reading the rest
            raise ApiError(
                413,
                f"the upload is {declared} bytes; the file limit is {emulator.max_file_bytes}",
                code="file_too_large",
            )
        path = emulator.state.storage_path("file")
        try:
            fields, upload = parse_multipart(
                reader,
                boundary,
                lambda name: open(path, "wb"),
                max_file_bytes=emulator.max_file_bytes,
            )
            if upload is None:
                raise ApiError(
                    400,
                    "the upload has no file part (a part named file, with a filename)",
                    code="invalid_body",
                    param="file",
                )
            purpose = fields.get("purpose")
            if purpose != "lora":
                raise ApiError(
                    400,
                    'purpose must be "lora" (got {!r})'.format((purpose or "")[:40]),
                    param="purpose",
                )
        except BaseException:
            self.close_connection = self.close_connection or not reader.ended
            _remove(path)
            raise
        record = emulator.state.add_file(
            context.org,
            path=path,
            size=upload.size,
            filename=upload.filename,
            purpose=purpose,
            digest=upload.digest,
        )
        return 200, record.to_json(), {}

    def retrieve_file(self, context: _Context) -> RouteResult:
        return (
            200,
            self.emulator.state.get_file(context.org, context.match["id"], "file_id").to_json(),
            {},
        )

    def create_lora(self, context: _Context) -> RouteResult:
        state = self.emulator.state
        lora = state.create_lora(context.org, parse_lora_body(context.json(), state.models))
        return 200, lora.to_json(state.clock()), {}

    def list_loras(self, context: _Context) -> RouteResult:
        state = self.emulator.state
        now = state.clock()
        return (
            200,
            {
                "object": "list",
                "data": [item.to_json(now) for item in state.list_loras(context.org)],
            },
            {},
        )

    def retrieve_lora(self, context: _Context) -> RouteResult:
        state = self.emulator.state
        return 200, state.get_lora(context.org, context.match["name"]).to_json(state.clock()), {}

    def update_lora(self, context: _Context) -> RouteResult:
        state = self.emulator.state
        changes = parse_lora_patch(context.json(), state.models)
        return (
            200,
            state.update_lora(context.org, context.match["name"], changes).to_json(state.clock()),
            {},
        )

    def create_batch(self, context: _Context) -> RouteResult:
        state = self.emulator.state
        body = context.json(self.emulator.max_batch_bytes)
        label, items = parse_batch_body(body, state.models, state.catalogue)
        batch = state.submit_batch(
            context.org,
            context.api_key,
            self.headers.get("Idempotency-Key"),
            fingerprint("batches", body),
            label,
            items,
            own_url=self.emulator.url,
        )
        return 200, state.batch_json(batch, detail=False), {}

    def list_batches(self, context: _Context) -> RouteResult:
        state = self.emulator.state
        query = urllib.parse.parse_qs(context.query)
        limit_text = (query.get("limit") or ["20"])[0]
        if not re.match(r"[0-9]{1,4}\Z", limit_text) or not 1 <= int(limit_text) <= 1000:
            raise ApiError(400, "limit must be an integer from 1 to 1000", param="limit")
        after = (query.get("after_id") or [None])[0]
        batches = state.list_batches(context.org, int(limit_text), after)
        return 200, [state.batch_json(b, detail=False) for b in batches], {}

    def retrieve_batch(self, context: _Context) -> RouteResult:
        state = self.emulator.state
        return (
            200,
            state.batch_json(state.get_batch(context.org, context.match["id"]), detail=True),
            {},
        )

    def batch_item(self, context: _Context) -> RouteResult:
        state = self.emulator.state
        batch = state.get_batch(context.org, context.match["id"])
        response_id = batch.items.get(context.match["custom_id"])
        if response_id is None:
            raise ApiError(
                404,
                "batch {} has no request {!r}".format(batch.id, context.match["custom_id"][:64]),
                code="not_found",
            )
        return 200, state.response_json(state.responses[response_id]), {}

    def archive(self, context: _Context) -> RouteResult:
        state = self.emulator.state
        archive_id = context.match["id"]
        verify(self.emulator.archive_secret, archive_id, context.query, state.clock())
        path = state.archives.get(archive_id)
        if path is None:
            raise ApiError(404, "no such checkpoint archive", code="not_found")
        return self._send_file(path, "application/x-tar")

    def external_weights(self, context: _Context) -> RouteResult:
        state = self.emulator.state
        weights_id, filename = context.match["id"], context.match["file"]
        verify(
            self.emulator.archive_secret, weights_id + "/" + filename, context.query, state.clock()
        )
        content_type = (
            "application/json" if filename.endswith(".json") else "application/octet-stream"
        )
        return self._send_file(state.external_file(weights_id, filename), content_type)

    def _send_file(self, path: str, content_type: str) -> RouteResult:
        """Stream a stored file as a 200 (``sendfile``: no copy of it in memory), then say it was sent."""
        try:
            handle = open(path, "rb")
        except OSError:
            raise ApiError(
                404, "the file is gone (the emulator was reset)", code="not_found"
            ) from None
        with handle:
            size = os.fstat(handle.fileno()).st_size
            self._finish_body()
            head = "HTTP/1.1 200 OK\r\nContent-Type: {}\r\nContent-Length: {}\r\nx-request-id: req_{}\r\n{}\r\n".format(
                content_type,
                size,
                secrets.token_hex(8),
                "Connection: close\r\n" if self.close_connection else "",
            )
            self.log_request(200)
            self.emulator.link_delay()
            try:
                self.wfile.write(head.encode("latin-1"))
                self.connection.sendfile(handle)
            except OSError:
                self.close_connection = True
        raise _Sent()

    def admin_stats(self, context: _Context) -> RouteResult:
        return 200, self.emulator.stats(), {}

    def admin_reset(self, context: _Context) -> RouteResult:
        self.emulator.reset()
        return 200, {"reset": True}, {}

    def admin_faults(self, context: _Context) -> RouteResult:
        faults = self.emulator.faults
        if self.command == "POST":
            body = context.json()
            try:
                faults.add(Fault.from_dict(body if isinstance(body, dict) else {}))
            except (TypeError, ValueError) as exc:
                raise ApiError(400, f"bad fault: {exc}") from None
        elif self.command == "DELETE":
            faults.clear()
        return 200, {"object": "list", "data": [f.to_dict() for f in faults.list()]}, {}


@functools.lru_cache(maxsize=None)  # once per process
def unmap_large_blocks() -> None:
    """Have glibc serve blocks of 1 MiB and more from mmap, so freeing one returns it at once.

    glibc otherwise raises its mmap threshold after the first large free, and
    the next large buffers (a 30 MiB body, its text, its prompt) stay resident.
    """
    try:
        import ctypes  # here: only large requests on glibc need it

        ctypes.CDLL(None).mallopt(-3, 1 << 20)  # M_MMAP_THRESHOLD
    except (OSError, AttributeError):
        pass


def release_free_memory() -> None:
    """Hand freed heap pages back to the system after a large request (glibc only; else nothing).

    glibc raises its mmap threshold after a large free, so the next large
    buffers come from the heap and stay resident once freed: without this a
    30 MiB body would leave about twice its size resident for the process's life.
    """
    gc.collect()  # a reference cycle may still hold the parsed body
    try:
        import ctypes  # here: only large requests on glibc need it

        ctypes.CDLL(None).malloc_trim(0)
    except (OSError, AttributeError):
        pass


def framing_problem(headers: Any) -> Optional[str]:
    """Why a request head's framing is ambiguous (RFC 9112 section 6.3), or None when it is not.

    Content-Length with Transfer-Encoding, two different Content-Lengths, more
    than one Transfer-Encoding, or a header folded onto a second line: each
    lets a proxy and this server disagree on where the request ends.
    """
    if any("\n" in value or "\r" in value for value in headers.values()):
        return (
            "a header is folded onto a second line (obsolete line folding): send each on one line"
        )
    lengths = {value.strip() for value in headers.get_all("Content-Length") or ()}
    encodings = headers.get_all("Transfer-Encoding") or ()
    if len(encodings) > 1:
        return "Transfer-Encoding is sent more than once: send it once"
    if encodings and lengths:
        return "Content-Length and Transfer-Encoding are both sent: send one of them"
    if len(lengths) > 1:
        return "two different Content-Length values are sent: send one"
    return None


def refuse_connection(sock: socket.socket) -> None:
    """Answer a connection over ``max_connections`` with a 503 (best effort, never blocking) before it is closed."""
    error = ApiError(
        503,
        "the emulator is serving its maximum number of connections: retry shortly",
        code="too_many_connections",
        headers={"Retry-After": "1"},
    )
    payload = json.dumps(error.body(), separators=(",", ":")).encode("utf-8")
    head = (
        f"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nContent-Length: {len(payload)}\r\n"
        "Retry-After: 1\r\nConnection: close\r\n\r\n"
    ).encode("latin-1")
    try:
        sock.send(head + payload)  # a fresh socket's send buffer takes it whole
    except OSError:
        pass


def _seconds(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def _remove(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


Handler.routes = [
    _Route("GET", "/v1/models", Handler.models, "key"),
    _Route("POST", "/v1/responses", Handler.create_response, "key"),
    _Route("GET", "/v1/responses/{id}", Handler.retrieve_response, "key"),
    _Route("POST", "/v1/responses/{id}/cancel", Handler.cancel_response, "key"),
    _Route("POST", "/v1/chat/completions", Handler.chat, "key"),
    _Route("POST", "/v1/messages", Handler.messages, "key"),
    _Route("POST", "/v1/messages/count_tokens", Handler.count_tokens, "key"),
    _Route("POST", "/v1/files", Handler.create_file, "key"),
    _Route("GET", "/v1/files/{id}", Handler.retrieve_file, "key"),
    _Route("POST", "/v1/loras", Handler.create_lora, "key"),
    _Route("GET", "/v1/loras", Handler.list_loras, "key"),
    _Route("GET", "/v1/loras/{name}", Handler.retrieve_lora, "key"),
    _Route("PATCH", "/v1/loras/{name}", Handler.update_lora, "key"),
    _Route("POST", "/v1/batches", Handler.create_batch, "key"),
    _Route("GET", "/v1/batches", Handler.list_batches, "key"),
    _Route("GET", "/v1/batches/{id}", Handler.retrieve_batch, "key"),
    _Route("GET", "/v1/batches/{id}/{custom_id}", Handler.batch_item, "key"),
    _Route("GET", ARCHIVE_PREFIX + "{id}.tar", Handler.archive, "none"),
    _Route("GET", EXTERNAL_PREFIX + "{id}/{file}", Handler.external_weights, "none"),
    _Route("GET", "/_emulator/stats", Handler.admin_stats, "admin"),
    _Route("POST", "/_emulator/reset", Handler.admin_reset, "admin"),
    _Route("GET", "/_emulator/faults", Handler.admin_faults, "admin"),
    _Route("POST", "/_emulator/faults", Handler.admin_faults, "admin"),
    _Route("DELETE", "/_emulator/faults", Handler.admin_faults, "admin"),
]
