"""``client.loras``: the LoRA registry, validation waits, and one-call uploads from a folder."""

from __future__ import annotations

import logging
import os
import re
from functools import partial
from typing import (
    TYPE_CHECKING,
    Any,
    Callable,
    Dict,
    List,
    Mapping,
    Optional,
    Sequence,
    Tuple,
    Union,
)

from .._checks import model_id, path_id, shown
from ..errors import (
    ConflictError,
    InvalidRequestError,
    LoRANameError,
    LoRAValidationError,
    NotFoundError,
)
from ..types import FileObject, LoRA
from ._common import list_data, string_list

if TYPE_CHECKING:  # pragma: no cover
    from .._requester import Call, Requester
    from .files import Files

__all__ = ["LoRAs", "check_lora_name"]

_logger = logging.getLogger(__name__)
_NAME = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,62}[a-z0-9])?\Z")
_USABLE = ("succeeded", "unverified")
_VALIDATION_WINDOW = "balanced"  # validations run like a balanced request: poll on its schedule


def check_lora_name(name: Any) -> str:
    """Return ``name`` if it follows the LoRA naming rules, else raise :class:`LoRANameError`."""
    if not isinstance(name, str) or len(name) < 2 or not _NAME.match(name):
        raise LoRANameError(
            f"LoRA name {shown(name)} is invalid: use 2-64 characters of lowercase letters, digits and dashes, "
            "starting and ending with a letter or digit (e.g. 'funnier-v1')"
        )
    return name


def _models(supported_models: Any) -> List[str]:
    return string_list(
        "supported_models (model ids, e.g. ['moonshotai/Kimi-K2.6'])",
        supported_models,
        non_empty=True,
    )


def _texts(**values: Any) -> Dict[str, str]:
    """The given (not ``None``) optional text fields, each checked to be a string."""
    for name, value in values.items():
        if value is not None and not isinstance(value, str):
            raise InvalidRequestError(f"{name} must be a string, got {type(value).__name__}")
    return {name: value for name, value in values.items() if value is not None}


