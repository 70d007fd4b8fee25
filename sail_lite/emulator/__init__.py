"""``sail_lite.emulator``: an offline, Sail-compatible server (standard library only).

Run a pipeline, a test suite or a benchmark with no network and no account::

    from sail_lite import Client
    from sail_lite.emulator import EmulatorServer

    with EmulatorServer() as server:
        client = Client(server.api_key, base_url=server.base_url)
        print(client.tokens.sample([1, 2, 3], model="moonshotai/Kimi-K2.6", max_tokens=8))

or from a shell: ``python -m sail_lite.emulator --port 8080`` (:class:`EmulatorProcess` runs
that in a child process, for a benchmark or a crash test).

It follows ``wire.md``: models, responses (sync and background, clock-derived
statuses per completion window), chat completions, messages, streamed file
uploads, LoRAs with real validation of the uploaded files, batches,
idempotency keys, several organizations, Tinker checkpoint archives and
external weights under signed expiring URLs, injectable faults (:class:`Fault`) and counters
(:meth:`EmulatorServer.stats`). Layout: ``state`` (memory), ``model`` (the
reference sampler), ``params`` (request checks), ``handler`` (HTTP),
``faults``, ``archives`` (Tinker checkpoints), ``multipart`` (streaming
uploads).
"""

from __future__ import annotations

import json
import logging
import math
import os
import secrets
import socket
import threading
import time
from http.server import ThreadingHTTPServer
from typing import Any, Callable, Dict, Iterable, Mapping, Optional, Sequence

from .archives import EXTERNAL_FILES, expires_iso, pack_adapter, sign, sign_external
from .faults import Fault, FaultSet
from .handler import Handler, refuse_connection
from .model import EOS, VOCAB
from .params import ModelSpec, canonical_window
from .process import EmulatorProcess
from .state import DEFAULT_IDEMPOTENCY_RETENTION, DEFAULT_MODELS, TURN_PRESETS, State

_logger = logging.getLogger(__name__)

__all__ = [
    "EmulatorServer",
    "EmulatorProcess",
    "Fault",
    "FaultSet",
    "ModelSpec",
    "DEFAULT_MODELS",
    "TURN_PRESETS",
    "EOS",
    "VOCAB",
]


