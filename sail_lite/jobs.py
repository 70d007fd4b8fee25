"""``sail-lite jobs status`` and ``sail-lite jobs resume``: a journal's state, and finishing it.

:func:`summarize` opens the journal read-only (it never writes the file) and reports, per job,
the requests by status, those never submitted (the run stopped before reading them: only the
job's script can send them), the failures and their codes. :func:`resume` runs a job's
unfinished requests from the journal alone. The journal's rows are data, not arguments: a job's
recorded parameters and items are checked against what its kind of call can take before
anything is sent, and an unreadable row is a :class:`JournalError` naming it.
"""

from __future__ import annotations

import os
import time
from typing import Any, Dict, FrozenSet, Mapping, Optional

from ._redact import redact_url
from .journal import (
    DEFAULT_IDEMPOTENCY_RETENTION,
    STATUSES,
    UNFINISHED,
    Journal,
    JournalError,
    JournalRow,
    decode_error,
    load_json,
)
from .pipeline import resume_rows

__all__ = ["summarize", "resume", "RESUMABLE_PARAMETERS", "incomplete"]

_TOKEN_PARAMETERS = frozenset(
    {
        "model",
        "max_tokens",
        "stop",
        "temperature",
        "top_p",
        "completion_window",
        "lora",
        "tinker_lora_signed_url",
        "adapter_config",
        "tinker_lora_name",
        "metadata",
        "logprobs",
    }
)
_RESPONSE_PARAMETERS = frozenset(
    {
        "model",
        "input",
        "raw_prompt_tokens",
        "max_output_tokens",
        "temperature",
        "top_p",
        "stop",
        "include",
        "metadata",
        "lora",
        "completion_window",
        "prompt_cache_key",
        "extra_body",
    }
)
#: What a resumed job's recorded parameters (and a mapping item's keys) may name, per kind: the
#: sampling arguments of ``tokens.submit`` / ``responses.submit``, never headers, keys,
#: timeouts or journals (those belong to the caller who resumes, not to the file).
RESUMABLE_PARAMETERS: Mapping[str, FrozenSet[str]] = {
    "tokens": _TOKEN_PARAMETERS,
    "responses": _RESPONSE_PARAMETERS,
    "tokens.submit": frozenset(),
    "responses.submit": frozenset(),
}


# --- status ------------------------------------------------------------------------------------


def _shown_params(params: Mapping[str, Any]) -> Dict[str, Any]:
    # A signed URL's query is a credential (already redacted at rest; this is for older files).
    return {
        k: redact_url(v) if isinstance(v, str) and v.startswith(("http://", "https://")) else v
        for k, v in params.items()
    }


def _failure(journal: Journal, row: JournalRow) -> Dict[str, Any]:
    error = decode_error(row.error_json or "{}", f"the error of request #{row.position}")
    return {
        "key": row.key,
        "position": row.position,
        "type": type(error).__name__,
        "code": error.code,
        "message": error.message,
        "response_id": row.response_id,
    }


def _job_summary(journal: Journal, name: str, max_failures: int) -> Dict[str, Any]:
    info = journal.job(name)
    if info is None:
        raise JournalError(f"no job {name!r} in {journal.path}")
    counts = journal.counts(name)
    recorded = sum(counts.values())
    total = info["total"]
    never = max(0, total - recorded) if isinstance(total, int) else 0
    return {
        "job": name,
        "kind": info["kind"],
        "params": _shown_params(info["params"]),
        "total": total,
        "counts": counts,
        "never_submitted": never,
        "unfinished": sum(counts[s] for s in UNFINISHED) + never,
        "past_retention": journal.count_past_retention(name),
        "failure_codes": journal.failure_codes(name),
        "failures": [_failure(journal, row) for row in journal.failed_rows(name, max_failures)],
        "errors": journal.transient_errors(name),
    }


def summarize(
    path: os.PathLike[str] | str,
    *,
    max_failures: int = 20,
    idempotency_retention: float = DEFAULT_IDEMPOTENCY_RETENTION,
    clock: Any = time.time,
) -> Dict[str, Any]:
    """What ``sail-lite jobs status FILE`` prints, as data. Opens the journal read-only.

    Returns ``{"path", "idempotency_retention", "counts": {status: n},
    "never_submitted", "unfinished", "past_retention", "jobs": [{"job", "kind", "params",
    "total", "counts", "never_submitted", "unfinished", "past_retention",
    "failure_codes": {code: n}, "failures": [{"key", "position", "type", "code", "message",
    "response_id"}] (the first ``max_failures`` in input order), "errors": {type: n}
    (retryable errors seen on unfinished requests)}]}``. ``never_submitted`` counts the items
    of a map that stopped before reading them (the job's ``total`` minus its rows): they are
    not in the file, so only the job's script can send them; ``unfinished`` includes them.
    ``past_retention`` counts the ``pending`` requests whose key was claimed more than
    ``idempotency_retention`` seconds ago (a resume re-sends them, and the server may bill them
    again). Raises :class:`JournalError` when ``path`` is not a journal or a
    record in it is unreadable (naming it).
    """
    with Journal(
        path, read_only=True, idempotency_retention=idempotency_retention, clock=clock
    ) as journal:
        jobs = [_job_summary(journal, name, max_failures) for name in journal.jobs()]
        totals = {status: sum(job["counts"][status] for job in jobs) for status in STATUSES}
        return {
            "path": journal.path,
            "idempotency_retention": journal.idempotency_retention,
            "counts": totals,
            "never_submitted": sum(job["never_submitted"] for job in jobs),
            "unfinished": sum(job["unfinished"] for job in jobs),
            "past_retention": sum(job["past_retention"] for job in jobs),
            "jobs": jobs,
        }