class LoRAs:
    """LoRA registry calls. Thread-safe; all calls go through the client's request loop.

    Every method takes ``timeout``, ``deadline`` and ``extra_headers`` as
    the other resources do.
    """

    def __init__(self, requester: Requester, files: Files) -> None:
        self._requester = requester
        self._files = files

    def create(
        self,
        name: str,
        *,
        supported_models: Sequence[str],
        config_file_id: str,
        weights_file_id: str,
        display_name: Optional[str] = None,
        description: Optional[str] = None,
        idempotency_key: Optional[str] = None,
        timeout: Optional[float] = None,
        deadline: Optional[float] = None,
        extra_headers: Optional[Mapping[str, str]] = None,
    ) -> LoRA:
        """``POST /loras``: register uploaded files as a LoRA; validations start on the server.

        The name is checked locally first (:class:`LoRANameError`). A name
        already taken raises :class:`ConflictError` naming it, except when
        the taken LoRA is this very call's (a retry after a lost reply),
        which is then returned.
        """
        call = self._requester.call(
            timeout=timeout,
            deadline=deadline,
            extra_headers=extra_headers,
            idempotency_key=idempotency_key,
        )
        body: Dict[str, Any] = {
            "name": check_lora_name(name),
            "supported_models": _models(supported_models),
            "config_file_id": path_id(config_file_id, "config_file_id"),
            "weights_file_id": path_id(weights_file_id, "weights_file_id"),
        }
        body.update(_texts(display_name=display_name, description=description))
        try:
            return LoRA.from_dict(
                self._requester.request(
                    "POST", "/loras", call, json_body=body, key_header="Idempotency-Key"
                )
            )
        except ConflictError as exc:
            if (exc.attempts or 1) > 1:
                mine = self._if_ours(name, body, call)
                if mine is not None:
                    return mine
            exc.message = _name_taken(name)
            exc.args = (exc.message,)
            raise

    def _if_ours(self, name: str, body: Dict[str, Any], call: Call) -> Optional[LoRA]:
        try:
            existing = self._retrieve(name, call)
        except NotFoundError:
            return None
        raw = existing.raw
        if (
            raw.get("config_file_id", body["config_file_id"]) == body["config_file_id"]
            and raw.get("weights_file_id", body["weights_file_id"]) == body["weights_file_id"]
            and set(existing.supported_models) == set(body["supported_models"])
        ):
            _logger.info("LoRA %s was created by an earlier attempt whose reply was lost", name)
            return existing
        return None

    def retrieve(
        self,
        name_or_id: str,
        *,
        timeout: Optional[float] = None,
        deadline: Optional[float] = None,
        extra_headers: Optional[Mapping[str, str]] = None,
    ) -> LoRA:
        """``GET /loras/{name_or_id}`` (404 -> NotFoundError, also for another organization's)."""
        call = self._requester.call(timeout=timeout, deadline=deadline, extra_headers=extra_headers)
        return self._retrieve(path_id(name_or_id, "LoRA name or id"), call)

    def _retrieve(self, name_or_id: str, call: Call) -> LoRA:
        return LoRA.from_dict(self._requester.request("GET", "/loras/" + name_or_id, call))

    def list(
        self,
        *,
        timeout: Optional[float] = None,
        deadline: Optional[float] = None,
        extra_headers: Optional[Mapping[str, str]] = None,
    ) -> List[LoRA]:
        """``GET /loras``: every LoRA of your organization."""
        call = self._requester.call(timeout=timeout, deadline=deadline, extra_headers=extra_headers)
        return [
            LoRA.from_dict(item)
            for item in list_data(self._requester.request("GET", "/loras", call), "LoRAs")
        ]

    def update(
        self,
        name: str,
        *,
        supported_models: Optional[Sequence[str]] = None,
        display_name: Optional[str] = None,
        description: Optional[str] = None,
        timeout: Optional[float] = None,
        deadline: Optional[float] = None,
        extra_headers: Optional[Mapping[str, str]] = None,
    ) -> LoRA:
        """``PATCH /loras/{name}``; newly added models get validations of their own."""
        call = self._requester.call(timeout=timeout, deadline=deadline, extra_headers=extra_headers)
        body: Dict[str, Any] = {}
        if supported_models is not None:
            body["supported_models"] = _models(supported_models)
        body.update(_texts(display_name=display_name, description=description))
        if not body:
            raise InvalidRequestError(
                "update needs at least one of supported_models, display_name, description"
            )
        return LoRA.from_dict(
            self._requester.request(
                "PATCH",
                "/loras/" + path_id(name, "LoRA name"),
                call,
                json_body=body,
                key_header="Idempotency-Key",
            )
        )

    def wait_for_validation(
        self,
        name: str,
        model: str,
        *,
        deadline: Optional[float] = None,
        timeout: Optional[float] = None,
        extra_headers: Optional[Mapping[str, str]] = None,
        on_poll: Optional[Callable[[LoRA], None]] = None,
    ) -> LoRA:
        """Block until ``model``'s latest validation of the LoRA is settled.

        Returns the LoRA when it is ``succeeded`` or ``unverified`` (both
        usable); raises :class:`LoRAValidationError` with ``result_code`` and
        ``result_message`` when it ``failed``, and
        :class:`DeadlineExceededError` after ``deadline`` seconds.
        ``on_poll(lora)`` sees every poll (progress).
        """
        call = self._requester.call(timeout=timeout, deadline=deadline, extra_headers=extra_headers)
        return self._wait_for_validation(path_id(name, "LoRA name"), model_id(model), call, on_poll)

    def _wait_for_validation(
        self, name: str, model: str, call: Call, on_poll: Optional[Callable[[LoRA], None]]
    ) -> LoRA:
        def settled(lora: LoRA) -> bool:
            if model not in lora.supported_models:
                raise InvalidRequestError(
                    f"LoRA {name!r} does not list {model!r} in supported_models; add it with client.loras.update"
                )
            validation = lora.latest_validation(model)
            if validation is not None and validation.status == "failed":
                raise LoRAValidationError(
                    "LoRA {!r} failed validation on {}: {} ({})".format(
                        name,
                        model,
                        validation.result_message or "no reason given",
                        validation.result_code,
                    ),
                    lora=lora,
                    model=model,
                    result_code=validation.result_code,
                    result_message=validation.result_message,
                )
            return validation is not None and validation.status in _USABLE

        return self._requester.poll_until(
            lambda: self._retrieve(name, call),
            settled,
            window=_VALIDATION_WINDOW,
            call=call,
            what=f"the validation of LoRA {name!r} on {model}",
            on_poll=on_poll,
        )

    def upload(
        self,
        adapter_dir: Union[str, os.PathLike[str]],
        *,
        name: str,
        supported_models: Sequence[str],
        display_name: Optional[str] = None,
        description: Optional[str] = None,
        wait: bool = True,
        progress: Optional[Callable[[int, int], None]] = None,
        preflight: bool = True,
        timeout: Optional[float] = None,
        deadline: Optional[float] = None,
        extra_headers: Optional[Mapping[str, str]] = None,
    ) -> LoRA:
        """From a PEFT folder to a usable LoRA in one call.

        Before a single byte is sent: checks the name, that it is free in
        your organization (a taken name raises :class:`ConflictError`, so a
        100 GiB adapter is not uploaded for nothing) and, with
        ``preflight``, the adapter itself (:class:`AdapterError` lists every
        problem). Then streams ``adapter_config.json`` and
        ``adapter_model.safetensors`` up, creates the LoRA, and with
        ``wait`` blocks until every supported model's validation is usable
        (see :meth:`wait_for_validation`). ``progress(bytes_sent, total)``
        covers both files; ``deadline`` covers the whole call.
        """
        check_lora_name(name)
        models = _models(supported_models)
        if progress is not None and not callable(progress):
            raise InvalidRequestError(
                f"progress must be a callable(bytes_sent, total), got {type(progress).__name__}"
            )
        _texts(display_name=display_name, description=description)
        config_path, weights_path = _adapter_files(adapter_dir, models, preflight)
        call = self._requester.call(timeout=timeout, deadline=deadline, extra_headers=extra_headers)
        self._check_name_free(name, call)
        uploads = self._upload_files((config_path, weights_path), progress, timeout, call)
        lora = self.create(
            name,
            supported_models=models,
            config_file_id=uploads[0].id,
            weights_file_id=uploads[1].id,
            display_name=display_name,
            description=description,
            timeout=timeout,
            deadline=self._remaining(call),
            extra_headers=extra_headers,
        )
        if wait:
            for model in models:
                lora = self._wait_for_validation(name, model, call, None)
        return lora

    def _upload_files(
        self,
        paths: Sequence[str],
        progress: Optional[Callable[[int, int], None]],
        timeout: Optional[float],
        call: Call,
    ) -> List[FileObject]:
        """Stream each file up in turn; ``progress`` sees the bytes sent of all of them."""
        sizes = [os.path.getsize(path) for path in paths]
        total, offset, uploads = sum(sizes), 0, []
        for path, size in zip(paths, sizes):
            tracker = None
            if progress is not None:
                tracker = partial(_progress_from, progress, offset, total)
            uploads.append(
                self._files.create(
                    path,
                    purpose="lora",
                    progress=tracker,
                    timeout=timeout,
                    deadline=self._remaining(call),
                    extra_headers=call.extra_headers,
                )
            )
            offset += size
        return uploads

    def _check_name_free(self, name: str, call: Call) -> None:
        # An adapter may be 100 GiB: learn that the name is taken before sending it, not from the
        # create's 409 afterwards. (Another caller may still take it in between: create's 409 covers that.)
        try:
            existing = self._retrieve(name, call)
        except NotFoundError:
            return
        raise ConflictError(
            f"a LoRA named {name!r} already exists in your organization (id {existing.id}): nothing was uploaded; pick another "
            f"name, or update it with client.loras.update({name!r}, ...)",
            status=409,
            code="lora_name_taken",
            param="name",
        )

    def _remaining(self, call: Call) -> Optional[float]:
        remaining = call.remaining(self._requester.clock())
        return None if remaining is None else max(remaining, 1e-3)


