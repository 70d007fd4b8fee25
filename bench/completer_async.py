"""256 concurrent ``await completer(...)`` on 0.2 s turns: sail_lite's shim vs an executor shim.

The shim under test bridges the client's futures into asyncio (no thread per
await). The alternative is what a sync completer usually gets wrapped in:
``loop.run_in_executor(None, completer.sample_tokens, ...)``, i.e. asyncio's
default executor (min(32, cpus + 4) threads) holding a thread per blocked
sample. Both talk to the same emulator, run in its own process, with every
window's turn set to 0.2 s; both use the default PollPolicy.

    python bench/completer_async.py [--n 256] [--turn 0.2] [--rounds 3]

Needs tinker-cookbook (pip install 'sail_lite[tinker]'). Prints the best of
``--rounds`` for each, and the ratio.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _emulator import EmulatorProcess  # noqa: E402

from sail_lite import Client, SailTokenCompleter  # noqa: E402

MODEL = "moonshotai/Kimi-K2.6"


async def shim(completer: SailTokenCompleter, prompts: list) -> float:
    started = time.perf_counter()
    results = await asyncio.gather(*(completer(prompt, ["\n"]) for prompt in prompts))
    assert all(result.tokens for result in results)
    return time.perf_counter() - started


async def executor(completer: SailTokenCompleter, prompts: list) -> float:
    loop = asyncio.get_running_loop()
    started = time.perf_counter()
    results = await asyncio.gather(
        *(loop.run_in_executor(None, completer.sample_tokens, prompt, ["\n"]) for prompt in prompts)
    )
    assert all(result.tokens for result in results)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=256)
    parser.add_argument("--turn", type=float, default=0.2)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    windows = {window: args.turn for window in ("asap", "priority", "standard", "flex")}
    prompts = [[(i % 90) + 32, 10, 65] for i in range(args.n)]
    with EmulatorProcess(windows) as emulator:
        client = Client(emulator.api_key, base_url=emulator.base_url, environ={})
        completer = SailTokenCompleter(model=MODEL, max_tokens=8, client=client)
        completer.sample_tokens([1, 2, 3])  # connections and imports warmed up
        best = {}
        for name, run in (
            ("sail_lite shim (wrap_future)", shim),
            ("run_in_executor(None, sample_tokens)", executor),
        ):
            best[name] = min(asyncio.run(run(completer, prompts)) for _ in range(args.rounds))
        client.close()
    ours, theirs = best.values()
    print(
        f"{args.n} concurrent awaits, {args.turn:.2f} s turns, best of {args.rounds} (emulator in its own process):"
    )
    for name, seconds in best.items():
        print(f"  {name:<40} {seconds:7.3f} s")
    print(f"  ratio (executor / shim)                  {theirs / ours:7.1f}x")


if __name__ == "__main__":
    main()