def incomplete(summary: Mapping[str, Any]) -> Optional[str]:
    """What keeps a summary's journal from being done, in one line, or None when every request completed."""
    counts = summary["counts"]
    parts = []
    if summary.get("unfinished"):
        parts.append(f"{summary['unfinished']} request(s) not finished")
    if summary.get("never_submitted"):
        parts.append(f"{summary['never_submitted']} never submitted: run the job's script again")
    if counts.get("failed"):
        parts.append(f"{counts['failed']} failed")
    return "; ".join(parts) or None


# --- resume ------------------------------------------------------------------------------------


def _check_names(where: str, names: Any, allowed: FrozenSet[str], kind: str) -> None:
    refused = sorted(str(name) for name in names if name not in allowed)
    if refused:
        raise JournalError(
            f"{where} names {', '.join(map(repr, refused))}, which a {kind} job cannot take: "
            "a resume sends only sampling parameters (was the file edited?)"
        )


def _check_item(kind: str, job: str, row: JournalRow) -> None:
    where = f"the item of request #{row.position} of job {job!r}"
    if row.item_json is None:
        return  # an accepted request is re-attached by response id: it needs no item
    item = load_json(row.item_json, where)
    allowed = RESUMABLE_PARAMETERS[kind]
    if kind == "tokens" and isinstance(item, list):
        return
    if kind == "responses" and isinstance(item, str):
        return
    if not isinstance(item, dict):
        raise JournalError(f"{where} is not a request this job can send (was the file edited?)")
    if kind in ("tokens", "responses"):
        _check_names(where, set(item) - {"prompt_tokens"}, allowed, kind)


def check_resumable(journal: Journal, job: str, *, retry_failed: bool = False) -> Dict[str, Any]:
    """``job``'s record, checked: a known kind, parameters it can take, items that can be read.

    Raises :class:`JournalError` naming the job, or the row, that cannot be resumed.
    """
    info = journal.job(job)
    if info is None:
        raise JournalError(f"no job {job!r} in {journal.path}")
    kind = info["kind"]
    if kind not in RESUMABLE_PARAMETERS:
        raise JournalError(
            f"job {job!r} was recorded by a custom run_map (kind {kind!r}): resume it by "
            "running its script again"
        )
    _check_names(
        f"job {job!r}'s recorded parameters", info["params"], RESUMABLE_PARAMETERS[kind], kind
    )
    statuses = UNFINISHED + (("failed",) if retry_failed else ())
    for row in journal.rows(job, statuses=statuses):
        _check_item(kind, job, row)
    return info


def resume(
    path: os.PathLike[str] | str,
    client: Any,
    *,
    job: Optional[str] = None,
    max_in_flight: int = 64,
    retry_failed: bool = False,
    progress: Any = None,
    on_interrupt: str = "leave",
) -> Dict[str, Any]:
    """Finish journaled jobs from the journal alone (``sail-lite jobs resume FILE``).

    Runs every unfinished request the journal knows (``pending``: re-sent with its key, so the
    server replays it if it got it; ``accepted``: re-attached by response id; ``cancelled``:
    re-sent under the next attempt key; ``failed`` too with ``retry_failed``), in input order,
    with the parameters recorded at the job's first run, for jobs recorded by ``tokens.map`` /
    ``responses.map`` and ``tokens.submit`` / ``responses.submit`` with a journal. Every job
    to run is checked first (:func:`check_resumable`): nothing is sent for a file with a
    crafted or unreadable record. Items the original run never read are not in the journal
    (``never_submitted``): re-run the script for those. ``job`` picks one job (default: all).
    ``progress`` is the callback of :func:`sail_lite.pipeline.run_map`. Returns ``{"jobs":
    {job: {"ran", "completed", "failed"}}, "summary": summarize(path)}`` (whose ``never_submitted``
    says what only the script can send);
    failures are recorded, not raised.
    """
    outcome: Dict[str, Any] = {}
    with Journal(path, create=False) as journal:
        names = [job] if job is not None else journal.jobs()
        for name in names:
            check_resumable(journal, name, retry_failed=retry_failed)
        for name in names:
            outcome[name] = dict(
                resume_rows(
                    journal,
                    name,
                    client,
                    max_in_flight=max_in_flight,
                    retry_failed=retry_failed,
                    progress=progress,
                    on_interrupt=on_interrupt,
                )
            )
    return {"jobs": outcome, "summary": summarize(path)}