def _name_taken(name: str) -> str:
    return (
        f"a LoRA named {name!r} already exists in your organization: pick another name, or update it with "
        f"client.loras.update({name!r}, ...)"
    )


def _progress_from(
    progress: Callable[[int, int], None], offset: int, total: int, sent: int, _size: int
) -> None:
    progress(offset + sent, total)


def _adapter_files(adapter_dir: Any, models: Sequence[str], preflight: bool) -> Tuple[str, str]:
    """The adapter folder's config and weights paths, checked (with ``preflight``, the adapter too)."""
    from ..adapters import check_adapter_dir

    if not isinstance(adapter_dir, (str, os.PathLike)):
        raise InvalidRequestError(
            f"adapter_dir must be a folder path, got {type(adapter_dir).__name__}"
        )
    folder = os.fspath(adapter_dir)
    if not os.path.exists(folder):
        raise InvalidRequestError(f"adapter folder not found: {folder}")
    if not os.path.isdir(folder):
        raise InvalidRequestError(f"{folder} is not a folder: pass the PEFT adapter folder")
    config_path = os.path.join(folder, "adapter_config.json")
    weights_path = os.path.join(folder, "adapter_model.safetensors")
    if preflight:
        report = check_adapter_dir(folder, models)
        for warning in report.warnings:
            _logger.warning("%s", warning)
        report.raise_for_problems()
        return config_path, weights_path
    for path in (config_path, weights_path):
        if not os.path.isfile(path):
            raise InvalidRequestError(f"{path} is missing: a PEFT adapter folder holds both files")
    return config_path, weights_path
