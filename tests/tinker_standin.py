"""Stand-ins for tinker 0.38 and tinker-cookbook 0.6.1, for tests that run without them installed.

- :func:`cookbook_completers`: tinker-cookbook's ``completers`` module (the
  real one when it imports, else :class:`StandInTokensWithLogprobs` and
  :class:`StandInTokenCompleter` under ``tinker_cookbook.completers``, as
  0.6.1 defines them), and :class:`StandInModelInput` for ``tinker.ModelInput``:
  the completer's sync, async and map paths run in the default test run.

- :class:`StorageServer`: a real HTTP server (stdlib, loopback) that serves a
  checkpoint's files under signed, expiring URLs, as Tinker's bucket does:
  ``Range`` requests (or not, to test servers that ignore them), an
  injectable clock, and counters of what it served. :meth:`StorageServer.publish`
  returns what ``EmulatorServer.publish_external_weights`` returns:
  ``{"tinker_path", "urls": {file: url}, "expires": iso-str}``.
- :class:`StandInRestClient` / :class:`StandInServiceClient`: the method
  names and return types of tinker 0.38's ``RestClient``
  (``get_external_weights_urls(tinker_path) -> APIFuture[ExternalWeightsUrlsResponse]``,
  ``delete_checkpoint_from_tinker_path(tinker_path) -> APIFuture[None]``);
  the Tinker tier checks them against the installed class.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import hmac
import json
import os
import re
import secrets
import threading
import time
import types
import urllib.parse
from concurrent.futures import Future
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Dict, List, Optional, Tuple

FILES = ("adapter_config.json", "adapter_model.safetensors")


@dataclass
class StandInTokensWithLogprobs:
    """tinker_cookbook.completers.TokensWithLogprobs (0.6.1): the same fields, defaults and property."""

    tokens: List[int]
    maybe_logprobs: Optional[List[float]]
    stop_reason: str = "stop"
    sequence_id: Optional[str] = None
    prompt_cache_hit_tokens: int = 0

    @property
    def logprobs(self) -> List[float]:
        if self.maybe_logprobs is None:
            raise ValueError("Logprobs are not available")
        return self.maybe_logprobs


class StandInTokenCompleter:
    """tinker_cookbook.completers.TokenCompleter: the abstract ``async __call__``."""

    async def __call__(self, model_input, stop, *, max_tokens=None):
        raise NotImplementedError


class StandInModelInput:
    """tinker.ModelInput, token chunks only: ``from_ints`` and ``to_ints``."""

    def __init__(self, tokens):
        self.tokens = list(tokens)

    @classmethod
    def from_ints(cls, tokens):
        return cls(tokens)

    def to_ints(self):
        return list(self.tokens)


def cookbook_completers() -> Tuple[types.ModuleType, Dict[str, types.ModuleType]]:
    """``(completers module, modules to put in sys.modules)``: the real cookbook's, or the stand-in's.

    With tinker-cookbook installed the second item is empty; otherwise it
    maps ``tinker_cookbook`` and ``tinker_cookbook.completers`` to stand-in
    modules, for a test to install (and take out again) with monkeypatch.
    """
    try:
        from tinker_cookbook import completers

        return completers, {}
    except ImportError:
        pass
    package = types.ModuleType("tinker_cookbook")
    package.__path__ = []
    completers = types.ModuleType("tinker_cookbook.completers")
    completers.TokensWithLogprobs = StandInTokensWithLogprobs
    completers.TokenCompleter = StandInTokenCompleter
    package.completers = completers
    return completers, {"tinker_cookbook": package, "tinker_cookbook.completers": completers}


def model_input_type():
    """``tinker.ModelInput``, or :class:`StandInModelInput` without tinker."""
    try:
        import tinker

        return tinker.ModelInput
    except ImportError:
        return StandInModelInput


class StandInFuture:
    """tinker's APIFuture: ``.result()`` blocks, ``await`` works too."""

    def __init__(self, value=None, error=None):
        self._future = Future()
        if error is not None:
            self._future.set_exception(error)
        else:
            self._future.set_result(value)

    def result(self, timeout=None):
        return self._future.result(timeout)

    def __await__(self):
        return asyncio.wrap_future(self._future).__await__()


@dataclass
class StandInUrlsResponse:
    """tinker.types.ExternalWeightsUrlsResponse: ``urls`` (file -> signed URL) and ``expires`` (datetime)."""

    urls: Dict[str, str]
    expires: dt.datetime


@dataclass
class StandInSaveResponse:
    """tinker.types.SaveWeightsExternalResponse."""

    path: str
    type: Optional[str] = "save_weights_external"


class StandInRestClient:
    def __init__(self, storage: StorageServer):
        self.storage = storage
        self.calls = []

    def get_external_weights_urls(self, tinker_path: str) -> StandInFuture:
        self.calls.append(("urls", tinker_path))
        published = self.storage.sign(tinker_path)
        return StandInFuture(
            StandInUrlsResponse(published["urls"], dt.datetime.fromisoformat(published["expires"]))
        )

    def delete_checkpoint_from_tinker_path(self, tinker_path: str) -> StandInFuture:
        self.calls.append(("delete", tinker_path))
        self.storage.checkpoints.pop(tinker_path)
        return StandInFuture(None)


class StandInServiceClient:
    def __init__(self, storage: StorageServer):
        self.rest = StandInRestClient(storage)

    def create_rest_client(self) -> StandInRestClient:
        return self.rest


