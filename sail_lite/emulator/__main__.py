"""``python -m sail_lite.emulator``: run the emulator in the foreground (also ``sail-lite emulator``)."""
from __future__ import annotations

import argparse
import json
import sys
from typing import Optional, Sequence, TextIO

from . import TURN_PRESETS, EmulatorServer

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m sail_lite.emulator",
                                     description="An offline, Sail-compatible API server.")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8080, help="port (default 8080; 0 picks a free one)")
    parser.add_argument("--seed", type=int, default=0, help="the reference model's seed")
    parser.add_argument("--preset", choices=sorted(TURN_PRESETS), default="fast",
                        help="turn times: fast (milliseconds) or realistic (priority ~60 s, standard ~300 s)")
    parser.add_argument("--turn-times", metavar="JSON", help='per-window seconds, e.g. \'{"priority": 2}\'')
    parser.add_argument("--api-key", help="the API key to accept (default: a fresh random one)")
    parser.add_argument("--admin-token", help="the token for /_emulator/ routes (default: random)")
    parser.add_argument("--max-file-bytes", type=int, default=100 * 1024 ** 3, help="upload size limit")
    return parser


def main(argv: Optional[Sequence[str]] = None, out: TextIO = sys.stdout) -> int:
    args = _parser().parse_args(argv)
    try:
        turn_times = json.loads(args.turn_times) if args.turn_times else None
    except ValueError:
        _parser().error("--turn-times must be a JSON object of window: seconds")
    server = EmulatorServer(host=args.host, port=args.port, seed=args.seed, preset=args.preset,
                            turn_times=turn_times, api_key=args.api_key, admin_token=args.admin_token,
                            max_file_bytes=args.max_file_bytes).start()
    out.write("Sail emulator listening on {}\n".format(server.url))
    out.write("  export SAIL_BASE_URL={}\n".format(server.base_url))
    out.write("  export SAIL_API_KEY={}\n".format(server.api_key))
    out.write("  admin token (for /_emulator/ routes): {}\n".format(server.admin_token))
    out.write("Press Ctrl-C to stop.\n")
    out.flush()
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
