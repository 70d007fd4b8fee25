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
from typing import Any, Callable, Dict, Iterable, Mapping, Optional, Sequence

from .archives import EXTERNAL_FILES, expires_iso, pack_adapter, sign, sign_external
from .connections import Connection, ConnectionLoop, SocketReader, SocketWriter, WorkerPool
from .faults import Fault, FaultSet
from .handler import Handler, refuse_connection
from .model import EOS, VOCAB
from .params import ModelSpec, canonical_window
from .process import EmulatorProcess
from .state import (
    DEFAULT_IDEMPOTENCY_RETENTION,
    DEFAULT_MODELS,
    TURN_PRESETS,
    ResponseRecord,
    State,
)
from .webhooks import WebhookDispatcher, WebhookFault, loopback_url

_logger = logging.getLogger(__name__)

__all__ = [
    "EmulatorServer",
    "EmulatorProcess",
    "Fault",
    "FaultSet",
    "WebhookFault",
    "ModelSpec",
    "DEFAULT_MODELS",
    "TURN_PRESETS",
    "EOS",
    "VOCAB",
]


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
    - ``max_connections``: connections open at once (an idle or half-sent one
      costs a socket, not a thread: one thread reads every request head); one
      more is answered ``503`` and closed; ``max_workers``: threads serving
      complete requests (started as needed); ``idle_timeout``: a request head
      must be complete within this many seconds of the connection's start (or
      of the previous reply, on a keep-alive connection), however its bytes
      trickle in, else the connection is closed; a request body is read with
      the same bound on each silence (408 after); ``stop_timeout``: the bound
      on :meth:`stop`;
    - ``stream_ping_interval``: in a streamed reply (``stream: true``), the
      seconds of silence (while the turn runs) after which a keep-alive ping
      is sent (a ``:`` comment; an Anthropic ``ping`` event on ``/messages``);
      ``stream_token_interval``: seconds between two token events (0: as fast
      as the socket takes them), so a client can be tested against slow streams;
    - completion webhooks (wire.md): a create whose ``metadata.completion_webhook``
      is an http(s) URL to a loopback host (127.0.0.0/8, ::1, localhost; any
      other host: no delivery) gets, when its turn ends, a POST of the JSON
      of ``GET /v1/responses/{id}`` with ``Authorization: Bearer
      <metadata.webhook_token>`` when one was given; ``webhook_retries`` more
      attempts (3) after a non-2xx or a network error, ``webhook_retry_delay``
      (30 s) apart, each bounded by ``webhook_timeout`` (30 s). One scheduler
      thread and a pool of 4 send them. :meth:`add_webhook_fault` injects
      ``drop`` / ``delay`` / ``duplicate``; :meth:`webhook_deliveries` counts
      attempts per response; ``stats()["webhooks"]`` sums them;
    - ``latency``: seconds added each way to every request, as a network link
      would (before the request is handled and before its reply is sent;
      ``python -m sail_lite.emulator --latency 0.02``);
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
        max_connections: int = 10_000,
        idle_timeout: float = 60.0,
        max_workers: int = 128,
        latency: float = 0.0,
        stream_ping_interval: float = 15.0,
        stream_token_interval: float = 0.0,
        webhook_retries: int = 3,
        webhook_retry_delay: float = 30.0,
        webhook_timeout: float = 30.0,
        stop_timeout: float = 10.0,
        idempotency_retention: float = DEFAULT_IDEMPOTENCY_RETENTION,
    ) -> None:
        turns = _turns(preset, turn_times)
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
            on_create=self._schedule_webhook,
        )
        self.webhook_options = dict(
            retries=webhook_retries, retry_delay=webhook_retry_delay, timeout=webhook_timeout
        )
        self.webhooks: Optional[WebhookDispatcher] = None
        self.faults = FaultSet()
        self.stopping = threading.Event()
        _check_server_options(max_connections, idle_timeout, max_workers, latency)
        _positive(webhook_timeout, "webhook_timeout")
        self.max_connections, self.max_workers = max_connections, max_workers
        self.idle_timeout, self.stop_timeout = float(idle_timeout), float(stop_timeout)
        self.latency = float(latency)
        self.stream_ping_interval = _positive(stream_ping_interval, "stream_ping_interval")
        self.stream_token_interval = float(stream_token_interval)
        self._loop: Optional[ConnectionLoop] = None
        self._pool: Optional[WorkerPool] = None

    # -- lifecycle -----------------------------------------------------------------------------------------

    def start(self) -> EmulatorServer:
        """Bind and serve in a background thread; returns self."""
        if self._loop is not None:
            return self
        self.stopping.clear()
        pool = WorkerPool(self.max_workers, "sail-emulator-worker")
        self._loop = ConnectionLoop(
            self._address,
            serve=self._serve,
            pool=pool,
            max_connections=self.max_connections,
            head_timeout=self.idle_timeout,
            on_accept=self.connection_opened,
            refuse=self._refuse,
        )
        self._pool = pool
        self.webhooks = WebhookDispatcher(**self.webhook_options)
        self._loop.start()
        return self

    def serve_forever(self) -> None:
        """Serve in the calling thread until interrupted (``python -m sail_lite.emulator``)."""
        self.start()
        try:
            while not self.stopping.wait(0.5):
                pass
        finally:
            self.stop()

    def stop(self) -> None:
        """Stop serving, close every connection, join every worker thread, delete stored files.

        In-flight requests are told the server is stopping (a synchronous
        request waiting for its turn gets a 503, a stream an ``error`` event)
        and may still write their reply: the read side of every busy connection
        is shut first, and idle keep-alive connections are closed at once.
        Workers still running after ``stop_timeout / 2`` seconds have their
        sockets closed outright; a worker still alive after ``stop_timeout`` is
        logged and left (it is a daemon, so it cannot keep the process alive).
        """
        loop, self._loop = self._loop, None
        pool, self._pool = self._pool, None
        if loop is None or pool is None:
            return
        self.stopping.set()
        deadline = time.monotonic() + self.stop_timeout
        if self.webhooks is not None:
            self.webhooks.close(time.monotonic() + self.stop_timeout / 2)
        busy = loop.busy_sockets()
        loop.stop()  # no more accepts; idle connections closed
        _shutdown(busy, socket.SHUT_RD)
        if not pool.close(time.monotonic() + self.stop_timeout / 2):
            _shutdown(loop.busy_sockets(), socket.SHUT_RDWR)
            if not pool.close(deadline):
                _logger.warning(
                    "emulator worker threads did not stop within %g s", self.stop_timeout
                )
        self.state.close()

    def _serve(self, connection: Connection) -> None:
        """One request on a worker thread, then the connection goes back to the loop (or is closed)."""
        loop = self._loop
        keep = False
        try:
            sock = connection.sock
            sock.settimeout(self.idle_timeout)
            if self.latency:
                self.stopping.wait(self.latency)  # the request's trip over the simulated link
            reader = SocketReader(sock, connection.buffer)
            keep = Handler.serve_one(self, sock, reader, SocketWriter(sock), connection.address)
            connection.buffer = reader.buffer
        finally:
            if loop is None:
                sock.close()
            elif keep and not self.stopping.is_set():
                loop.resume(connection)
            else:
                loop.close(connection)

    def _schedule_webhook(self, record: ResponseRecord) -> None:
        """A committed response with a loopback ``completion_webhook``: deliver when its turn ends."""
        dispatcher = self.webhooks
        metadata = record.params.metadata
        url = loopback_url(metadata.get("completion_webhook"))
        if dispatcher is None or url is None:
            return  # wire.md: a missing or invalid URL means no webhook, silently
        state = self.state
        dispatcher.schedule(
            record.id,
            url,
            metadata.get("webhook_token"),
            record.end_at - state.clock(),
            lambda: state.response_json(record),
        )

    def webhook_deliveries(self, response_id: Optional[str] = None) -> Dict[str, Any]:
        """Webhook counters: for one response id ``{"attempted", "succeeded", "failed", "dropped",
        "duplicated", "gave_up"}`` (zeros if none); without one, that dict per response id."""
        if self.webhooks is None:
            return {} if response_id is None else WebhookDispatcher.empty_counts()
        return self.webhooks.counts(response_id)

    def add_webhook_fault(self, fault: WebhookFault) -> None:
        """Inject a delivery fault (``drop``, ``delay``, ``duplicate``) into the next attempts."""
        if self.webhooks is None:
            raise RuntimeError("start the emulator before injecting webhook faults")
        self.webhooks.add_fault(fault)

    def link_delay(self) -> None:
        """Wait ``latency`` seconds: the reply's trip over the simulated link."""
        if self.latency:
            self.stopping.wait(self.latency)

    def _refuse(self, sock: socket.socket) -> None:
        self.state.count("refused_connections")
        refuse_connection(sock)

    @property
    def open_connections(self) -> int:
        """Connections open right now: waiting for a request head, or being served."""
        loop = self._loop
        return loop.open_connections if loop is not None else 0

    def __enter__(self) -> EmulatorServer:
        return self.start()

    def __exit__(self, *exc_info: Any) -> None:
        self.stop()

    def __repr__(self) -> str:
        where = self.url if self._loop is not None else "stopped"
        return f"EmulatorServer({where})"

    def connection_opened(self, sock: socket.socket) -> None:
        self.state.count("connections")

    # -- addresses -----------------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """``http://host:port`` (the server root)."""
        if self._loop is None:
            raise RuntimeError(
                "the emulator is not running: call start() or use it as a context manager"
            )
        host, port = self._loop.server_address[:2]
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
        stats["webhooks"] = self.webhooks.totals() if self.webhooks is not None else {}
        return stats

    def reset(self) -> None:
        """Forget every object, counter and fault; keep keys and organizations from the constructor."""
        self.state.reset()
        if self.webhooks is not None:
            self.webhooks.clear()
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
        weights_id = self.state.external_weights_id(tinker_path)
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


