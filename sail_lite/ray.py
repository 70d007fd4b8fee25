"""Sail on Ray Data: a callable class for ``Dataset.map_batches`` that samples without ever paying twice.

Install with ``pip install '.[ray]'`` from a checkout (``pip install
'sail-lite[ray]'`` from the package index). This module imports nothing
from Ray itself (Ray calls the class; nothing here needs ``import ray``), so
importing it never costs Ray's start-up time::

    import ray
    from sail_lite.ray import SailSampler

    ray.data.read_parquet("prompts.parquet").map_batches(  # a column of token-id lists
        SailSampler,
        fn_constructor_kwargs=dict(job="eval-2026-11-23", model="moonshotai/Kimi-K2.6", max_tokens=256),
        compute=ray.data.ActorPoolStrategy(size=4),  # four actors, one Client (pool, poller) each
        num_cpus=0.25,  # I/O-bound: the four hold one CPU, the read and write keep the rest
        batch_size=256,
    ).write_parquet("samples/")

Why a fraction of a CPU. A sampler waits on HTTP; its CPU use is a few
percent. An actor that reserves a whole CPU (Ray's default) blocks a CPU
that the parquet read and write need: with four such actors on two CPUs,
two actors stay pending, the read is never scheduled and the job hangs
without an error. Ray Data restarts a dead actor and retries its tasks by
default; the older ``concurrency=`` and extra ``ray.remote`` keywords
(``max_restarts=``...) are deprecated in current Ray and not needed.

How a retry stays free. Each row's idempotency key is derived from the
``job`` name and the row's content (``key_columns``, the prompt by default)
and its occurrence among equal rows of its batch. When a worker dies
mid-batch, or a task raises and Ray retries it, the retried batch sends the
same keys: the server returns the responses it already has (running or
done) instead of running inference again. No journal, no scheduler, no
shared state: Ray does the scheduling, the server's idempotency does the
de-duplication.

Equal prompts. Two equal rows in one batch are two samples (occurrences 0
and 1). Equal rows in *different* batches would get the same key and the
second would replay the first's sample; for group rollouts (the same prompt
sampled k times) add a column that tells the copies apart (e.g.
``sample_index``) and pass ``key_columns=("prompt_tokens", "sample_index")``.

Key retention bounds this. The server keeps an idempotency key for a limited
time (its idempotency retention window; wire.md does not pin it: sail_lite
and the emulator assume 24 h, see ``EmulatorServer(idempotency_retention=)``). A retry or a re-run of the same ``job``
inside that window is free. After it, the same key is a new request: the
server runs (and bills) inference again and returns a new sample. So a job
that is re-run days later, or a Ray retry that happens after the window,
pays again for the rows it re-sends; nothing is lost or mixed, only paid
twice. For a job that must survive longer than the window, write results
out as they come (``write_parquet`` per block) and re-run only the missing
rows, or run on one machine with a :class:`sail_lite.Journal`, which stores
response ids and results and re-attaches instead of re-creating. Changing a
parameter (model, temperature, ``max_tokens``...) under the same ``job``
makes the server answer ``400 idempotency_error`` for rows it has seen: use
a new job name for a new experiment.
"""

from __future__ import annotations

import os
from typing import Any, Dict, List, Mapping, Optional, Sequence

from .client import Client
from .errors import InvalidRequestError
from .pipeline import run_map

__all__ = ["SailSampler"]


def _as_list(value: Any) -> Any:
    """A column cell as plain JSON-able Python (numpy arrays and scalars included)."""
    tolist = getattr(value, "tolist", None)
    if callable(tolist):
        value = tolist()  # an object array's tolist() leaves inner arrays: recurse below
    if isinstance(value, (list, tuple)):
        return [_as_list(v) for v in value]
    return value


