"""``sail-lite demo``: the main job, end to end, in one command.

Samples token ids with logprobs from raw-token prompts, then pre-flights,
uploads, validates and uses a LoRA. Where it runs: with ``--api-key`` (or
``SAIL_API_KEY``) against the Sail API, or the server ``--base-url`` (or
``SAIL_BASE_URL``) names; with no key, or with ``--offline``, against an
emulator it starts in-process, so it runs anywhere with no network and no
account. Results go to stdout; progress lines go to stderr.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import tempfile
import time
import uuid
from dataclasses import dataclass
from typing import Any, Iterator, List, Mapping, Optional, Sequence, TextIO, Tuple

from ._progress import ProgressBar

__all__ = ["DESCRIPTION", "WINDOWS", "add_arguments", "run", "run_from_args"]

MODEL = "moonshotai/Kimi-K2.6"
PROMPTS = (
    "Question: 2+2?\nAnswer:",
    "The capital of France is",
    "def fibonacci(n):",
    "Once upon a time",
)
#: Raw-token sampling always runs in the background, and background requests cannot use asap.
WINDOWS = ("balanced", "flex", "standard")
SHOWN_LOGPROBS = 6
DESCRIPTION = (
    "The main job, end to end: sample token ids with logprobs from raw-token prompts, then pre-flight, "
    "upload, validate and use a LoRA. It runs against the server --base-url/$SAIL_BASE_URL names (the Sail "
    "API by default) when an API key is given (--api-key or $SAIL_API_KEY); with no key, or with --offline, "
    "it starts an emulator in-process. Results go to stdout, progress to stderr."
)


class DemoUsageError(ValueError):
    """The demo's options contradict each other (the CLI exits 2)."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The demo's own options (the CLI adds ``--window`` and the connection options)."""
    parser.add_argument("--model", default=MODEL, help=f"model to sample (default: {MODEL})")
    parser.add_argument(
        "--max-tokens", type=int, default=24, metavar="N", help="tokens per sample (default 24)"
    )
    parser.add_argument(
        "--temperature",
        type=float,
        default=1.0,
        help="temperature of the first samples (default 1.0; 0 samples greedily); the base/LoRA "
        "comparison is always greedy",
    )
    parser.add_argument(
        "--offline",
        action="store_true",
        help="use an in-process emulator even when SAIL_API_KEY is set",
    )


@contextlib.contextmanager
def _connection(
    api_key: Optional[str],
    base_url: Optional[str],
    offline: bool,
    environ: Mapping[str, str],
    err: TextIO,
) -> Iterator[Tuple[str, Optional[str], str, Any]]:
    """``(api_key, base_url, where, poll)``: the given server or the Sail API when there is a key, else an
    emulator (whose turns take milliseconds, so it is polled every few milliseconds; ``poll`` None: defaults)."""
    from ._redact import redact_url

    if offline and (api_key or base_url):
        raise DemoUsageError(
            "--offline runs against an in-process emulator: drop --api-key and --base-url"
        )
    key = None if offline else (api_key or environ.get("SAIL_API_KEY") or None)
    if base_url and not key:
        raise DemoUsageError(
            f"--base-url {redact_url(base_url)} needs an API key too: pass --api-key KEY or set SAIL_API_KEY"
        )
    if key:
        url = base_url or environ.get("SAIL_BASE_URL") or None
        yield key, url, redact_url(url) if url else "the Sail API", None
        return
    from .emulator import EmulatorServer
    from .polling import PollPolicy

    with EmulatorServer() as server:
        why = "--offline" if offline else "no API key"
        err.write(f"{why}: started an offline emulator at {server.base_url}\n")
        yield (
            server.api_key,
            server.base_url,
            f"the offline emulator at {server.base_url}",
            PollPolicy(initial_interval=0.01, default_max_interval=0.05, max_interval={}),
        )


def _text(tokens: Sequence[int]) -> str:
    return repr(bytes(t for t in tokens if 0 <= t < 256).decode("utf-8", "replace")[:40])


def _logprobs(logprobs: Optional[Sequence[float]]) -> str:
    if not logprobs:
        return "no logprobs returned"
    shown = " ".join(f"{lp:.2f}" for lp in logprobs[:SHOWN_LOGPROBS])
    more = " ..." if len(logprobs) > SHOWN_LOGPROBS else ""
    return f"logprobs {shown}{more} (mean {sum(logprobs) / len(logprobs):.2f})"


def _validation(lora: Any, model: str) -> str:
    validation = lora.latest_validation(model)
    status = validation.status if validation is not None else None
    if status is None:
        return f"not validated on {model}"
    if status == "unverified":
        return f"validation unverified on {model} (usable: the service could not check it automatically)"
    return f"validation {status} on {model}"


def _gather(futures: Sequence[Any], progress: ProgressBar) -> List[Any]:
    results = []
    for done, future in enumerate(futures, 1):
        results.append(future.result())
        progress(done, len(futures))
    return results


@dataclass(frozen=True)
class _Demo:
    """One demo run's settings and where it writes."""

    client: Any
    out: TextIO
    err: TextIO
    max_tokens: int
    window: str
    temperature: float
    model: str
    tty: bool

    def submit(self, prompts: Sequence[List[int]], **options: Any) -> List[Any]:
        """Submit every prompt at once (futures, in order)."""
        return [
            self.client.tokens.submit(
                p,
                model=self.model,
                max_tokens=self.max_tokens,
                completion_window=self.window,
                stop=["\n"],
                **options,
            )
            for p in prompts
        ]

    def gather(self, futures: Sequence[Any]) -> List[Any]:
        """The futures' results in order, with a progress bar."""
        return _gather(futures, ProgressBar("   sampling", self.err, in_bytes=False, tty=self.tty))