def _turns(preset: str, turn_times: Optional[Mapping[str, float]]) -> Dict[str, float]:
    if preset not in TURN_PRESETS:
        raise ValueError("preset must be one of {}".format(", ".join(TURN_PRESETS)))
    turns = dict(TURN_PRESETS[preset])
    for name, seconds in (turn_times or {}).items():
        turns[canonical_window(name)] = seconds  # ValueError for a name no catalogue knows
    return turns


def _check_server_options(
    max_connections: int, idle_timeout: float, max_workers: int, latency: float
) -> None:
    if max_connections < 1:
        raise ValueError("max_connections must be at least 1")
    if not idle_timeout > 0:
        raise ValueError("idle_timeout must be a positive number of seconds")
    if max_workers < 1:
        raise ValueError("max_workers must be at least 1")
    if not (math.isfinite(latency) and latency >= 0):
        raise ValueError("latency must be a number of seconds >= 0")


def _positive(value: float, name: str) -> float:
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a positive number of seconds")
    return float(value)


def _shutdown(sockets: Iterable[socket.socket], how: int) -> None:
    for sock in sockets:
        try:
            sock.shutdown(how)
        except OSError:
            pass  # already closed by its worker


def _check_tinker_path(tinker_path: str) -> None:
    run, marker, name = tinker_path[len("tinker://") :].partition("/external_weights/")
    if not tinker_path.startswith("tinker://") or not marker or not run or not name or "/" in name:
        raise ValueError(
            f"tinker_path must look like tinker://<run>/external_weights/<name> (got {tinker_path[:200]!r})"
        )
