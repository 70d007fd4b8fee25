"""The ``sail-lite`` command.

Exit status: 0 on success, 1 when the API or the input says no (one line
``sail-lite: error: <reason>`` on stderr), 2 for a usage error. ``--json``
prints machine-readable output on stdout; progress goes to stderr. Neither
ever shows the API key or a signed URL's query string.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from typing import IO, Any, Callable, List, Optional, Sequence

from ._progress import ProgressBar
from ._transport import redact_url

__all__ = ["main"]


def _plain(value: Any) -> Any:
    """A wire object as JSON-ready data (its raw server payload when it has one)."""
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    raw = getattr(value, "raw", None)
    if isinstance(raw, dict) and raw:
        return raw
    if dataclasses.is_dataclass(value):
        return dataclasses.asdict(value)
    return value


def _int_list(text: str) -> List[int]:
    try:
        return [int(part) for part in text.replace(" ", "").split(",") if part]
    except ValueError:
        raise argparse.ArgumentTypeError("expected comma-separated token ids, like 1,2,3") from None


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sail-lite", description="The Sail API from the command line.")
    parser.add_argument("--api-key", help="API key (default: $SAIL_API_KEY)")
    parser.add_argument("--base-url", help="API base URL (default: $SAIL_BASE_URL or the Sail API)")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True

    demo = commands.add_parser("demo", help="run the main job end to end (offline emulator unless SAIL_API_KEY is set)")
    demo.add_argument("rest", nargs=argparse.REMAINDER)
    emulator = commands.add_parser("emulator", help="run the offline Sail emulator in the foreground")
    emulator.add_argument("rest", nargs=argparse.REMAINDER)

    sample = commands.add_parser("sample", help="sample token ids (with logprobs) from a raw-token prompt")
    sample.add_argument("--model", required=True)
    sample.add_argument("--tokens", required=True, type=_int_list, help="prompt token ids, comma-separated")
    sample.add_argument("--max-tokens", required=True, type=int)
    sample.add_argument("--temperature", type=float, default=1.0)
    sample.add_argument("--top-p", type=float, default=1.0)
    sample.add_argument("--stop", action="append", help="stop string (repeatable)")
    sample.add_argument("--stop-token", action="append", type=int, help="stop token id (repeatable)")
    sample.add_argument("--lora", help="LoRA name or id")
    sample.add_argument("--window", default="priority", help="completion window (default: priority)")
    sample.add_argument("--json", action="store_true")

    loras = commands.add_parser("loras", help="upload, list and inspect LoRAs").add_subparsers(dest="action", metavar="ACTION")
    loras.required = True
    upload = loras.add_parser("upload", help="pre-flight, upload and register a PEFT adapter folder")
    upload.add_argument("directory")
    upload.add_argument("--name", required=True)
    upload.add_argument("--model", action="append", required=True, help="supported base model (repeatable)")
    upload.add_argument("--display-name")
    upload.add_argument("--description")
    upload.add_argument("--no-wait", action="store_true", help="do not wait for validation")
    upload.add_argument("--skip-preflight", action="store_true", help="skip the local adapter checks")
    upload.add_argument("--json", action="store_true")
    listing = loras.add_parser("list", help="list your LoRAs")
    listing.add_argument("--json", action="store_true")
    get = loras.add_parser("get", help="show one LoRA and its validations")
    get.add_argument("name")
    get.add_argument("--json", action="store_true")

    responses = commands.add_parser("responses", help="inspect background responses").add_subparsers(
        dest="action", metavar="ACTION")
    responses.required = True
    for action, text in (("get", "show a response"), ("wait", "block until a response is done"),
                         ("cancel", "cancel a queued or running response")):
        sub = responses.add_parser(action, help=text)
        sub.add_argument("id")
        sub.add_argument("--json", action="store_true")

    models = commands.add_parser("models", help="the model catalogue").add_subparsers(dest="action", metavar="ACTION")
    models.required = True
    models.add_parser("list", help="list models").add_argument("--json", action="store_true")
    return parser


def _client(args: argparse.Namespace) -> Any:
    from .client import Client

    return Client(args.api_key, base_url=args.base_url)


class _Usage(Exception):
    """A combination of arguments argparse cannot express."""


def _show_loras(
    loras: Sequence[Any], as_json: bool, emit: Callable[[Any], None], out: IO[str], *, single: bool = False
) -> None:
    if as_json:
        emit(loras[0] if single else loras)
        return
    for lora in loras:
        _print_lora(lora, out)


def _print_lora(lora: Any, out: IO[str]) -> None:
    out.write("{}  {}  status={}  models={}\n".format(lora.name, lora.id, lora.status, ",".join(lora.supported_models)))
    for validation in lora.validations:
        reason = ""
        if validation.result_code:
            reason = "  {}: {}".format(validation.result_code, validation.result_message or "")
        out.write("  {}: {}{}\n".format(validation.model, validation.status, reason))


def _run(args: argparse.Namespace, out: IO[str], err: IO[str]) -> int:
    if args.command == "demo":
        from . import _demo

        return _demo.main(args.rest, out=out, err=err)
    if args.command == "emulator":
        from .emulator.__main__ import main as emulator_main

        return emulator_main(args.rest)

    def emit(value: Any) -> None:
        out.write(json.dumps(_plain(value), indent=2, sort_keys=True) + "\n")

    with _client(args) as client:
        if args.command == "sample":
            stop: Optional[Sequence[Any]] = args.stop_token if args.stop_token else args.stop
            if args.stop and args.stop_token:
                raise _Usage("pass --stop or --stop-token, not both")
            result = client.tokens.sample(
                args.tokens, model=args.model, max_tokens=args.max_tokens, temperature=args.temperature,
                top_p=args.top_p, stop=stop, lora=args.lora, completion_window=args.window,
            )
            if args.json:
                emit(result)
            else:
                out.write("tokens: {}\nlogprobs: {}\nstop_reason: {}\nresponse: {}\n".format(
                    " ".join(map(str, result.tokens)),
                    " ".join("{:.4f}".format(lp) for lp in result.logprobs or ()),
                    result.stop_reason, result.response_id))
        elif args.command == "loras" and args.action == "upload":
            lora = client.loras.upload(
                args.directory, name=args.name, supported_models=args.model, display_name=args.display_name,
                description=args.description, wait=not args.no_wait, preflight=not args.skip_preflight,
                progress=ProgressBar("uploading " + args.name, err),
            )
            _show_loras([lora], args.json, emit, out, single=True)
        elif args.command == "loras" and args.action == "list":
            _show_loras(client.loras.list(), args.json, emit, out)
        elif args.command == "loras" and args.action == "get":
            lora = client.loras.retrieve(args.name)
            _show_loras([lora], args.json, emit, out, single=True)
        elif args.command == "responses":
            call = {"get": client.responses.retrieve, "wait": client.responses.wait,
                    "cancel": client.responses.cancel}[args.action]
            response = call(args.id)
            if args.json:
                emit(response)
            else:
                out.write("{}  {}  {}\n".format(response.id, response.status, response.model or ""))
                if response.output_text:
                    out.write(response.output_text + "\n")
        elif args.command == "models":
            items = client.models.list()
            if args.json:
                emit(items)
            else:
                out.write("".join(model.id + "\n" for model in items))
    return 0


def main(
    argv: Optional[Sequence[str]] = None, *, out: Optional[IO[str]] = None, err: Optional[IO[str]] = None
) -> int:
    """Run ``sail-lite`` with ``argv`` (default: the process's); return the exit status."""
    from .errors import SailError

    out = out or sys.stdout
    err = err or sys.stderr
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:
        return int(exit_.code or 0)
    try:
        return _run(args, out, err)
    except _Usage as exc:
        err.write("sail-lite: error: {}\n".format(exc))
        return 2
    except SailError as exc:
        reason = " ".join(redact_url(str(exc)).split())
        err.write("sail-lite: error: {}\n".format(reason))
        return 1
    except KeyboardInterrupt:
        err.write("sail-lite: interrupted\n")
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
