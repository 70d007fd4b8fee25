"""``sail-lite demo``: the main job, end to end, in one command.

Samples token ids with logprobs from raw-token prompts, then pre-flights,
uploads, validates and uses a LoRA. With ``SAIL_API_KEY`` set it talks to
the Sail API (``SAIL_BASE_URL`` optional); otherwise it starts an in-process
emulator first, so it runs anywhere with no network and no account.
Results go to stdout; progress lines go to stderr.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
import time
import uuid
from typing import Any, Iterator, List, Optional, Sequence, TextIO, Tuple

from ._progress import ProgressBar

__all__ = ["main"]

MODEL = "moonshotai/Kimi-K2.6"
PROMPTS = ("Question: 2+2?\nAnswer:", "The capital of France is", "def fibonacci(n):", "Once upon a time")


@contextlib.contextmanager
def _connection(environ: Any, err: TextIO) -> Iterator[Tuple[str, Optional[str], str]]:
    """``(api_key, base_url, where)``: the real service when SAIL_API_KEY is set, else an emulator."""
    key = environ.get("SAIL_API_KEY")
    if key:
        yield key, environ.get("SAIL_BASE_URL"), "the Sail API"
        return
    from .emulator import EmulatorServer

    with EmulatorServer() as server:
        err.write("no SAIL_API_KEY: started an offline emulator at {}\n".format(server.base_url))
        yield server.api_key, server.base_url, "the offline emulator"


def _show(out: TextIO, label: str, tokens: Sequence[int], logprobs: Optional[Sequence[float]], reason: str) -> None:
    text = bytes(t for t in tokens if 0 <= t < 256).decode("utf-8", "replace")
    mean = sum(logprobs) / len(logprobs) if logprobs else float("nan")
    out.write("  {:<28} -> {!r} ({} tokens, stop_reason={}, mean logprob {:.3f})\n".format(
        label, text[:40], len(tokens), reason, mean))


def run(client: Any, out: TextIO, err: TextIO, *, max_tokens: int, window: str) -> int:
    """The demo on an open client; returns the process exit code."""
    from .adapters import make_adapter

    prompts: List[List[int]] = [list(p.encode("utf-8")) for p in PROMPTS]
    out.write("1. Sampling {} raw-token prompts on {} ({} window, logprobs on):\n".format(
        len(prompts), MODEL, window))
    started = time.monotonic()
    progress = ProgressBar("   sampling", err, in_bytes=False)
    futures = [client.tokens.submit(p, model=MODEL, max_tokens=max_tokens, temperature=0.0,
                                    completion_window=window, stop=["\n"]) for p in prompts]
    base = []
    for done, future in enumerate(futures, 1):
        base.append(future.result())
        progress(done, len(futures))
    for prompt, result in zip(PROMPTS, base):
        _show(out, repr(prompt), result.tokens, result.logprobs, result.stop_reason)
    out.write("   {} samples in {:.2f} s\n".format(len(base), time.monotonic() - started))

    name = "sail-lite-demo-" + uuid.uuid4().hex[:8]
    with tempfile.TemporaryDirectory(prefix="sail-lite-demo-") as folder:
        adapter = make_adapter(os.path.join(folder, "adapter"), base_model=MODEL, rank=8, seed=7)
        out.write("2. Uploading LoRA {!r} from {} (pre-flight, upload, validation):\n".format(name, adapter))
        lora = client.loras.upload(adapter, name=name, supported_models=[MODEL], wait=True,
                                   progress=ProgressBar("   uploading", err))
    validation = lora.latest_validation(MODEL)
    out.write("   LoRA {} is {} on {}\n".format(lora.id, validation.status if validation else "unvalidated", MODEL))

    lora_window = "priority" if window == "asap" else window
    out.write("3. The same prompts with the LoRA (temperature 0, {} window):\n".format(lora_window))
    tuned = [f.result() for f in [client.tokens.submit(p, model=MODEL, max_tokens=max_tokens, temperature=0.0,
                                                       completion_window=lora_window, stop=["\n"], lora=name)
                                  for p in prompts]]
    changed = 0
    for prompt, before, after in zip(PROMPTS, base, tuned):
        _show(out, repr(prompt), after.tokens, after.logprobs, after.stop_reason)
        changed += before.tokens != after.tokens
    out.write("   the LoRA changed {} of {} greedy samples\n".format(changed, len(prompts)))
    return 0


def main(argv: Optional[Sequence[str]] = None, *, out: TextIO = sys.stdout, err: TextIO = sys.stderr) -> int:
    parser = argparse.ArgumentParser(prog="sail-lite demo", description=__doc__.splitlines()[0])
    parser.add_argument("--max-tokens", type=int, default=24)
    parser.add_argument("--window", default="priority", help="completion window for the base samples")
    args = parser.parse_args(argv)
    from .client import Client
    from .errors import SailError

    with _connection(os.environ, err) as (api_key, base_url, where):
        out.write("sail-lite demo against {}\n".format(where))
        try:
            with Client(api_key, base_url=base_url) as client:
                return run(client, out, err, max_tokens=args.max_tokens, window=args.window)
        except SailError as exc:
            err.write("sail-lite demo: error: {}\n".format(exc))
            return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