class _HTTPServer(ThreadingHTTPServer):
    """One thread per connection, each tracked by the :class:`EmulatorServer` so ``stop()`` can join it.

    The stdlib does not track daemon threads (``socketserver._Threads`` skips
    them), so ``server_close()`` alone would return while handlers still run.
    Threads stay daemonic so a wedged client can never keep the interpreter alive.
    """

    daemon_threads = True
    block_on_close = False  # we join our own threads, with a bound
    request_queue_size = 1024  # many clients connect at once in benchmarks and soaks
    allow_reuse_address = True

    def __init__(self, address: Any, emulator: EmulatorServer) -> None:
        self.emulator = emulator
        super().__init__(address, Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self.emulator._admit(request):
            refuse_connection(request)
            self.shutdown_request(request)
            return
        thread = threading.Thread(
            target=self._serve_connection,
            args=(request, client_address),
            name="sail-emulator-connection",
            daemon=True,
        )
        self.emulator._track(thread, request)
        try:
            thread.start()
        except BaseException:
            self.emulator._untrack(thread)
            self.shutdown_request(request)
            raise

    def _serve_connection(self, request: Any, client_address: Any) -> None:
        try:
            self.process_request_thread(request, client_address)
        finally:
            self.emulator._untrack(threading.current_thread())

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that vanished mid-reply is routine; never a traceback on stderr.
        _logger.debug("connection error", exc_info=True)


class EmulatorServer:
    """A Sail-compatible HTTP/1.1 server on ``host:port`` (127.0.0.1, a free port by default).

    Use it as a context manager (or :meth:`start` / :meth:`stop`). Options:

    - ``seed``: the reference model's seed (same seed and request: same output);
    - ``windows``: the completion-window catalogue (wire.md). ``"current"``
      (the default, the service today): ``asap``, ``balanced``, ``flex``, with
      ``standard`` an alias of ``balanced``; ``priority`` and ``15m`` are a 400
      ``unsupported_completion_window``; ``asap`` with ``background: true`` is
      a 400 ``asap_background_unsupported``. ``"legacy"`` (the older docs and
      the seed): ``asap``, ``priority`` (~1 min), ``standard`` (~5 min; alias
      ``balanced``), ``flex``, and background requests may use ``asap``. Both:
      a LoRA cannot use ``asap``; ``flex`` needs ``background: true``; batch
      items default to ``standard``/``balanced`` and accept only that or ``flex``;
    - ``preset``: ``"fast"`` (turns of tens of milliseconds) or ``"realistic"``
      (priority ~60 s, balanced/standard ~300 s, flex ~30 min); ``turn_times``
      overrides per window, by any name of either catalogue (``{"balanced": 2}``;
      ``standard`` sets ``balanced``), so one configuration serves both;
    - ``api_key`` / ``organizations``: the default organization's key, and
      more organizations as ``{org_id: [keys]}``; ``admin_token`` guards
      ``/_emulator/`` routes;
    - ``max_file_bytes`` (uploads, 413 beyond; streamed to disk),
      ``max_body_bytes`` (JSON bodies, 413 beyond: 32 MiB by default, room for
      the largest valid raw-token prompt of 2,000,000 ids), ``max_batch_bytes``
      (``POST /batches``, 256 MiB as wire.md), ``sync_timeout`` (a synchronous
      request waiting longer gets 504), ``validation_time`` (seconds a LoRA
      validation takes), ``models``;
    - ``unverified_models``: LoRA validations on these models end
      ``unverified`` (the service could not check them; wire.md says such a
      LoRA stays usable), so clients can be tested against that status;
    - ``max_connections``: connections served at once (each holds a thread);
      one more is answered ``503`` and closed; ``idle_timeout``: seconds a
      connection may stay silent (between requests, or in the middle of one)
      before it is closed; ``stop_timeout``: the bound on :meth:`stop`;
    - ``idempotency_retention``: seconds an idempotency key is remembered
      from its first use, by ``clock`` (default 24 h; wire.md names no
      window). Within it a retry with the key is replayed; after it the key
      is forgotten and the same request runs (and counts in
      ``inference_runs``) again, as a real server past its window does.

    Tinker checkpoints, served from the emulator itself under signed URLs
    that expire by the server's clock (403 ``url_expired`` after, 403
    ``invalid_signature`` if tampered with): :meth:`publish_tinker_checkpoint`
    / :meth:`publish_tinker_archive` (a tar, as tinker < 0.36 exported), and
    :meth:`publish_external_weights` (tinker 0.38 ``save_weights_external``):
    ``publish_external_weights(config, weights, *, tinker_path=None,
    ttl_seconds=3600.0) -> {"tinker_path": "tinker://<run>/external_weights/<name>",
    "urls": {"adapter_config.json": url, "adapter_model.safetensors": url},
    "expires": "<ISO-8601 UTC>"}``, the shape of tinker's
    ``RestClient.get_external_weights_urls``; :meth:`external_weights_urls`
    signs fresh URLs for a published path, as each tinker call does. Files are
    streamed (``sendfile``), never held in memory.
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        seed: int = 0,
        preset: str = "fast",
        turn_times: Optional[Mapping[str, float]] = None,
        windows: str = "current",
        api_key: Optional[str] = None,
        organizations: Optional[Mapping[str, Sequence[str]]] = None,
        admin_token: Optional[str] = None,
        max_file_bytes: int = 100 * 1024**3,
        max_body_bytes: int = 32 * 1024**2,
        max_batch_bytes: int = 256 * 1024**2,
        sync_timeout: float = 60.0,
        validation_time: float = 0.05,
        models: Optional[Iterable[ModelSpec]] = None,
        clock: Callable[[], float] = time.time,
        unverified_models: Iterable[str] = (),
        max_connections: int = 512,
        idle_timeout: float = 60.0,
        stop_timeout: float = 10.0,
        idempotency_retention: float = DEFAULT_IDEMPOTENCY_RETENTION,
    ) -> None:
        if preset not in TURN_PRESETS:
            raise ValueError("preset must be one of {}".format(", ".join(TURN_PRESETS)))
        turns = dict(TURN_PRESETS[preset])
        for name, seconds in (turn_times or {}).items():
            turns[canonical_window(name)] = seconds  # ValueError for a name no catalogue knows
        self._address = (host, port)
        self.api_key = api_key or "sk_emulator_" + secrets.token_hex(16)
        self.admin_token = admin_token or "admin_" + secrets.token_hex(16)
        self.archive_secret = secrets.token_bytes(32)
        self.max_file_bytes = max_file_bytes
        self.max_body_bytes = max_body_bytes
        self.max_batch_bytes = max_batch_bytes
        self.sync_timeout = sync_timeout
        orgs: Dict[str, Sequence[str]] = {"org_default": [self.api_key]}
        orgs.update(organizations or {})
        self.state = State(
            seed=seed,
            turn_times=turns,
            models=tuple(models or DEFAULT_MODELS),
            organizations=orgs,
            validation_time=validation_time,
            clock=clock,
            unverified_models=unverified_models,
            windows=windows,
            idempotency_retention=idempotency_retention,
        )
        self.faults = FaultSet()
        self.stopping = threading.Event()
        self._server: Optional[_HTTPServer] = None
        self._thread: Optional[threading.Thread] = None
        if max_connections < 1:
            raise ValueError("max_connections must be at least 1")
        if not idle_timeout > 0:
            raise ValueError("idle_timeout must be a positive number of seconds")
        self.max_connections = max_connections
        self.idle_timeout = float(idle_timeout)
        self.stop_timeout = float(stop_timeout)
        self._connections: Dict[threading.Thread, socket.socket] = {}
        self._connections_lock = threading.Lock()

    # -- lifecycle -----------------------------------------------------------------------------------------

    def start(self) -> EmulatorServer:
        """Bind and serve in a background thread; returns self."""
        if self._server is not None:
            return self
        self.stopping.clear()
        self._server = _HTTPServer(self._address, self)
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.02},
            name="sail-emulator",
            daemon=True,
        )
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        """Serve in the calling thread until interrupted (``python -m sail_lite.emulator``)."""
        self.start()
        try:
            while self._thread is not None and self._thread.is_alive():
                self._thread.join(0.5)
        finally:
            self.stop()

    def stop(self) -> None:
        """Stop serving, close every connection, join every connection thread, delete stored files.

        In-flight requests are told the server is stopping (a synchronous
        request waiting for its turn gets a 503) and may still write their
        reply: the read side of every connection is shut first, so idle
        keep-alive connections end at once. Threads still running after
        ``stop_timeout / 2`` seconds have their sockets closed outright; a
        thread still alive after ``stop_timeout`` is logged and left (it is a
        daemon, so it cannot keep the process alive).
        """
        server, self._server = self._server, None
        if server is None:
            return
        self.stopping.set()
        server.shutdown()  # no more accepts: the set of connection threads can only shrink from here
        server.server_close()
        if self._thread is not None:
            self._thread.join()
        deadline = time.monotonic() + self.stop_timeout
        self._shutdown_connections(socket.SHUT_RD)
        if not self._join_connections(time.monotonic() + self.stop_timeout / 2):
            self._shutdown_connections(socket.SHUT_RDWR)
            if not self._join_connections(deadline):
                _logger.warning(
                    "%d emulator connection threads did not stop within %g s",
                    len(self._connections),
                    self.stop_timeout,
                )
        self.state.close()

    def _shutdown_connections(self, how: int) -> None:
        with self._connections_lock:
            sockets = list(self._connections.values())
        for sock in sockets:
            try:
                sock.shutdown(how)
            except OSError:
                pass  # already closed by its thread

    def _join_connections(self, deadline: float) -> bool:
        """Join every connection thread until ``deadline``; True when all have ended."""
        with self._connections_lock:
            threads = list(self._connections)
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        with self._connections_lock:
            return not any(t.is_alive() for t in self._connections)

    def _admit(self, sock: socket.socket) -> bool:
        """False when ``max_connections`` connections are already open (the caller refuses this one)."""
        with self._connections_lock:
            admitted = len(self._connections) < self.max_connections and not self.stopping.is_set()
        if not admitted:
            self.state.count("refused_connections")
        return admitted

    def _track(self, thread: threading.Thread, sock: socket.socket) -> None:
        with self._connections_lock:
            self._connections[thread] = sock

    def _untrack(self, thread: threading.Thread) -> None:
        with self._connections_lock:
            self._connections.pop(thread, None)

    @property
    def open_connections(self) -> int:
        """Connections being served right now (each holds one thread)."""
        with self._connections_lock:
            return len(self._connections)

    def __enter__(self) -> EmulatorServer:
        return self.start()

    def __exit__(self, *exc_info: Any) -> None:
        self.stop()

    def __repr__(self) -> str:
        where = self.url if self._server is not None else "stopped"
        return f"EmulatorServer({where})"

    def connection_opened(self, sock: socket.socket) -> None:
        self.state.count("connections")

    # -- addresses -----------------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """``http://host:port`` (the server root)."""
        if self._server is None:
            raise RuntimeError(
                "the emulator is not running: call start() or use it as a context manager"
            )
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def base_url(self) -> str:
        """The API root a client uses (ends in ``/v1``)."""
        return self.url + "/v1"

    # -- control -------------------------------------------------------------------------------------------

    def stats(self) -> Dict[str, Any]:
        """Counters: inference runs (total and per idempotency key), requests per route, connections,
        cancellations, faults fired, and responses by current status."""
        stats = self.state.stats()
        stats["faults_fired"] = self.faults.fired
        return stats

    def reset(self) -> None:
        """Forget every object, counter and fault; keep keys and organizations from the constructor."""
        self.state.reset()
        self.faults.clear()
        self.faults.reset_counter()

    def add_organization(self, org_id: Optional[str] = None, api_key: Optional[str] = None) -> str:
        """Add an organization (or a key to one); returns its API key."""
        return self.state.add_organization(org_id, api_key)

    def publish_tinker_checkpoint(
        self, adapter_dir: os.PathLike[str] | str, *, ttl_seconds: float = 3600.0
    ) -> str:
        """Pack a PEFT folder as a Tinker checkpoint archive; return its signed URL, valid ``ttl_seconds``."""
        return self.publish_tinker_archive(
            pack_adapter(os.fspath(adapter_dir)), ttl_seconds=ttl_seconds
        )

    def publish_tinker_archive(self, data: bytes, *, ttl_seconds: float = 3600.0) -> str:
        """Serve raw archive bytes (any tar, even a hostile one) under a signed URL."""
        archive_id = "ckpt_" + secrets.token_hex(8)
        self.state.archives[archive_id] = self.state.store("archive", data)
        return sign(self.archive_secret, self.url, archive_id, self._expiry(ttl_seconds))

    def publish_external_weights(
        self,
        config: Mapping[str, Any] | bytes,
        weights: bytes | str | os.PathLike[str],
        *,
        tinker_path: Optional[str] = None,
        ttl_seconds: float = 3600.0,
    ) -> Dict[str, Any]:
        """Publish a PEFT adapter as tinker 0.38 external weights; return what ``get_external_weights_urls`` does.

        ``config`` is the adapter_config (a dict, written as compact sorted JSON,
        or the file's bytes, served as given); ``weights`` the safetensors bytes, or
        the path of a file, copied in chunks (so a large adapter is never held in
        memory). ``tinker_path`` defaults to a fresh
        ``tinker://emulator-run-<hex>/external_weights/<hex>``; publishing the
        same path again replaces its files. Returns::

            {"tinker_path": "tinker://<run>/external_weights/<name>",
             "urls": {"adapter_config.json": <signed URL>, "adapter_model.safetensors": <signed URL>},
             "expires": "<ISO-8601 UTC>"}

        A GET on each URL streams the file until ``expires`` (``ttl_seconds``
        from now, by the server's clock); after that, or with a bad signature,
        it is a 403 (code ``url_expired`` / ``invalid_signature``). The URLs
        are credentials: the emulator never logs their query strings.
        """
        if tinker_path is None:
            tinker_path = f"tinker://emulator-run-{secrets.token_hex(4)}/external_weights/{secrets.token_hex(4)}"
        _check_tinker_path(tinker_path)
        if isinstance(config, Mapping):
            config_bytes = json.dumps(dict(config), sort_keys=True, separators=(",", ":")).encode(
                "utf-8"
            )
        elif isinstance(config, (bytes, bytearray)):
            config_bytes = bytes(config)
        else:
            raise TypeError("config must be the adapter_config as a dict or the file's bytes")
        if not isinstance(weights, (bytes, bytearray, memoryview, str, os.PathLike)):
            raise TypeError("weights must be the safetensors bytes or the path of the file")
        files = {
            EXTERNAL_FILES[0]: self.state.store("external", config_bytes),
            EXTERNAL_FILES[1]: self.state.store("external", weights),
        }
        self.state.add_external_weights(tinker_path, files)
        return self.external_weights_urls(tinker_path, ttl_seconds=ttl_seconds)

    def external_weights_urls(
        self, tinker_path: str, *, ttl_seconds: float = 3600.0
    ) -> Dict[str, Any]:
        """Fresh signed URLs for a published external-weights path (as each tinker call signs anew).

        Same shape as :meth:`publish_external_weights`; ``KeyError`` for a path
        never published (or forgotten by :meth:`reset`).
        """
        with self.state._lock:
            weights_id = self.state.external_ids.get(tinker_path)
        if weights_id is None:
            raise KeyError(f"no external weights were published at {tinker_path}")
        expires = self._expiry(ttl_seconds)
        urls = {
            name: sign_external(self.archive_secret, self.url, weights_id, name, expires)
            for name in EXTERNAL_FILES
        }
        return {"tinker_path": tinker_path, "urls": urls, "expires": expires_iso(expires)}

    def _expiry(self, ttl_seconds: float) -> int:
        if not ttl_seconds > 0:
            raise ValueError("ttl_seconds must be a positive number of seconds")
        return int(math.floor(self.state.clock() + ttl_seconds))


def _check_tinker_path(tinker_path: str) -> None:
    run, marker, name = tinker_path[len("tinker://") :].partition("/external_weights/")
    if not tinker_path.startswith("tinker://") or not marker or not run or not name or "/" in name:
        raise ValueError(
            f"tinker_path must look like tinker://<run>/external_weights/<name> (got {tinker_path[:200]!r})"
        )