class SailSampler:
    """A ``map_batches`` callable class: one :class:`~sail_lite.Client` per worker, rows sampled via ``tokens.submit``.

    Constructor (pass through ``fn_constructor_kwargs``):

    - ``job``: the job name every row's key derives from (required: it is
      what makes a retry replay instead of re-bill);
    - ``model``, ``max_tokens`` and any other :meth:`Tokens.submit` sampling
      keyword (``temperature``, ``stop``, ``completion_window``, ...);
    - ``prompt_column`` (default ``"prompt_tokens"``): a column of token-id
      lists; ``key_columns`` (default: the prompt column): the columns that
      name a row in its key;
    - ``api_key`` / ``base_url`` (default: ``SAIL_API_KEY`` /
      ``SAIL_BASE_URL`` on the worker; prefer ``runtime_env`` env vars to
      keep the key out of task arguments), ``client_options`` (more
      :class:`Client` arguments), ``max_in_flight`` per worker (default 64);
    - ``errors``: ``"raise"`` (default: a failed row fails the task, and Ray's
      retry replays the rows already done) or ``"column"`` (the error's
      ``type: message`` lands in an ``error`` column, ``None`` elsewhere).

    ``__call__(batch)`` takes a batch as a mapping of columns (``"numpy"`` or
    ``"default"`` batch format; ``"pandas"`` works too) and returns it with
    ``tokens``, ``logprobs``, ``stop_reason``, ``response_id`` (and
    ``error``) columns added, rows in order.
    """

    def __init__(
        self,
        *,
        job: str,
        model: str,
        max_tokens: int,
        prompt_column: str = "prompt_tokens",
        key_columns: Optional[Sequence[str]] = None,
        api_key: Optional[str] = None,
        base_url: Optional[str] = None,
        client_options: Optional[Mapping[str, Any]] = None,
        max_in_flight: int = 64,
        errors: str = "raise",
        **sampling: Any,
    ) -> None:
        if not isinstance(job, str) or not job:
            raise InvalidRequestError(
                "SailSampler needs job=..., the name each row's idempotency key derives from"
            )
        if errors not in ("raise", "column"):
            raise InvalidRequestError(f"errors must be 'raise' or 'column', got {errors!r}")
        self.job = job
        self.prompt_column = prompt_column
        self.key_columns = tuple(key_columns) if key_columns is not None else (prompt_column,)
        self.max_in_flight = max_in_flight
        self.errors = errors
        self.sampling: Dict[str, Any] = dict(sampling, model=model, max_tokens=max_tokens)
        self.client = Client(api_key, base_url=base_url, **dict(client_options or {}))
        self.pid = os.getpid()

    def __call__(self, batch: Any) -> Any:
        columns = list(batch.keys()) if hasattr(batch, "keys") else []
        missing = [c for c in (self.prompt_column,) + self.key_columns if c not in columns]
        if missing:
            raise InvalidRequestError(
                f"the batch has no column(s) {', '.join(missing)} "
                f"(columns: {', '.join(map(str, columns))})"
            )
        prompts = [_as_list(p) for p in batch[self.prompt_column]]
        names = [[_as_list(v) for v in batch[c]] for c in self.key_columns]
        items = [[prompt, [column[i] for column in names]] for i, prompt in enumerate(prompts)]
        tokens = self.client.tokens
        sampling = self.sampling

        def submit(item: Any, key: Optional[str]) -> Any:
            return tokens.submit(item[0], idempotency_key=key, **sampling)

        results = list(
            run_map(
                items,
                submit=submit,
                attach=tokens.attach,
                job=self.job,
                kind="tokens",
                params=sampling,
                identity=lambda item: item[1],
                max_in_flight=self.max_in_flight,
                return_exceptions=self.errors == "column",
                on_interrupt="cancel",
            )
        )
        out: Dict[str, List[Any]] = {
            "tokens": [],
            "logprobs": [],
            "stop_reason": [],
            "response_id": [],
            "error": [],
        }
        for result in results:
            if isinstance(result, BaseException):
                for name in ("tokens", "logprobs", "stop_reason", "response_id"):
                    out[name].append(None)
                out["error"].append(f"{type(result).__name__}: {result}")
                continue
            out["tokens"].append(list(result.tokens))
            out["logprobs"].append(None if result.logprobs is None else list(result.logprobs))
            out["stop_reason"].append(result.stop_reason)
            out["response_id"].append(result.response_id)
            out["error"].append(None)
        if self.errors == "raise":
            del out["error"]
        for name, values in out.items():
            batch[name] = values
        return batch

    def __del__(self) -> None:
        client = getattr(self, "client", None)
        if client is not None:
            try:
                client.close()
            except Exception:  # interpreter shutdown: nothing left to close cleanly
                pass
