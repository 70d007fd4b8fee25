"""Everything the emulator remembers: organizations, responses, files, LoRAs, batches, idempotency, counters.

No HTTP here. One lock guards the maps; slow work (sleeping for a sync
turn, reading files) happens outside it.

A background response costs only its record: its status is derived from the
clock (``queued`` until ``start_at``, ``in_progress`` until ``end_at``, then
terminal) and its output is computed once, on the first read after it
completes. No thread or timer runs per response.
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import json
import math
import os
import secrets
import shutil
import tempfile
import threading
import time
import urllib.parse
import uuid
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Tuple

from .._checks import DEFAULT_IDEMPOTENCY_RETENTION
from ..adapters import AdapterReport, check_adapter_files
from .archives import ArchiveError, download, extract_adapter, redact
from .model import Generation, generate, prompt_state
from .params import CATALOGUES, ApiError, Catalogue, InferenceParams, ModelSpec, canonical_window

__all__ = [
    "State",
    "Organization",
    "ResponseRecord",
    "Reservation",
    "TURN_PRESETS",
    "DEFAULT_MODELS",
    "DEFAULT_IDEMPOTENCY_RETENTION",
]

#: Average simulated turn time per completion window, in seconds (``balanced`` is also the older docs'
#: ``standard``; ``priority`` is reachable only with the legacy catalogue).
TURN_PRESETS: Mapping[str, Mapping[str, float]] = {
    "fast": {"asap": 0.0, "priority": 0.05, "balanced": 0.1, "flex": 0.2},
    "realistic": {"asap": 0.5, "priority": 60.0, "balanced": 300.0, "flex": 1800.0},
}

DEFAULT_MODELS: Tuple[ModelSpec, ...] = (
    ModelSpec("moonshotai/Kimi-K2.6", owned_by="moonshotai", max_lora_rank=32),
    ModelSpec("Qwen/Qwen3-8B", owned_by="qwen"),
    ModelSpec("sail-emulator/asap-only", owned_by="sail", windows=("asap",), asap_only=True),
)

IN_PROGRESS_RETRY_AFTER = "5"
MAX_ARCHIVE_BYTES = (
    1 << 30
)  # a Tinker checkpoint archive (and each file in it) may be at most this large


class Organization:
    __slots__ = ("id", "keys")

    def __init__(self, org_id: str, keys: List[str]) -> None:
        self.id = org_id
        self.keys = keys


class ResponseRecord:
    """One response; terminal state and output are derived lazily.

    The prompt itself is not kept (a 30 MiB input would stay in memory for the
    server's life): only its length and the model's state after reading it.
    """

    __slots__ = (
        "id",
        "org",
        "created_at",
        "start_at",
        "end_at",
        "params",
        "adapter",
        "failure",
        "cancelled_at",
        "generation",
        "prompt_tokens",
        "prompt_state",
    )

    def __init__(
        self,
        response_id: str,
        org: str,
        created_at: float,
        start_at: float,
        end_at: float,
        params: InferenceParams,
        adapter: Optional[bytes],
        failure: Optional[Tuple[str, str]],
        prompt_state: bytes = b"",
    ) -> None:
        self.id = response_id
        self.org = org
        self.created_at = created_at
        self.start_at = start_at
        self.end_at = end_at
        self.prompt_tokens = len(params.prompt)
        self.prompt_state = prompt_state
        self.params = dataclasses.replace(params, prompt=b"")
        self.adapter = adapter
        self.failure = failure
        self.cancelled_at: Optional[float] = None
        self.generation: Optional[Generation] = None

    def status(self, now: float) -> str:
        if self.cancelled_at is not None:
            return "cancelled"
        if now < self.start_at:
            return "queued"
        if now < self.end_at:
            return "in_progress"
        return "failed" if self.failure else "completed"


class FileRecord:
    __slots__ = ("id", "org", "bytes", "filename", "purpose", "created_at", "path", "digest")

    def __init__(
        self,
        file_id: str,
        org: str,
        size: int,
        filename: str,
        purpose: str,
        created_at: int,
        path: str,
        digest: bytes,
    ) -> None:
        self.id, self.org, self.bytes, self.filename = file_id, org, size, filename
        self.purpose, self.created_at, self.path, self.digest = purpose, created_at, path, digest

    def to_json(self) -> Dict[str, Any]:
        return {
            "id": self.id,
            "object": "file",
            "bytes": self.bytes,
            "created_at": self.created_at,
            "filename": self.filename,
            "purpose": self.purpose,
        }


class Validation:
    __slots__ = ("model", "start_at", "end_at", "result", "unverified", "response_id")

    def __init__(
        self,
        model: str,
        start_at: float,
        end_at: float,
        result: Optional[Tuple[str, str]],
        *,
        unverified: bool = False,
    ) -> None:
        self.model, self.start_at, self.end_at, self.result = model, start_at, end_at, result
        self.unverified = unverified
        self.response_id = "resp_" + secrets.token_hex(12)

    def status(self, now: float) -> str:
        if now < self.start_at:
            return "pending"
        if now < self.end_at:
            return "running"
        if self.unverified:
            return "unverified"
        return "failed" if self.result else "succeeded"

    def to_json(self, now: float) -> Dict[str, Any]:
        status = self.status(now)
        failed = status == "failed" and self.result
        return {
            "model": self.model,
            "status": status,
            "response_id": self.response_id,
            "result_code": self.result[0] if failed else None,
            "result_message": self.result[1] if failed else None,
        }


class LoRARecord:
    __slots__ = (
        "id",
        "org",
        "name",
        "supported_models",
        "config_file_id",
        "weights_file_id",
        "display_name",
        "description",
        "created_at",
        "validations",
        "digest",
    )

    def __init__(self, org: str, fields: Mapping[str, Any], created_at: int, digest: bytes) -> None:
        self.id = str(uuid.uuid4())
        self.org = org
        self.name: str = fields["name"]
        self.supported_models: List[str] = list(fields["supported_models"])
        self.config_file_id: str = fields["config_file_id"]
        self.weights_file_id: str = fields["weights_file_id"]
        self.display_name: Optional[str] = fields.get("display_name")
        self.description: Optional[str] = fields.get("description")
        self.created_at = created_at
        self.validations: List[Validation] = []
        self.digest = digest

    def latest(self, model: str) -> Optional[Validation]:
        found = [v for v in self.validations if v.model == model]
        return found[-1] if found else None

    def to_json(self, now: float) -> Dict[str, Any]:
        statuses = [v.status(now) for v in self.validations]
        if any(s in ("pending", "running") for s in statuses):
            status = "pending_validation"
        elif any(s in ("succeeded", "unverified") for s in statuses):
            status = "ready"
        else:
            status = "failed"
        return {
            "id": self.id,
            "object": "lora",
            "name": self.name,
            "status": status,
            "supported_models": list(self.supported_models),
            "display_name": self.display_name,
            "description": self.description,
            "created_at": self.created_at,
            "validations": [v.to_json(now) for v in self.validations],
        }


class BatchRecord:
    __slots__ = ("id", "org", "label", "created_at", "items")

    def __init__(
        self, org: str, label: Optional[str], created_at: int, items: Dict[str, str]
    ) -> None:
        self.id = "batch_" + secrets.token_hex(12)
        self.org, self.label, self.created_at, self.items = org, label, created_at, items


class Reservation:
    """An idempotency key held by one request; ``ref`` is what a replay returns."""

    __slots__ = ("fingerprint", "done", "ref", "status", "created_at")

    def __init__(self, fingerprint: bytes, created_at: float) -> None:
        self.fingerprint = fingerprint
        self.created_at = (
            created_at  # the key's first use: it is forgotten a retention window later
        )
        self.done = False
        self.ref: Any = None
        self.status = 200


_BATCH_STATUS = {
    "queued": "QUEUED",
    "in_progress": "RUNNING",
    "completed": "COMPLETED",
    "incomplete": "COMPLETED",
    "failed": "FAILED",
    "cancelled": "CANCELLED",
    "expired": "FAILED",
}


class State:
    """The emulator's memory. ``clock`` is wall time in seconds (``time.time``)."""

    def __init__(
        self,
        *,
        seed: int,
        turn_times: Mapping[str, float],
        models: Tuple[ModelSpec, ...],
        organizations: Mapping[str, List[str]],
        validation_time: float,
        clock: Callable[[], float] = time.time,
        unverified_models: Iterable[str] = (),
        windows: str = "current",
        idempotency_retention: float = DEFAULT_IDEMPOTENCY_RETENTION,
        on_create: Optional[Callable[[ResponseRecord], None]] = None,
    ) -> None:
        #: Called with every committed response (outside the lock): the server schedules webhooks.
        self.on_create = on_create
        if (
            isinstance(idempotency_retention, bool)
            or not isinstance(idempotency_retention, (int, float))
            or not math.isfinite(idempotency_retention)
            or idempotency_retention <= 0
        ):
            raise ValueError(
                f"idempotency_retention must be a positive number of seconds, got {idempotency_retention!r}"
            )
        #: Seconds an idempotency key is remembered after its first use (by ``clock``); after that the
        #: same key is a new request (wire.md names no window; 24 h, as common APIs keep keys).
        self.idempotency_retention = float(idempotency_retention)
        if windows not in CATALOGUES:
            raise ValueError(
                "windows must be one of {} (got {!r})".format(", ".join(CATALOGUES), windows)
            )
        self.seed = seed
        #: The completion windows offered (wire.md): "current" (asap, balanced, flex) or "legacy".
        self.catalogue: Catalogue = CATALOGUES[windows]
        self.turn_times = {canonical_window(name): seconds for name, seconds in turn_times.items()}
        self.models: Dict[str, ModelSpec] = {m.id: m for m in models}
        self.validation_time = validation_time
        self.clock = clock
        #: LoRA validations on these models end ``unverified`` (wire.md: could not be checked automatically).
        self.unverified_models = frozenset(unverified_models)
        unknown = self.unverified_models - set(self.models)
        if unknown:
            raise ValueError(
                "unverified_models names unknown models: {}".format(", ".join(sorted(unknown)))
            )
        self._configured_orgs = {org: list(keys) for org, keys in organizations.items()}
        self._lock = threading.RLock()
        self._storage = tempfile.mkdtemp(prefix="sail-emulator-")
        self._clear()

    # -- lifecycle -----------------------------------------------------------------------------------------

    def _clear(self) -> None:
        self.orgs: Dict[str, Organization] = {
            o: Organization(o, list(k)) for o, k in self._configured_orgs.items()
        }
        self._by_key: Dict[str, Organization] = {
            k: org for org in self.orgs.values() for k in org.keys
        }
        self.responses: Dict[str, ResponseRecord] = {}
        self.files: Dict[str, FileRecord] = {}
        self.loras: Dict[str, LoRARecord] = {}
        self.batches: collections.OrderedDict[str, BatchRecord] = collections.OrderedDict()
        self.idempotency: Dict[Tuple[str, str, str, str], Reservation] = {}
        self.archives: Dict[str, str] = {}
        self.external: Dict[str, Dict[str, str]] = {}  # weights id -> {file name: path}
        self.external_ids: Dict[str, str] = {}  # tinker path -> weights id
        self.counters: Dict[str, int] = collections.Counter()
        self.runs_by_key: Dict[str, int] = collections.Counter()
        self.requests: Dict[str, int] = collections.Counter()

    def reset(self) -> None:
        """Forget everything (files on disk too); keep the configured organizations."""
        with self._lock:
            self._wipe_storage()
            self._clear()

    def close(self) -> None:
        with self._lock:
            shutil.rmtree(self._storage, ignore_errors=True)

    def _wipe_storage(self) -> None:
        for name in os.listdir(self._storage):
            path = os.path.join(self._storage, name)
            shutil.rmtree(path, ignore_errors=True) if os.path.isdir(path) else os.unlink(path)

    @property
    def storage_dir(self) -> str:
        return self._storage

    def storage_path(self, prefix: str) -> str:
        """A fresh path in the server's private storage folder."""
        return os.path.join(self._storage, f"{prefix}-{secrets.token_hex(8)}")

    def store(self, prefix: str, data: Any) -> str:
        """Write bytes, or copy a file (by path) in chunks, into private storage; returns the stored path."""
        path = self.storage_path(prefix)
        if isinstance(data, (bytes, bytearray, memoryview)):
            with open(path, "wb") as out:
                out.write(data)
        else:
            with open(os.fspath(data), "rb") as source, open(path, "wb") as out:
                shutil.copyfileobj(source, out, 1 << 20)
        return path

    def add_external_weights(self, tinker_path: str, files: Mapping[str, str]) -> str:
        """Remember a published external-weights checkpoint; a tinker path published again is replaced."""
        weights_id = "xw_" + secrets.token_hex(8)
        with self._lock:
            old = self.external_ids.get(tinker_path)
            if old is not None:
                for path in self.external.pop(old, {}).values():
                    _remove_file(path)
            self.external[weights_id] = dict(files)
            self.external_ids[tinker_path] = weights_id
        return weights_id

    def external_weights_id(self, tinker_path: str) -> Optional[str]:
        """The weights id published at ``tinker_path``, or None."""
        with self._lock:
            return self.external_ids.get(tinker_path)

    def external_file(self, weights_id: str, filename: str) -> str:
        """The stored path of one published file, or a 404."""
        with self._lock:
            path = self.external.get(weights_id, {}).get(filename)
        if path is None:
            raise ApiError(404, "no such external weights file", code="not_found")
        return path

    # -- organizations and counters ------------------------------------------------------------------------

    def authenticate(self, key: Optional[str]) -> Optional[Organization]:
        return self._by_key.get(key) if key else None

    def add_organization(self, org_id: Optional[str] = None, api_key: Optional[str] = None) -> str:
        with self._lock:
            org_id = org_id or "org_" + secrets.token_hex(6)
            key = api_key or "sk_emulator_" + secrets.token_hex(16)
            org = self.orgs.setdefault(org_id, Organization(org_id, []))
            org.keys.append(key)
            self._by_key[key] = org
            return key

    def count(self, name: str, amount: int = 1) -> None:
        with self._lock:
            self.counters[name] += amount

    def count_request(self, route: str) -> None:
        with self._lock:
            self.requests[route] += 1

    def stats(self) -> Dict[str, Any]:
        now = self.clock()
        with self._lock:
            statuses = collections.Counter(r.status(now) for r in self.responses.values())
            return {
                "inference_runs": self.counters["inference_runs"],
                "inference_runs_by_idempotency_key": dict(self.runs_by_key),
                "requests": dict(self.requests),
                "connections": self.counters["connections"],
                "refused_connections": self.counters["refused_connections"],
                "cancellations": self.counters["cancellations"],
                "responses": dict(statuses),
                "files": len(self.files),
                "loras": len(self.loras),
                "batches": len(self.batches),
            }

    # -- idempotency ---------------------------------------------------------------------------------------

    def run_idempotent(
        self,
        org: Organization,
        api_key: str,
        key: Optional[str],
        route: str,
        fingerprint: bytes,
        commit: Callable[[], Any],
        *,
        status: int = 200,
        settle: Optional[Callable[[Any], None]] = None,
        key_header: str = "Idempotency-Key",
    ) -> Tuple[Any, int]:
        """The idempotency protocol of wire.md, in one place: ``(result, status)``.

        Without a key: ``commit()``, then ``settle(result)``. With one, held per
        (organization, API key, route, key) for ``idempotency_retention``
        seconds from its first use (after that the key is forgotten: a request
        with it is new, runs and is billed again, whatever its body):
        - a replay of a finished request returns the stored result and status,
          without running ``commit`` again (its current state, e.g. a
          background response's latest status);
        - the same key with another body (``fingerprint``) is a 400
          ``idempotency_error``; a replay while the first request is still in
          ``commit`` or ``settle`` (a synchronous request waiting for its turn)
          is a 409 ``request_in_progress`` with ``Retry-After``;
        - a ``commit`` that raises (validation: nothing was done) gives the key
          back; once it returns, the key holds its result even if ``settle``
          raises (a 504 sync timeout: the response keeps running, a replay finds it).
        """
        if key is None:
            result = commit()
            if settle is not None:
                settle(result)
            return result, status
        slot = (org.id, api_key, route, key)
        now = self.clock()
        with self._lock:
            held = self.idempotency.get(slot)
            if held is not None and now - held.created_at >= self.idempotency_retention:
                held = (
                    None  # past the retention window: the key is forgotten, this is a new request
                )
            if held is None:
                held = self.idempotency[slot] = Reservation(fingerprint, now)
                fresh = True
            else:
                fresh = False
        if not fresh:
            return self._replay(held, fingerprint, key_header)
        try:
            result = commit()
        except BaseException:
            with self._lock:
                self.idempotency.pop(slot, None)
            raise
        try:
            if settle is not None:
                settle(result)
        finally:
            with self._lock:
                held.ref, held.status, held.done = result, status, True
        return result, status

    def _replay(self, held: Reservation, fingerprint: bytes, key_header: str) -> Tuple[Any, int]:
        """A request under a key already held: the stored result, or why not (400, 409)."""
        with self._lock:
            done = held.done
        if held.fingerprint != fingerprint:
            raise ApiError(
                400,
                f"this {key_header} was already used with a different request body: use a new key for "
                "a new request",
                code="idempotency_error",
                param=key_header,
            )
        if not done:
            raise ApiError(
                409,
                f"a request with this {key_header} is still in progress: retry after a few seconds",
                code="request_in_progress",
                headers={"Retry-After": IN_PROGRESS_RETRY_AFTER},
            )
        return held.ref, held.status

    # -- inference, shared by responses, chat, messages ----------------------------------------------------

    def infer(
        self,
        org: Organization,
        api_key: str,
        params: InferenceParams,
        *,
        route: str,
        key: Optional[str],
        key_header: str,
        own_url: str,
        wait: Callable[[ResponseRecord], None],
    ) -> Tuple[ResponseRecord, int]:
        """Run one inference request under its idempotency key: (record, 200 or 202 for background).

        ``wait`` holds a synchronous request until its turn ends (the server's
        sync timeout and shutdown are its business); ``own_url`` is the server
        root, the only place Tinker checkpoints are loaded from.
        """
        if key is not None and not 1 <= len(key) <= 255:
            raise ApiError(400, f"{key_header} must be 1 to 255 characters", param=key_header)
        if key is not None and self.models[params.model].asap_only:
            raise ApiError(
                400,
                f"model {params.model} serves asap requests only and does not accept {key_header}: resend without "
                "it",
                code="unsupported_asap_only_request",
            )
        adapter = self.lora_adapter(org, params)

        def commit() -> ResponseRecord:
            failure = None
            loaded = adapter
            if params.tinker_url is not None:
                loaded, failure = self.tinker_adapter(params, own_url=own_url)
            return self.create_response(
                org, params, adapter=loaded, failure=failure, idempotency_key=key
            )

        return self.run_idempotent(
            org,
            api_key,
            key,
            route,
            params.fingerprint,
            commit,
            status=202 if params.background else 200,
            settle=None if params.background else wait,
            key_header=key_header,
        )

    def tinker_adapter(
        self, params: InferenceParams, *, own_url: str
    ) -> Tuple[Optional[bytes], Optional[Tuple[str, str]]]:
        """Download, unpack and check a Tinker checkpoint archive: (adapter digest, None) or (None, failure).

        Only archives this server published are loaded (the URL's host must be
        ``own_url``'s); a failure is the response's error code and message, and
        never shows the URL's signed query.
        """
        url = params.tinker_url or ""
        if urllib.parse.urlsplit(url).netloc != urllib.parse.urlsplit(own_url).netloc:
            return None, (
                "tinker_checkpoint_url_invalid",
                "the emulator only loads Tinker checkpoints it published "
                f"(EmulatorServer.publish_tinker_checkpoint); {redact(url)} is not one",
            )
        try:
            data = download(url, max_bytes=MAX_ARCHIVE_BYTES)
            with tempfile.TemporaryDirectory(dir=self.storage_dir) as tmp:
                config_path, weights_path = extract_adapter(
                    data, tmp, max_member_bytes=MAX_ARCHIVE_BYTES
                )
                del data
                problem = self.adapter_problem(config_path, weights_path, params.model)
                if problem:
                    return None, problem
                digest = hashlib.sha256()
                with open(weights_path, "rb") as handle:
                    for block in iter(lambda: handle.read(1 << 20), b""):
                        digest.update(block)
                return digest.digest(), None
        except ArchiveError as exc:
            return None, (exc.code, exc.message)

    # -- LoRA resolution (shared by every inference endpoint) ----------------------------------------------

    def find_lora(self, org: Organization, name_or_id: str) -> Optional[LoRARecord]:
        with self._lock:
            for lora in self.loras.values():
                if lora.org == org.id and (lora.name == name_or_id or lora.id == name_or_id):
                    return lora
        return None

    def lora_adapter(self, org: Organization, params: InferenceParams) -> Optional[bytes]:
        """The adapter digest a request uses, or a 4xx saying why it may not."""
        if params.lora is None:
            return None
        lora = self.find_lora(org, params.lora)
        if lora is None:
            raise ApiError(
                404,
                f"LoRA {params.lora!r} was not found in your organization: GET /v1/loras lists yours",
                code="lora_not_found",
                param="metadata.lora",
            )
        if params.model not in lora.supported_models:
            raise ApiError(
                400,
                "LoRA {!r} does not support model {}: its supported_models are {}".format(
                    lora.name, params.model, ", ".join(lora.supported_models)
                ),
                code="lora_model_unsupported",
                param="model",
            )
        latest = lora.latest(params.model)
        if latest is not None and latest.status(self.clock()) == "failed" and latest.result:
            raise ApiError(
                400,
                f"LoRA {lora.name!r} failed validation on {params.model} ({latest.result[0]}): {latest.result[1]}",
                code="lora_validation_failed",
                param="metadata.lora",
            )
        return lora.digest

    # -- responses -----------------------------------------------------------------------------------------

    def _turn(self, window: str) -> float:
        return max(0.0, float(self.turn_times.get(window, 0.0)))

    def create_response(
        self,
        org: Organization,
        params: InferenceParams,
        *,
        adapter: Optional[bytes] = None,
        failure: Optional[Tuple[str, str]] = None,
        idempotency_key: Optional[str] = None,
    ) -> ResponseRecord:
        """Commit a response: from here on, it counts as an inference run."""
        now = self.clock()
        turn = self._turn(params.window)
        record = ResponseRecord(
            "resp_" + secrets.token_hex(12),
            org.id,
            now,
            now + turn / 2,
            now + turn,
            params,
            adapter,
            failure,
            prompt_state(params.prompt, seed=self.seed, model=params.model),
        )
        with self._lock:
            self.responses[record.id] = record
            self.counters["inference_runs"] += 1
            if idempotency_key is not None:
                self.runs_by_key[idempotency_key] += 1
        if self.on_create is not None:
            self.on_create(record)
        return record

    def get_response(self, org: Organization, response_id: str) -> ResponseRecord:
        with self._lock:
            record = self.responses.get(response_id)
        if record is None or record.org != org.id:
            raise ApiError(
                404,
                f"no response {response_id[:100]!r} in your organization",
                code="response_not_found",
            )
        return record

    def cancel_response(self, record: ResponseRecord) -> None:
        with self._lock:
            if record.status(self.clock()) in ("queued", "in_progress"):
                record.cancelled_at = self.clock()
                self.counters["cancellations"] += 1

    def generation(self, record: ResponseRecord) -> Generation:
        """Run the model for a finished response (once; the result is deterministic anyway)."""
        if record.generation is None:
            params = record.params
            record.generation = generate(
                params.prompt,
                seed=self.seed,
                model=params.model,
                max_tokens=params.max_tokens,
                temperature=params.temperature,
                top_p=params.top_p,
                stop_strings=params.stop_strings,
                stop_tokens=params.stop_tokens,
                adapter=record.adapter,
                sample_salt=params.fingerprint,
                start=record.prompt_state,
            )
        return record.generation

    def response_json(self, record: ResponseRecord) -> Dict[str, Any]:
        now = self.clock()
        status = record.status(now)
        params = record.params
        body: Dict[str, Any] = {
            "id": record.id,
            "object": "response",
            "created_at": int(record.created_at),
            "status": status,
            "background": params.background,
            "model": params.model,
            "metadata": dict(params.metadata),
            "output": [],
            "usage": None,
            "error": None,
            "incomplete_details": None,
            "temperature": params.temperature,
            "top_p": params.top_p,
            "max_output_tokens": params.max_tokens,
        }
        if status == "failed" and record.failure:
            body["error"] = {"code": record.failure[0], "message": record.failure[1]}
        if status != "completed":
            return body
        generation = self.generation(record)
        text = generation.text if params.raw else generation.answer
        block: Dict[str, Any] = {"type": "output_text", "text": text, "annotations": []}
        if params.raw:
            block["token_ids"] = list(generation.tokens)
            block["stop_reason"] = generation.stop_reason
            block["logprobs"] = (
                [
                    {"token_id": t, "logprob": lp}
                    for t, lp in zip(generation.tokens, generation.logprobs)
                ]
                if params.logprobs
                else None
            )
        elif params.logprobs:
            block["logprobs"] = [
                {
                    "token": chr(t) if t < 256 else "",
                    "logprob": lp,
                    "bytes": [t] if t < 256 else [],
                    "top_logprobs": [],
                }
                for t, lp in zip(generation.tokens, generation.logprobs)
            ]
        body["output"] = [
            {
                "type": "message",
                "id": "msg_" + record.id[5:],
                "status": "completed",
                "role": "assistant",
                "content": [block],
            }
        ]
        body["usage"] = _usage(record.prompt_tokens, len(generation.tokens))
        body["completed_at"] = int(record.end_at)
        return body

    # -- chat and messages (synchronous, rendered once) ----------------------------------------------------

    def chat_json(self, record: ResponseRecord) -> Dict[str, Any]:
        generation = self.generation(record)
        return {
            "id": "chatcmpl-" + record.id[5:],
            "object": "chat.completion",
            "created": int(record.created_at),
            "model": record.params.model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": generation.answer},
                    "finish_reason": "stop" if generation.stop_reason == "stop" else "length",
                    "logprobs": None,
                }
            ],
            "usage": {
                "prompt_tokens": record.prompt_tokens,
                "completion_tokens": len(generation.tokens),
                "total_tokens": record.prompt_tokens + len(generation.tokens),
            },
            "metadata": dict(record.params.metadata),
        }

    def message_json(self, record: ResponseRecord) -> Dict[str, Any]:
        generation = self.generation(record)
        if generation.stopped_by:
            reason = "stop_sequence"
        else:
            reason = "end_turn" if generation.stop_reason == "stop" else "max_tokens"
        return {
            "id": "msg_" + record.id[5:],
            "type": "message",
            "role": "assistant",
            "model": record.params.model,
            "content": [{"type": "text", "text": generation.answer}],
            "stop_reason": reason,
            "stop_sequence": generation.stopped_by,
            "usage": {
                "input_tokens": record.prompt_tokens,
                "output_tokens": len(generation.tokens),
            },
        }

    # -- files ---------------------------------------------------------------------------------------------

    def add_file(
        self, org: Organization, *, path: str, size: int, filename: str, purpose: str, digest: bytes
    ) -> FileRecord:
        record = FileRecord(
            "file-" + secrets.token_hex(12),
            org.id,
            size,
            filename,
            purpose,
            int(self.clock()),
            path,
            digest,
        )
        with self._lock:
            self.files[record.id] = record
        return record

    def get_file(self, org: Organization, file_id: str, param: str) -> FileRecord:
        with self._lock:
            record = self.files.get(file_id)
        if record is None or record.org != org.id:
            raise ApiError(
                400,
                f"{param} {file_id[:100]!r} is not a file of your organization: upload it with POST /v1/files",
                code="file_not_found",
                param=param,
            )
        return record

    # -- LoRAs ---------------------------------------------------------------------------------------------

    @property
    def max_ranks(self) -> Dict[str, int]:
        return {m.id: m.max_lora_rank for m in self.models.values() if m.max_lora_rank is not None}

    def adapter_problem(
        self, config_path: str, weights_path: str, model: str
    ) -> Optional[Tuple[str, str]]:
        """Check an adapter's two files for ``model``: None, or (result code, message) saying what is wrong.

        Never raises for hostile content: JSON nested too deeply for the parser
        is a failure with a code like any other malformed file.
        """
        try:
            report: AdapterReport = check_adapter_files(
                config_path, weights_path, [model], max_ranks=self.max_ranks
            )
        except RecursionError:
            return _nesting_problem(config_path)
        if not report.problems:
            return None
        return report.problems[0].code, "; ".join(p.message for p in report.problems)

    def _validate(self, lora: LoRARecord, model: str, now: float) -> Validation:
        half = self.validation_time / 2
        if model in self.unverified_models:  # this deployment cannot check adapters automatically
            return Validation(model, now + half, now + self.validation_time, None, unverified=True)
        config = self.files[lora.config_file_id]
        weights = self.files[lora.weights_file_id]
        result = self.adapter_problem(config.path, weights.path, model)
        return Validation(model, now + half, now + self.validation_time, result)

    def create_lora(self, org: Organization, fields: Mapping[str, Any]) -> LoRARecord:
        """Register a LoRA with one validation per supported model; all or nothing."""
        self.get_file(org, fields["config_file_id"], "config_file_id")
        weights = self.get_file(org, fields["weights_file_id"], "weights_file_id")
        now = self.clock()
        lora = LoRARecord(org.id, fields, int(now), weights.digest)
        if (
            self.find_lora(org, lora.name) is not None
        ):  # cheap early answer; checked again under the lock
            raise _name_taken(lora.name)
        # Validate before the LoRA is visible: a file that breaks the checks can never leave a half-created one.
        lora.validations = [self._validate(lora, model, now) for model in lora.supported_models]
        with self._lock:
            if any(item.org == org.id and item.name == lora.name for item in self.loras.values()):
                raise _name_taken(lora.name)
            self.loras[lora.id] = lora
        return lora

    def get_lora(self, org: Organization, name_or_id: str) -> LoRARecord:
        lora = self.find_lora(org, name_or_id)
        if lora is None:
            raise ApiError(
                404,
                f"LoRA {name_or_id[:100]!r} was not found in your organization",
                code="lora_not_found",
            )
        return lora

    def update_lora(
        self, org: Organization, name_or_id: str, changes: Mapping[str, Any]
    ) -> LoRARecord:
        lora = self.get_lora(org, name_or_id)
        now = self.clock()
        with self._lock:
            if "supported_models" in changes:
                added = [m for m in changes["supported_models"] if m not in lora.supported_models]
                lora.supported_models = list(changes["supported_models"])
            else:
                added = []
            for name in ("display_name", "description"):
                if name in changes:
                    setattr(lora, name, changes[name])
        for model in added:
            latest = lora.latest(model)
            if latest is None or latest.status(now) != "succeeded":
                lora.validations.append(self._validate(lora, model, now))
        return lora

    def list_loras(self, org: Organization) -> List[LoRARecord]:
        with self._lock:
            return [item for item in self.loras.values() if item.org == org.id]

    # -- batches -------------------------------------------------------------------------------------------

    def submit_batch(
        self,
        org: Organization,
        api_key: str,
        key: Optional[str],
        fingerprint: bytes,
        label: Optional[str],
        items: List[Tuple[str, InferenceParams]],
        *,
        own_url: str,
    ) -> BatchRecord:
        """Create a batch under its idempotency key; every item's LoRA or Tinker checkpoint is checked first
        (one bad item rejects the batch with a 400 naming it, and consumes no key)."""

        def commit() -> BatchRecord:
            adapters: Dict[str, Optional[bytes]] = {}
            for custom_id, params in items:
                adapters[custom_id] = self.lora_adapter(org, params)
                if params.tinker_url is not None:
                    adapter, failure = self.tinker_adapter(params, own_url=own_url)
                    if failure:
                        raise ApiError(400, f"requests[{custom_id}]: {failure[1]}", code=failure[0])
                    adapters[custom_id] = adapter
            return self.create_batch(org, label, items, adapters)

        return self.run_idempotent(org, api_key, key, "batches", fingerprint, commit)[0]

    def create_batch(
        self,
        org: Organization,
        label: Optional[str],
        items: List[Tuple[str, InferenceParams]],
        adapters: Mapping[str, Optional[bytes]],
    ) -> BatchRecord:
        ids = {}
        for custom_id, params in items:
            ids[custom_id] = self.create_response(org, params, adapter=adapters.get(custom_id)).id
        batch = BatchRecord(org.id, label, int(self.clock()), ids)
        with self._lock:
            self.batches[batch.id] = batch
        return batch

    def get_batch(self, org: Organization, batch_id: str) -> BatchRecord:
        with self._lock:
            batch = self.batches.get(batch_id)
        if batch is None or batch.org != org.id:
            raise ApiError(
                404, f"no batch {batch_id[:100]!r} in your organization", code="batch_not_found"
            )
        return batch

    def list_batches(
        self, org: Organization, limit: int, after_id: Optional[str]
    ) -> List[BatchRecord]:
        with self._lock:
            mine = [b for b in self.batches.values() if b.org == org.id]
        if after_id is not None:
            ids = [b.id for b in mine]
            mine = mine[ids.index(after_id) + 1 :] if after_id in ids else []
        return mine[:limit]

    def batch_json(self, batch: BatchRecord, *, detail: bool) -> Dict[str, Any]:
        now = self.clock()
        with self._lock:
            statuses = {
                cid: _BATCH_STATUS.get(self.responses[rid].status(now), "QUEUED")
                for cid, rid in batch.items.items()
            }
        counts = collections.Counter(statuses.values())
        body: Dict[str, Any] = {
            "id": batch.id,
            "object": "batch",
            "label": batch.label,
            "created_at": batch.created_at,
            "request_counts": {
                "total": len(statuses),
                "queued": counts["QUEUED"],
                "running": counts["RUNNING"],
                "completed": counts["COMPLETED"],
                "failed": counts["FAILED"],
                "cancelled": counts["CANCELLED"],
            },
        }
        if detail:
            body["request_status"] = {cid: {"status": s} for cid, s in statuses.items()}
        return body


def _remove_file(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def _name_taken(name: str) -> ApiError:
    return ApiError(
        409,
        f"a LoRA named {name!r} already exists in your organization: pick another name",
        code="lora_name_taken",
        param="name",
    )


def _nesting_problem(config_path: str) -> Tuple[str, str]:
    """Which of the two files nests JSON too deeply to parse."""
    try:
        with open(config_path, "rb") as handle:
            json.loads(handle.read())
    except RecursionError:
        return (
            "invalid_config_json",
            "adapter_config.json nests JSON too deeply to be an adapter config",
        )
    except (OSError, ValueError):
        pass
    return (
        "invalid_safetensors",
        "the safetensors header nests JSON too deeply to be a tensor table",
    )


def _usage(input_tokens: int, output_tokens: int) -> Dict[str, Any]:
    return {
        "input_tokens": input_tokens,
        "output_tokens": output_tokens,
        "total_tokens": input_tokens + output_tokens,
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens_details": {"reasoning_tokens": 0},
    }
