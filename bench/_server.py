"""The emulator with bench hooks, run in its own process by ``_emulator.EmulatorProcess(hooks=True)``.

Hooks (all bench-only, added around ``sail_lite.emulator``'s ``State`` without
changing it):

- a request may carry ``metadata.bench_turn`` (seconds) and
  ``metadata.bench_spread`` (0.2 = uniformly +-20%): that response's turn is
  drawn from them instead of the window's configured turn, so one emulator
  serves every cell of a benchmark;
- every response object gains ``_bench_end_at`` (the server's wall-clock
  time at which it became terminal) and ``_bench_polls`` (how many times it
  was read, this read included), so a benchmark measures "delay after
  completion" and "polls per sample" exactly, from the server's side.

If the emulator's internals changed so a hook cannot be installed, the server
still runs (fixed turns per window) and says which hook is off on stdout.
"""

from __future__ import annotations

import argparse
import collections
import json
import random
import sys
import threading
from typing import Any, Dict


def install_hooks(state: Any, seed: int = 0) -> Dict[str, bool]:
    """Wrap ``state``'s response methods; returns which hooks are on."""
    rng = random.Random(seed)
    lock = threading.Lock()
    reads: Dict[str, int] = collections.Counter()
    installed = {"turns": False, "end_at": False, "polls": False}

    create = getattr(state, "create_response", None)
    if create is not None:

        def create_response(org: Any, params: Any, *args: Any, **kwargs: Any) -> Any:
            record = create(org, params, *args, **kwargs)
            metadata = getattr(params, "metadata", None) or {}
            if "bench_turn" in metadata:
                turn = float(metadata["bench_turn"])
                spread = float(metadata.get("bench_spread", 0.0))
                with lock:
                    turn *= 1.0 + spread * (2.0 * rng.random() - 1.0)
                record.start_at = record.created_at + turn / 2.0
                record.end_at = record.created_at + turn
            return record

        state.create_response = create_response
        installed["turns"] = True

    get = getattr(state, "get_response", None)
    if get is not None:

        def get_response(org: Any, response_id: str, *args: Any, **kwargs: Any) -> Any:
            record = get(org, response_id, *args, **kwargs)
            with lock:
                reads[response_id] += 1
            return record

        state.get_response = get_response
        installed["polls"] = True

    render = getattr(state, "response_json", None)
    if render is not None:

        def response_json(record: Any, *args: Any, **kwargs: Any) -> Dict[str, Any]:
            body = render(record, *args, **kwargs)
            if isinstance(body, dict):
                body["_bench_end_at"] = getattr(record, "cancelled_at", None) or getattr(
                    record, "end_at", None
                )
                with lock:
                    body["_bench_polls"] = reads.get(getattr(record, "id", ""), 0)
            return body

        state.response_json = response_json
        installed["end_at"] = True
    return installed


def main() -> int:
    from sail_lite.emulator import EmulatorServer
    from sail_lite.emulator.__main__ import announce_and_serve

    try:
        from sail_lite.emulator import TURN_PRESETS

        windows = list(TURN_PRESETS["fast"])
    except (ImportError, KeyError):
        windows = ["asap", "balanced", "flex"]
    parser = argparse.ArgumentParser()
    parser.add_argument("--turn", type=float, default=0.0, help="every window's turn (seconds)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    server = EmulatorServer(port=0, seed=args.seed, turn_times={w: args.turn for w in windows})
    hooks = install_hooks(server.state, args.seed)
    server.start()
    return announce_and_serve(
        server,
        sys.stdout,
        extra=[f"windows: {json.dumps(windows)}", f"bench hooks: {json.dumps(hooks)}"],
    )


if __name__ == "__main__":
    sys.exit(main())