class ManualClock:
    def __init__(self, now: float = 1_900_000_000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now

    def utc(self) -> dt.datetime:
        return dt.datetime.fromtimestamp(self.now, dt.timezone.utc)


class StorageServer:
    """A signed-URL file server on 127.0.0.1 (a context manager)."""

    def __init__(self, *, ranges: bool = True, clock=None, ttl: float = 3600.0):
        self.ranges = ranges
        self.clock = clock or time.time
        self.ttl = ttl
        self.secret = secrets.token_bytes(16)
        self.checkpoints: Dict[str, Dict[str, bytes]] = {}
        self.served: Dict[str, int] = {}  # bytes sent per file name
        self.requests = []  # (file name, Range header or None, status)
        self.drop_after: Optional[int] = None  # cut the next weights GET after this many bytes
        self._lock = threading.Lock()
        storage = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_GET(self):
                storage._serve(self)

        class Server(ThreadingHTTPServer):
            def handle_error(self, request, client_address):
                pass  # a client that closes early (a header-only read) is expected here

        self._server = Server(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        # A short poll interval: shutdown() waits for one, and every test stops a server.
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._server.shutdown()
        self._server.server_close()

    # -- publishing ------------------------------------------------------------------------

    def publish(
        self,
        config,
        weights: bytes,
        *,
        tinker_path: Optional[str] = None,
        ttl: Optional[float] = None,
        folder: str = "",
    ) -> dict:
        """Store a checkpoint; return ``{"tinker_path", "urls", "expires"}`` (the emulator's shape)."""
        tinker_path = tinker_path or f"tinker://run-{secrets.token_hex(4)}/external_weights/step-1"
        data = config if isinstance(config, bytes) else json.dumps(config, sort_keys=True).encode()
        self.checkpoints[tinker_path] = {folder + FILES[0]: data, folder + FILES[1]: weights}
        return self.sign(tinker_path, ttl=ttl)

    def publish_folder(self, adapter_dir: str, **kwargs) -> dict:
        with open(os.path.join(adapter_dir, FILES[0]), "rb") as handle:
            config = handle.read()
        with open(os.path.join(adapter_dir, FILES[1]), "rb") as handle:
            weights = handle.read()
        return self.publish(config, weights, **kwargs)

    def sign(self, tinker_path: str, ttl: Optional[float] = None) -> dict:
        files = self.checkpoints[tinker_path]
        expires = int(self.clock() + (self.ttl if ttl is None else ttl))
        key = hashlib.sha256(tinker_path.encode()).hexdigest()[:16]
        urls = {}
        for name in files:
            path = f"/ew/{key}/{urllib.parse.quote(name)}"
            sig = hmac.new(self.secret, f"{path}:{expires}".encode(), hashlib.sha256).hexdigest()
            urls[name] = "{}{}?{}".format(
                self.url, path, urllib.parse.urlencode({"expires": expires, "sig": sig})
            )
        return {
            "tinker_path": tinker_path,
            "urls": urls,
            "expires": dt.datetime.fromtimestamp(expires, dt.timezone.utc).isoformat(),
        }

    # -- serving ---------------------------------------------------------------------------

    def _find(self, path: str):
        for tinker_path, files in self.checkpoints.items():
            key = hashlib.sha256(tinker_path.encode()).hexdigest()[:16]
            for name, data in files.items():
                if path == f"/ew/{key}/{urllib.parse.quote(name)}":
                    return name, data
        return None, None

    def _error(self, handler, status, code, message):
        body = json.dumps({"error": {"code": code, "message": message}}).encode()
        handler.send_response(status)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)

    def _serve(self, handler):
        parsed = urllib.parse.urlsplit(handler.path)
        query = urllib.parse.parse_qs(parsed.query)
        expires = (query.get("expires") or ["0"])[0]
        sig = (query.get("sig") or [""])[0]
        want = hmac.new(
            self.secret, f"{parsed.path}:{expires}".encode(), hashlib.sha256
        ).hexdigest()
        name, data = self._find(parsed.path)
        range_header = handler.headers.get("Range")
        if not hmac.compare_digest(sig, want):
            return self._error(handler, 403, "invalid_signature", "bad signature")
        if int(expires) < self.clock():
            with self._lock:
                self.requests.append((name, range_header, 403))
            return self._error(handler, 403, "url_expired", "the signed URL expired")
        if data is None:
            return self._error(handler, 404, "not_found", "no such file")
        start, end, status = 0, len(data) - 1, 200
        match = re.match(r"bytes=(\d+)-(\d*)\Z", range_header or "")
        if self.ranges and match:
            start = int(match.group(1))
            end = min(int(match.group(2)) if match.group(2) else len(data) - 1, len(data) - 1)
            status = 206
        with self._lock:
            self.requests.append((name, range_header, status))
        handler.send_response(status)
        handler.send_header("Content-Type", "application/octet-stream")
        handler.send_header("Content-Length", str(end - start + 1))
        if status == 206:
            handler.send_header("Content-Range", f"bytes {start}-{end}/{len(data)}")
        handler.end_headers()
        drop = self.drop_after if name.endswith(FILES[1]) and status == 200 else None
        if drop is not None:
            self.drop_after = None
        position = start
        try:
            while position <= end:
                chunk = data[position : min(position + 65536, end + 1)]
                if drop is not None and position + len(chunk) > start + drop:
                    chunk = chunk[: max(start + drop - position, 0)]
                    handler.wfile.write(chunk)
                    handler.wfile.flush()
                    handler.close_connection = True
                    handler.connection.shutdown(2)
                    return
                # Counted before it is written: a test that reads the counter as soon as its client
                # returns must not race the write's return in this thread.
                with self._lock:
                    self.served[name] = self.served.get(name, 0) + len(chunk)
                handler.wfile.write(chunk)
                position += len(chunk)
        except (BrokenPipeError, ConnectionResetError):
            handler.close_connection = True