def run(
    client: Any,
    out: TextIO,
    err: TextIO,
    *,
    max_tokens: int,
    window: str,
    temperature: float = 1.0,
    model: str = MODEL,
    tty: bool = False,
) -> int:
    """The demo on an open client; returns the process exit code (errors raise ``SailError``)."""
    demo = _Demo(client, out, err, max_tokens, window, temperature, model, tty)
    prompts: List[List[int]] = [list(p.encode("utf-8")) for p in PROMPTS]
    _sample_step(demo, prompts)
    name = _upload_step(demo)
    _compare_step(demo, prompts, name)
    return 0


def _sample_step(demo: _Demo, prompts: Sequence[List[int]]) -> None:
    how = (
        "greedily (temperature 0: the most likely token each step)"
        if demo.temperature == 0
        else f"at temperature {demo.temperature:g}"
    )
    demo.out.write(
        f"1. Sampling {len(prompts)} raw-token prompts on {demo.model} {how}, "
        f"{demo.window} window, logprobs on:\n"
    )
    started = time.monotonic()
    first = demo.gather(demo.submit(prompts, temperature=demo.temperature))
    for prompt, result in zip(PROMPTS, first):
        demo.out.write(
            f"   {repr(prompt):<28} -> {_text(result.tokens)}  ({len(result.tokens)} tokens, "
            f"stop_reason={result.stop_reason})\n"
        )
        demo.out.write(f"   {'':<28}    {_logprobs(result.logprobs)}\n")
    demo.out.write(f"   {len(first)} samples in {time.monotonic() - started:.2f} s\n")


def _upload_step(demo: _Demo) -> str:
    from .adapters import make_adapter

    name = "sail-lite-demo-" + uuid.uuid4().hex[:8]
    with tempfile.TemporaryDirectory(prefix="sail-lite-demo-") as folder:
        adapter = make_adapter(
            os.path.join(folder, "adapter"), base_model=demo.model, rank=8, seed=7
        )
        demo.out.write(
            f"2. Uploading LoRA {name!r} (a generated rank-8 PEFT adapter): "
            "pre-flight, upload, validation\n"
        )
        lora = demo.client.loras.upload(
            adapter,
            name=name,
            supported_models=[demo.model],
            wait=True,
            progress=ProgressBar("   uploading", demo.err, tty=demo.tty),
        )
    demo.out.write(f"   LoRA {lora.name!r} (id {lora.id}): {_validation(lora, demo.model)}\n")
    return name


def _compare_step(demo: _Demo, prompts: Sequence[List[int]], name: str) -> None:
    demo.out.write(
        f"3. Greedy decoding (temperature 0) of the same prompts, without and with LoRA {name!r}, "
        f"{demo.window} window:\n"
    )
    # Both sets in flight at once: one turn of the window, not two.
    base = demo.submit(prompts, temperature=0.0)
    tuned = demo.submit(prompts, temperature=0.0, lora=name)
    results = demo.gather(base + tuned)
    base_results, tuned_results = results[: len(base)], results[len(base) :]
    changed = 0
    for prompt, base, tuned in zip(PROMPTS, base_results, tuned_results):
        demo.out.write(
            f"   {repr(prompt)}\n      base model: {_text(base.tokens)}\n"
            f"      with LoRA:  {_text(tuned.tokens)}\n"
        )
        changed += base.tokens != tuned.tokens
    demo.out.write(f"   LoRA {name!r} changed {changed} of {len(prompts)} greedy continuations\n")


def run_from_args(
    args: argparse.Namespace,
    *,
    out: TextIO,
    err: TextIO,
    api_key: Optional[str],
    base_url: Optional[str],
    window: str,
    environ: Mapping[str, str],
    tty: bool,
) -> int:
    """``sail-lite demo``: pick the server (see the module docstring), then :func:`run`."""
    from .client import Client

    if args.max_tokens < 1:
        raise DemoUsageError(f"--max-tokens must be >= 1, got {args.max_tokens}")
    with _connection(api_key, base_url, args.offline, environ, err) as (key, url, where, poll):
        out.write(f"sail-lite demo against {where}\n")
        with Client(key, base_url=url, poll=poll, environ=environ) as client:
            return run(
                client,
                out,
                err,
                max_tokens=args.max_tokens,
                window=window,
                temperature=args.temperature,
                model=args.model,
                tty=tty,
            )
