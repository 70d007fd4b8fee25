"""``client.loras``: the LoRA registry, validation waits, and one-call uploads from a folder."""
from __future__ import annotations

import logging
import os
import re
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional, Sequence, Union

from ..errors import (
    ConflictError,
    DeadlineExceededError,
    InvalidRequestError,
    LoRANameError,
    LoRAValidationError,
    NotFoundError,
)
from ..types import LoRA
from .models import list_data
from .responses import _path_id

if TYPE_CHECKING:  # pragma: no cover
    from ..client import Client

__all__ = ["LoRAs", "check_lora_name"]

_logger = logging.getLogger(__name__)
_NAME = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,62}[a-z0-9])?\Z")
_USABLE = ("succeeded", "unverified")


def check_lora_name(name: Any) -> str:
    """Return ``name`` if it follows the LoRA naming rules, else raise :class:`LoRANameError`."""
    if not isinstance(name, str) or len(name) < 2 or not _NAME.match(name):
        raise LoRANameError(
            "LoRA name {!r} is invalid: use 2-64 characters of lowercase letters, digits and dashes, "
            "starting and ending with a letter or digit (e.g. 'funnier-v1')".format(name)
        )
    return name


def _models(supported_models: Any) -> List[str]:
    if isinstance(supported_models, str) or not supported_models:
        raise InvalidRequestError("supported_models must be a non-empty list of model ids, e.g. ['moonshotai/Kimi-K2.6']")
    models = list(supported_models)
    if not all(isinstance(m, str) and m for m in models):
        raise InvalidRequestError("supported_models must contain model ids (non-empty strings)")
    return models


