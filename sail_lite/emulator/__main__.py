"""``python -m sail_lite.emulator``: run the emulator in the foreground (also ``sail-lite emulator``)."""
from __future__ import annotations

import argparse
import json
import sys
from typing import Optional, Sequence, TextIO

from . import TURN_PRESETS, EmulatorServer
from .params import CATALOGUES

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m sail_lite.emulator",
                                     description="An offline, Sail-compatible API server.")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8080, help="port (default 8080; 0 picks a free one)")
    parser.add_argument("--seed", type=int, default=0, help="the reference model's seed")
    parser.add_argument("--windows", choices=sorted(CATALOGUES), default="current",
                        help="completion windows: current (asap, balanced, flex; the default) or legacy (asap, "
                             "priority, standard, flex, as the older docs)")
    parser.add_argument("--preset", choices=sorted(TURN_PRESETS), default="fast",
                        help="turn times: fast (milliseconds) or realistic (balanced ~300 s, flex ~30 min)")
    parser.add_argument("--turn-times", metavar="JSON", help='per-window seconds, e.g. \'{"balanced": 2}\'')
    parser.add_argument("--api-key", help="the API key to accept (default: a fresh random one)")
    parser.add_argument("--admin-token", help="the token for /_emulator/ routes (default: random)")
    parser.add_argument("--max-file-bytes", type=int, default=100 * 1024 ** 3, help="upload size limit")
    return parser


def main(argv: Optional[Sequence[str]] = None, out: TextIO = sys.stdout) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        turn_times = json.loads(args.turn_times) if args.turn_times else None
    except ValueError:
        turn_times = None
    if args.turn_times and (not isinstance(turn_times, dict) or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and v >= 0 for v in turn_times.values())):
        parser.error("--turn-times must be a JSON object of window: seconds, e.g. '{\"balanced\": 2}'")
    try:
        server = EmulatorServer(host=args.host, port=args.port, seed=args.seed, preset=args.preset,
                                turn_times=turn_times, api_key=args.api_key, admin_token=args.admin_token,
                                max_file_bytes=args.max_file_bytes, windows=args.windows)
    except ValueError as exc:
        parser.error(str(exc))  # exit 2 with one line, no traceback
    try:
        server.start()
    except OSError as exc:
        server.state.close()  # its private storage folder
        parser.error("cannot listen on {}:{}: {}".format(args.host, args.port, exc.strerror or exc))
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
