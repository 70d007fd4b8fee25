"""``python -m sail_lite.emulator``: run the emulator in the foreground (also ``sail-lite emulator``)."""

from __future__ import annotations

import argparse
import errno
import json
import math
import socket
import sys
from typing import Optional, Sequence, TextIO

from . import TURN_PRESETS, EmulatorServer
from .params import CATALOGUES
from .state import DEFAULT_IDEMPOTENCY_RETENTION

__all__ = ["main", "serve", "announce_and_serve", "listen_error"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m sail_lite.emulator", description="An offline, Sail-compatible API server."
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument(
        "--port", type=int, default=8080, help="port (default 8080; 0 picks a free one)"
    )
    parser.add_argument("--seed", type=int, default=0, help="the reference model's seed")
    parser.add_argument(
        "--windows",
        choices=sorted(CATALOGUES),
        default="current",
        help="completion windows: current (asap, balanced, flex; the default) or legacy (asap, "
        "priority, standard, flex, as the older docs)",
    )
    parser.add_argument(
        "--preset",
        choices=sorted(TURN_PRESETS),
        default="fast",
        help="turn times: fast (milliseconds) or realistic (balanced ~300 s, flex ~30 min)",
    )
    parser.add_argument(
        "--turn-times", metavar="JSON", help="per-window seconds, e.g. '{\"balanced\": 2}'"
    )
    parser.add_argument("--api-key", help="the API key to accept (default: a fresh random one)")
    parser.add_argument("--admin-token", help="the token for /_emulator/ routes (default: random)")
    parser.add_argument(
        "--max-file-bytes", type=int, default=100 * 1024**3, help="upload size limit"
    )
    parser.add_argument(
        "--idempotency-retention",
        type=float,
        default=DEFAULT_IDEMPOTENCY_RETENTION,
        metavar="SECONDS",
        help="how long an idempotency key is remembered after its first use; "
        "after that the same key is a new, billed request (default 86400: 24 h)",
    )
    parser.add_argument(
        "--latency",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="seconds added each way to every request, as a network link would (e.g. 0.02)",
    )
    return parser


def serve(args: argparse.Namespace, out: TextIO = sys.stdout) -> int:
    """Serve with parsed options until Ctrl-C. Raises ``ValueError`` for a bad option, ``OSError`` if it cannot listen."""
    if not 0 <= args.port <= 65535:
        raise ValueError(f"--port must be 0-65535 (0 picks a free port), got {args.port}")
    turn_times = None
    if args.turn_times:
        try:
            turn_times = json.loads(args.turn_times)
        except ValueError:
            turn_times = None
        if not isinstance(turn_times, dict) or not turn_times:
            raise ValueError(
                "--turn-times must be a JSON object of window: seconds, e.g. "
                f"'{{\"balanced\": 2}}'; got {args.turn_times!r}"
            )
        for window, seconds in turn_times.items():
            if (
                isinstance(seconds, bool)
                or not isinstance(seconds, (int, float))
                or not math.isfinite(seconds)
                or seconds < 0
            ):
                raise ValueError(
                    f"--turn-times: {window} must be a number of seconds >= 0, got {seconds!r}"
                )
    retention = args.idempotency_retention
    if not (math.isfinite(retention) and retention > 0):
        raise ValueError(
            f"--idempotency-retention must be a positive number of seconds, got {retention}"
        )
    if not (math.isfinite(args.latency) and args.latency >= 0):
        raise ValueError(f"--latency must be a number of seconds >= 0, got {args.latency}")
    server = EmulatorServer(
        latency=args.latency,
        host=args.host,
        port=args.port,
        seed=args.seed,
        preset=args.preset,
        turn_times=turn_times,
        api_key=args.api_key,
        admin_token=args.admin_token,
        max_file_bytes=args.max_file_bytes,
        windows=args.windows,
        idempotency_retention=retention,
    )
    try:
        server.start()
    except OSError:
        server.state.close()  # its private storage folder
        raise
    return announce_and_serve(server, out)


def announce_and_serve(
    server: EmulatorServer, out: TextIO = sys.stdout, extra: Sequence[str] = ()
) -> int:
    """Print how to reach the started ``server`` (and the ``extra`` lines), serve until Ctrl-C, then stop it.

    The banner's lines are read by scripts (bench/_emulator.py): keep their prefixes.
    """
    out.write(f"Sail emulator listening on {server.url}\n")
    out.write(f"  export SAIL_BASE_URL={server.base_url}\n")
    out.write(f"  export SAIL_API_KEY={server.api_key}\n")
    out.write(f"  admin token (for /_emulator/ routes): {server.admin_token}\n")
    for line in extra:
        out.write(f"  {line}\n")
    out.write("Press Ctrl-C to stop.\n")
    out.flush()
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
    return 0


def listen_error(exc: OSError, host: str, port: int) -> str:
    """One line saying why the emulator cannot listen on ``host:port`` and what to do."""
    where = f"{host}:{port}"
    if isinstance(exc, socket.gaierror):
        return f"cannot listen on {where}: {host!r} is not a known host name or address"
    if exc.errno == errno.EADDRINUSE:
        return (
            f"cannot listen on {where}: port {port} is already in use; stop what holds it, or pick another with --port "
            "(--port 0 picks a free one)"
        )
    if exc.errno == errno.EADDRNOTAVAIL:
        return (
            f"cannot listen on {where}: {host} is not an address of this machine; use 127.0.0.1 (this machine only) "
            "or 0.0.0.0 (every interface)"
        )
    if exc.errno in (errno.EACCES, errno.EPERM):
        return (
            f"cannot listen on {where}: permission denied (ports below 1024 need privileges); pick another "
            "with --port"
        )
    return f"cannot listen on {where}: {exc.strerror or exc}"


def main(argv: Optional[Sequence[str]] = None, out: TextIO = sys.stdout) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return serve(args, out)
    except ValueError as exc:
        parser.error(str(exc))  # exit 2 with one line, no traceback
    except OSError as exc:
        parser.error(listen_error(exc, args.host, args.port))
    return 2  # pragma: no cover - parser.error exits


if __name__ == "__main__":
    sys.exit(main())