class LoRAs:
    """LoRA registry calls. Thread-safe; all calls go through the client's request loop."""

    def __init__(self, client: "Client") -> None:
        self._client = client

    def create(
        self,
        name: str,
        *,
        supported_models: Sequence[str],
        config_file_id: str,
        weights_file_id: str,
        display_name: Optional[str] = None,
        description: Optional[str] = None,
    ) -> LoRA:
        """``POST /loras``: register uploaded files as a LoRA; validations start on the server.

        The name is checked locally first (:class:`LoRANameError`). A name
        already taken raises :class:`ConflictError` naming it, except when
        the taken LoRA is this very call's (a retry after a lost reply),
        which is then returned.
        """
        body: Dict[str, Any] = {
            "name": check_lora_name(name),
            "supported_models": _models(supported_models),
            "config_file_id": _path_id(config_file_id, "config_file_id"),
            "weights_file_id": _path_id(weights_file_id, "weights_file_id"),
        }
        if display_name is not None:
            body["display_name"] = display_name
        if description is not None:
            body["description"] = description
        try:
            return LoRA.from_dict(self._client._request("POST", "/loras", json_body=body))
        except ConflictError as exc:
            if (exc.attempts or 1) > 1:
                mine = self._if_ours(name, body)
                if mine is not None:
                    return mine
            raise ConflictError(
                "a LoRA named {!r} already exists in your organization: pick another name, or update it with "
                "client.loras.update({!r}, ...)".format(name, name),
                status=exc.status, code=exc.code, type=exc.type, request_id=exc.request_id, attempts=exc.attempts,
            ) from exc

    def _check_name_free(self, name: str) -> None:
        # An adapter may be 100 GiB: learn that the name is taken before sending it, not from the
        # create's 409 afterwards. (Another caller may still take it in between: create's 409 covers that.)
        try:
            existing = self.retrieve(name)
        except NotFoundError:
            return
        raise ConflictError(
            "a LoRA named {!r} already exists in your organization (id {}): nothing was uploaded; pick another "
            "name, or update it with client.loras.update({!r}, ...)".format(name, existing.id, name),
            status=409, code="lora_name_taken", param="name",
        )

    def _if_ours(self, name: str, body: Dict[str, Any]) -> Optional[LoRA]:
        try:
            existing = self.retrieve(name)
        except NotFoundError:
            return None
        raw = existing.raw
        if raw.get("config_file_id", body["config_file_id"]) == body["config_file_id"] and raw.get(
            "weights_file_id", body["weights_file_id"]
        ) == body["weights_file_id"] and set(existing.supported_models) == set(body["supported_models"]):
            _logger.info("LoRA %s was created by an earlier attempt whose reply was lost", name)
            return existing
        return None

    def retrieve(self, name_or_id: str) -> LoRA:
        """``GET /loras/{name_or_id}`` (404 -> NotFoundError, also for another organization's)."""
        return LoRA.from_dict(self._client._request("GET", "/loras/" + _path_id(name_or_id, "LoRA name or id")))

    def list(self) -> List[LoRA]:
        """``GET /loras``: every LoRA of your organization."""
        return [LoRA.from_dict(item) for item in list_data(self._client._request("GET", "/loras"), "LoRAs")]

    def update(
        self,
        name: str,
        *,
        supported_models: Optional[Sequence[str]] = None,
        display_name: Optional[str] = None,
        description: Optional[str] = None,
    ) -> LoRA:
        """``PATCH /loras/{name}``; newly added models get validations of their own."""
        body: Dict[str, Any] = {}
        if supported_models is not None:
            body["supported_models"] = _models(supported_models)
        if display_name is not None:
            body["display_name"] = display_name
        if description is not None:
            body["description"] = description
        if not body:
            raise InvalidRequestError("update needs at least one of supported_models, display_name, description")
        return LoRA.from_dict(
            self._client._request("PATCH", "/loras/" + _path_id(name, "LoRA name"), json_body=body)
        )

    def wait_for_validation(self, name: str, model: str, *, deadline: Optional[float] = None) -> LoRA:
        """Block until ``model``'s latest validation of the LoRA is settled.

        Returns the LoRA when it is ``succeeded`` or ``unverified`` (both
        usable); raises :class:`LoRAValidationError` with ``result_code`` and
        ``result_message`` when it ``failed``, and
        :class:`DeadlineExceededError` after ``deadline`` seconds. Polls with
        the poller's growing interval.
        """
        client = self._client
        deadline_at = client._deadline_at(deadline)
        interval: Optional[float] = None
        while True:
            lora = self.retrieve(name)
            if model not in lora.supported_models:
                raise InvalidRequestError(
                    "LoRA {!r} does not list {!r} in supported_models; add it with client.loras.update".format(
                        name, model
                    )
                )
            validation = lora.latest_validation(model)
            status = validation.status if validation is not None else None
            if status in _USABLE:
                return lora
            if status == "failed":
                assert validation is not None
                raise LoRAValidationError(
                    "LoRA {!r} failed validation on {}: {} ({})".format(
                        name, model, validation.result_message or "no reason given", validation.result_code
                    ),
                    lora=lora, model=model, result_code=validation.result_code,
                    result_message=validation.result_message,
                )
            jittered, interval = client.poll.next_interval(interval, "priority", client._rng)
            if deadline_at is not None and client._clock() + jittered >= deadline_at:
                raise DeadlineExceededError(
                    "deadline passed while LoRA {!r} was still {} on {}".format(name, status or "unvalidated", model)
                )
            client._sleep(jittered)

    def upload(
        self,
        adapter_dir: Union[str, "os.PathLike[str]"],
        *,
        name: str,
        supported_models: Sequence[str],
        display_name: Optional[str] = None,
        description: Optional[str] = None,
        wait: bool = True,
        progress: Optional[Callable[[int, int], None]] = None,
        preflight: bool = True,
        deadline: Optional[float] = None,
    ) -> LoRA:
        """From a PEFT folder to a usable LoRA in one call.

        Checks the name and (with ``preflight``) the adapter locally before a
        single byte is sent (:class:`AdapterError` lists every problem), then
        that the name is free (``GET /loras/{name}`` is 404; else
        :class:`ConflictError`, status 409, code ``lora_name_taken``), streams ``adapter_config.json`` and ``adapter_model.safetensors`` up,
        creates the LoRA, and with ``wait`` blocks until every supported
        model's validation is usable (see :meth:`wait_for_validation`).
        ``progress(bytes_sent, total)`` covers both files.
        """
        from ..adapters import check_adapter_dir

        check_lora_name(name)
        models = _models(supported_models)
        folder = os.fspath(adapter_dir)
        config_path = os.path.join(folder, "adapter_config.json")
        weights_path = os.path.join(folder, "adapter_model.safetensors")
        if preflight:
            report = check_adapter_dir(folder, models)
            for warning in report.warnings:
                _logger.warning("%s", warning)
            report.raise_for_problems()
        else:
            for path in (config_path, weights_path):
                if not os.path.isfile(path):
                    raise InvalidRequestError("{} is missing: a PEFT adapter folder holds both files".format(path))
        self._check_name_free(name)
        total = os.path.getsize(config_path) + os.path.getsize(weights_path)

        def tracker(offset: int) -> Optional[Callable[[int, int], None]]:
            if progress is None:
                return None
            return lambda sent, _size: progress(offset + sent, total)

        config_file = self._client.files.create(config_path, purpose="lora", progress=tracker(0))
        weights_file = self._client.files.create(
            weights_path, purpose="lora", progress=tracker(os.path.getsize(config_path))
        )
        lora = self.create(
            name, supported_models=models, config_file_id=config_file.id, weights_file_id=weights_file.id,
            display_name=display_name, description=description,
        )
        if not wait:
            return lora
        client = self._client
        deadline_at = client._deadline_at(deadline)
        for model in models:
            remaining = None if deadline_at is None else max(deadline_at - client._clock(), 1e-3)
            lora = self.wait_for_validation(name, model, deadline=remaining)
        return lora
