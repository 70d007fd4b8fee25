"""The ``sail-lite`` command.

Exit status (also in ``sail-lite --help``): 0 on success; 1 when the API or
the input says no (one line ``sail-lite: error: <reason> (status ..., code
..., request ...)`` on stderr, never a traceback); 2 for a usage error,
including an emulator that cannot listen or a bad emulator option; 130 when
interrupted. ``--json`` prints machine-readable output on stdout; progress
and warnings go to stderr. Nothing printed ever shows the API key or a
signed URL's query string (except ``sail-lite emulator``'s banner, which
prints the key the emulator accepts, so a user can export it).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import textwrap
from typing import IO, Any, Callable, List, Mapping, Optional, Sequence, Tuple

from ._checks import DEFAULT_IDEMPOTENCY_RETENTION
from ._progress import ProgressBar, interactive
from ._redact import redact_secrets, redact_url

__all__ = ["main"]

EXIT_CODES = """\
exit status:
  0    success
  1    the API or the input said no: one line on stderr with the reason and,
       when there is one, the HTTP status, error code and request id
  2    usage error: a bad option or value, or the emulator cannot listen
       (port in use, host not on this machine, bad --turn-times)
  130  interrupted (Ctrl-C)

environment:
  SAIL_API_KEY   the API key when --api-key is not given
  SAIL_BASE_URL  the API root when --base-url is not given
  SAIL_LOG       debug or info: log each request (never keys or bodies)
"""

#: The completion windows the service offers now (wire.md); the CLI default is ``balanced``.
WINDOWS = ("asap", "balanced", "flex", "standard")
#: Retired names a user may still type: mapped to their replacement with one warning.
RETIRED_WINDOWS = {"priority": "balanced", "15m": "balanced"}
DEFAULT_WINDOW = "balanced"


class _Usage(Exception):
    """A usage error argparse cannot express (exit status 2)."""


def _plain(value: Any) -> Any:
    """A wire object as JSON-ready data (its server payload when it has one), signed-URL queries redacted."""
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    raw = getattr(value, "raw", None)
    if isinstance(raw, dict) and raw:
        return redact_secrets(raw)
    if dataclasses.is_dataclass(value):
        return redact_secrets(dataclasses.asdict(value))
    return redact_secrets(value)


def _int_list(text: str) -> List[int]:
    try:
        return [int(part) for part in text.replace(" ", "").split(",") if part]
    except ValueError:
        raise argparse.ArgumentTypeError("expected comma-separated token ids, like 1,2,3") from None


def _window_type(allowed: Sequence[str]) -> Callable[[str], str]:
    def parse(text: str) -> str:
        if text in allowed or text in RETIRED_WINDOWS:
            return text
        raise argparse.ArgumentTypeError(
            "{!r} is not a completion window: use one of {}".format(text, ", ".join(allowed))
        )

    return parse


def _add_window_option(
    parser: argparse.ArgumentParser,
    allowed: Sequence[str] = WINDOWS,
    *,
    what: str = "",
    note: str = "",
) -> None:
    """``--window``: one of ``allowed`` (default balanced); retired names are mapped by :func:`_resolve_window`."""
    parser.add_argument(
        "--window",
        type=_window_type(allowed),
        default=DEFAULT_WINDOW,
        metavar="{" + ",".join(allowed) + "}",
        help=f"completion window{what} (default: {DEFAULT_WINDOW}; priority and 15m are retired and mean {DEFAULT_WINDOW}){note}",
    )


def _resolve_window(window: str, err: IO[str]) -> str:
    """Map a retired window name to its replacement, with one deprecation warning on ``err``."""
    replacement = RETIRED_WINDOWS.get(window)
    if replacement is None:
        return window
    err.write(
        f"sail-lite: warning: the {window!r} completion window is retired; using {replacement!r}\n"
    )
    return replacement


def _connection_options() -> argparse.ArgumentParser:
    # The same two options after a subcommand (`sail-lite models list --api-key K`); SUPPRESS keeps
    # the values given before the subcommand when they are not repeated after it.
    parent = argparse.ArgumentParser(add_help=False)
    group = parent.add_argument_group("connection")
    group.add_argument(
        "--api-key",
        default=argparse.SUPPRESS,
        metavar="KEY",
        help="API key (default: $SAIL_API_KEY)",
    )
    group.add_argument(
        "--base-url",
        default=argparse.SUPPRESS,
        metavar="URL",
        help="API root, e.g. http://127.0.0.1:8080/v1 (default: $SAIL_BASE_URL or the Sail API)",
    )
    return parent


def _sub(
    commands: Any,
    name: str,
    text: str,
    *,
    parents: Sequence[argparse.ArgumentParser] = (),
    description: Optional[str] = None,
    epilog: Optional[str] = None,
    **kwargs: Any,
) -> argparse.ArgumentParser:
    description = description or text[:1].upper() + text[1:] + "."
    return commands.add_parser(
        name,
        help=text,
        description=textwrap.fill(description, 78),
        epilog=epilog,
        parents=list(parents),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        **kwargs,
    )


def _parser_class(out: IO[str], err: IO[str]) -> Any:
    class Parser(argparse.ArgumentParser):
        """Writes --help to ``out`` and usage errors to ``err`` (argparse would use the process's streams)."""

        def _print_message(self, message: str, file: Optional[IO[str]] = None) -> None:
            if message:
                (out if file is None or file is sys.stdout else err).write(message)

    return Parser


def _parser(
    out: Optional[IO[str]] = None, err: Optional[IO[str]] = None
) -> argparse.ArgumentParser:
    parser = _parser_class(out or sys.stdout, err or sys.stderr)(
        prog="sail-lite",
        description="The Sail API from the command line, and an offline emulator of it.",
        epilog=EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False,
    )
    parser.add_argument(
        "--api-key", dest="top_api_key", metavar="KEY", help="API key (default: $SAIL_API_KEY)"
    )
    parser.add_argument(
        "--base-url",
        dest="top_base_url",
        metavar="URL",
        help="API root (default: $SAIL_BASE_URL or https://api.sailresearch.com/v1)",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True
    connection = [_connection_options()]
    _add_demo(commands, connection)
    _add_emulator(commands)
    _add_sample(commands, connection)
    _add_chat(commands, connection)
    _add_loras(commands, connection)
    _add_responses(commands, connection)
    _add_jobs(commands, connection)
    models = _sub(commands, "models", "the model catalogue").add_subparsers(
        dest="action", metavar="ACTION"
    )
    models.required = True
    _sub(models, "list", "list models", parents=connection).add_argument(
        "--json", action="store_true", help="print JSON"
    )
    return parser


def _add_demo(commands: Any, connection: List[argparse.ArgumentParser]) -> None:
    from . import _demo

    demo = _sub(
        commands,
        "demo",
        "run the main job end to end: sample with logprobs, upload and use a LoRA",
        parents=connection,
        description=_demo.DESCRIPTION,
        epilog=EXIT_CODES,
    )
    _demo.add_arguments(demo)
    _add_window_option(
        demo,
        _demo.WINDOWS,
        what=" of every sample",
        note="; raw-token sampling runs in the background, so asap is not offered",
    )


def _add_emulator(commands: Any) -> None:
    from .emulator.__main__ import build_parser as emulator_parser

    # One definition of the emulator's options: python -m sail_lite.emulator's own parser, as a parent.
    # Its -h is resolved against ours; the values are handed back to it as typed (see _emulator).
    _sub(
        commands,
        "emulator",
        "run the offline Sail emulator in the foreground (Ctrl-C stops it)",
        parents=[emulator_parser()],
        conflict_handler="resolve",
        description="An offline, Sail-compatible API server (also: python -m sail_lite.emulator). "
        "It prints the base URL and the API key to use, then serves until Ctrl-C.",
        epilog="example:\n  sail-lite emulator --port 8080 --api-key sk-local --turn-times '{\"standard\": 2}'\n\n"
        + EXIT_CODES,
    )


def _add_sample(commands: Any, connection: List[argparse.ArgumentParser]) -> None:
    sample = _sub(
        commands,
        "sample",
        "sample token ids (with logprobs) from a raw-token prompt",
        parents=connection,
        epilog="example:\n  sail-lite sample --model moonshotai/Kimi-K2.6 --tokens 1,2,3 --max-tokens 16\n\n"
        + EXIT_CODES,
    )
    sample.add_argument("--model", required=True, help="model id, e.g. moonshotai/Kimi-K2.6")
    sample.add_argument(
        "--tokens",
        required=True,
        type=_int_list,
        metavar="IDS",
        help="prompt token ids, comma-separated (fed verbatim: no tokenizer, no chat template)",
    )
    sample.add_argument(
        "--max-tokens", required=True, type=int, metavar="N", help="most tokens to sample"
    )
    sample.add_argument(
        "--temperature", type=float, default=1.0, help="0 samples greedily (default 1.0)"
    )
    sample.add_argument(
        "--top-p", type=float, default=1.0, help="nucleus sampling mass (default 1.0)"
    )
    sample.add_argument("--stop", action="append", metavar="TEXT", help="stop string (repeatable)")
    sample.add_argument(
        "--stop-token", action="append", type=int, metavar="ID", help="stop token id (repeatable)"
    )
    sample.add_argument("--lora", metavar="NAME", help="LoRA name or id to apply")
    _add_window_option(sample)
    sample.add_argument("--json", action="store_true", help="print the result as JSON")


def _add_chat(commands: Any, connection: List[argparse.ArgumentParser]) -> None:
    chat = _sub(
        commands,
        "chat",
        "ask a chat model one question (Chat Completions); --stream prints the text as it comes",
        parents=connection,
        epilog="example:\n  sail-lite chat --model moonshotai/Kimi-K2.6 --stream 'Write a haiku'\n\n"
        + EXIT_CODES,
    )
    chat.add_argument("prompt", metavar="PROMPT", help="the user message")
    chat.add_argument("--model", required=True, help="model id, e.g. moonshotai/Kimi-K2.6")
    chat.add_argument("--system", metavar="TEXT", help="a system message sent first")
    chat.add_argument("--max-tokens", type=int, metavar="N", help="most tokens to generate")
    chat.add_argument("--temperature", type=float, help="0 samples greedily")
    chat.add_argument("--lora", metavar="NAME", help="LoRA name or id to apply")
    _add_window_option(chat)
    chat.add_argument(
        "--stream",
        action="store_true",
        help="print the text as it is generated (with --json: one JSON chunk per line)",
    )
    chat.add_argument("--json", action="store_true", help="print the completion as JSON")


def _add_loras(commands: Any, connection: List[argparse.ArgumentParser]) -> None:
    loras = _sub(commands, "loras", "upload, list and inspect LoRAs").add_subparsers(
        dest="action", metavar="ACTION"
    )
    loras.required = True
    upload = _sub(
        loras,
        "upload",
        "pre-flight, upload and register a PEFT adapter folder, then wait for validation",
        parents=connection,
        epilog="The name is checked first: a name already taken is refused before any byte is sent.\n\n"
        "example:\n  sail-lite loras upload my-adapter/ --name funnier-v1 "
        "--model moonshotai/Kimi-K2.6\n\n" + EXIT_CODES,
    )
    upload.add_argument(
        "directory",
        metavar="DIR",
        help="folder holding adapter_config.json and adapter_model.safetensors",
    )
    upload.add_argument(
        "--name", required=True, help="2-64 characters of a-z, 0-9 and dashes, unique in your org"
    )
    upload.add_argument(
        "--model", action="append", required=True, help="supported base model (repeatable)"
    )
    upload.add_argument("--display-name", help="a human-readable name")
    upload.add_argument("--description", help="a description")
    upload.add_argument(
        "--no-wait", action="store_true", help="return once created; do not wait for validation"
    )
    upload.add_argument(
        "--skip-preflight", action="store_true", help="skip the local adapter checks"
    )
    upload.add_argument("--json", action="store_true", help="print the LoRA as JSON")
    listing = _sub(loras, "list", "list your LoRAs", parents=connection)
    listing.add_argument("--json", action="store_true", help="print JSON")
    get = _sub(loras, "get", "show one LoRA and its validations", parents=connection)
    get.add_argument("name", metavar="NAME", help="LoRA name or id")
    get.add_argument("--json", action="store_true", help="print JSON")


def _add_responses(commands: Any, connection: List[argparse.ArgumentParser]) -> None:
    responses = _sub(
        commands, "responses", "inspect, wait for and cancel background responses"
    ).add_subparsers(dest="action", metavar="ACTION")
    responses.required = True
    for action, text in (
        ("get", "show a response"),
        ("wait", "block until a response is done, then show it"),
        ("cancel", "cancel a queued or running response"),
    ):
        sub = _sub(responses, action, text, parents=connection)
        sub.add_argument("id", metavar="ID", help="response id (resp_...)")
        if action == "wait":
            sub.add_argument(
                "--deadline", type=float, metavar="SECONDS", help="give up after this long"
            )
        sub.add_argument("--json", action="store_true", help="print JSON")


JOBS_EXIT = """\
exit status: 0 when every request of the journal completed; 1 when any is not finished,
never submitted (the run stopped before reading it) or failed (the reason on stderr), or the
file is not a journal or holds an unreadable record; 2 for a usage error.
"""


def _add_jobs(commands: Any, connection: List[argparse.ArgumentParser]) -> None:
    jobs = _sub(
        commands, "jobs", "inspect and finish journaled jobs (sail_lite.Journal files)"
    ).add_subparsers(dest="action", metavar="ACTION")
    jobs.required = True
    status = _sub(
        jobs,
        "status",
        "counts by status and the failures (with their error codes) of a journal",
        epilog="Reads the file only: it never writes it.\n\nexample:\n  sail-lite jobs status eval.db\n\n"
        + JOBS_EXIT,
    )
    status.add_argument("file", metavar="FILE", help="the journal file")
    status.add_argument(
        "--idempotency-retention",
        type=float,
        default=DEFAULT_IDEMPOTENCY_RETENTION,
        metavar="SECONDS",
        help="the server's idempotency-key retention window: unfinished requests claimed longer ago "
        "are counted, since a resume re-runs and re-bills them (default 86400: 24 h)",
    )
    status.add_argument("--json", action="store_true", help="print JSON")
    resume = _sub(
        jobs,
        "resume",
        "finish every unfinished request of a journal, with the parameters it recorded",
        parents=connection,
        epilog="Finished requests cost nothing; accepted ones are re-attached by response id; the rest "
        "are re-sent\nwith their recorded idempotency keys, so the server replays what it "
        "already ran.\n\nexample:\n  sail-lite jobs resume eval.db\n\n" + JOBS_EXIT,
    )
    resume.add_argument("file", metavar="FILE", help="the journal file")
    resume.add_argument("--job", help="resume only this job (default: every job in the file)")
    resume.add_argument(
        "--max-in-flight", type=int, default=64, metavar="N", help="requests at once (default 64)"
    )
    resume.add_argument(
        "--retry-failed", action="store_true", help="send failed requests again too"
    )
    resume.add_argument("--json", action="store_true", help="print the outcome as JSON")


def _credentials(
    args: argparse.Namespace, environ: Mapping[str, str]
) -> Tuple[Optional[str], Optional[str]]:
    key = getattr(args, "api_key", None) or args.top_api_key or environ.get("SAIL_API_KEY") or None
    base_url = (
        getattr(args, "base_url", None) or args.top_base_url or environ.get("SAIL_BASE_URL") or None
    )
    return key, base_url


def _client(args: argparse.Namespace, environ: Mapping[str, str]) -> Any:
    from .client import Client
    from .errors import ConfigurationError

    key, base_url = _credentials(args, environ)
    if not key or not key.strip():
        raise ConfigurationError(
            "no API key: pass --api-key KEY or set SAIL_API_KEY (for an offline server, run "
            "`sail-lite emulator`; `sail-lite demo` starts one by itself)"
        )
    return Client(key, base_url=base_url, environ=environ)


# -- the emulator ---------------------------------------------------------------------------------------------


def _emulator(args: argparse.Namespace, out: IO[str]) -> int:
    from .emulator.__main__ import listen_error, serve

    if args.top_base_url:
        raise _Usage("--base-url does not apply to `sail-lite emulator`: use --host and --port")
    if (
        args.top_api_key and args.api_key is None
    ):  # `sail-lite --api-key K emulator`: serve that key
        args.api_key = args.top_api_key
    try:
        return serve(args, out)
    except OSError as exc:  # binding: nothing was served yet
        raise _Usage(listen_error(exc, args.host, args.port)) from None
    except ValueError as exc:  # an option the emulator refused
        raise _Usage(str(exc)) from None


# -- the API commands -------------------------------------------------------------------------------------------


def _show_loras(
    loras: Sequence[Any],
    as_json: bool,
    emit: Callable[[Any], None],
    out: IO[str],
    *,
    single: bool = False,
) -> None:
    if as_json:
        emit(loras[0] if single else loras)
        return
    for lora in loras:
        _print_lora(lora, out)


def _print_lora(lora: Any, out: IO[str]) -> None:
    out.write(
        "{}  {}  status={}  models={}\n".format(
            lora.name, lora.id, lora.status, ",".join(lora.supported_models)
        )
    )
    for validation in lora.validations:
        reason = ""
        if validation.result_code:
            reason = "  {}: {}".format(validation.result_code, validation.result_message or "")
        out.write(f"  {validation.model}: validation {validation.status}{reason}\n")


def _check_folder(directory: str) -> None:
    from .errors import InvalidRequestError

    if not os.path.exists(directory):
        raise InvalidRequestError(
            f"folder not found: {directory} (a PEFT adapter folder holds adapter_config.json and "
            "adapter_model.safetensors)"
        )
    if not os.path.isdir(directory):
        raise InvalidRequestError(
            f"{directory} is not a folder: pass the folder that holds adapter_config.json and "
            "adapter_model.safetensors"
        )


def _run(
    args: argparse.Namespace,
    argv: Sequence[str],
    out: IO[str],
    err: IO[str],
    environ: Mapping[str, str],
) -> int:
    if args.command == "emulator":
        return _emulator(args, out)
    if args.command == "demo":
        from . import _demo

        # The flags only: the demo reads the environment itself.
        key, base_url = _credentials(args, {})
        window = _resolve_window(args.window, err)
        return _demo.run_from_args(
            args,
            out=out,
            err=err,
            api_key=key,
            base_url=base_url,
            window=window,
            environ=environ,
            tty=interactive(err, environ),
        )

    def emit(value: Any) -> None:
        out.write(json.dumps(_plain(value), indent=2, sort_keys=True) + "\n")

    if args.command == "jobs":
        return _jobs(args, out, err, environ, emit)
    if args.command == "sample":
        if args.stop and args.stop_token:
            raise _Usage("pass --stop or --stop-token, not both")
        args.window = _resolve_window(args.window, err)
    if args.command == "chat":
        args.window = _resolve_window(args.window, err)
    if args.command == "loras" and args.action == "upload":
        _check_folder(args.directory)
    with _client(args, environ) as client:
        if args.command == "sample":
            _sample(args, client, out, emit)
        elif args.command == "chat":
            _chat(args, client, out, emit)
        elif args.command == "loras":
            _loras(args, client, out, err, environ, emit)
        elif args.command == "responses":
            _responses(args, client, out, emit)
        elif args.command == "models":
            items = client.models.list()
            if args.json:
                emit(items)
            else:
                out.write("".join(model.id + "\n" for model in items))
    return 0


def _sample(
    args: argparse.Namespace, client: Any, out: IO[str], emit: Callable[[Any], None]
) -> None:
    stop: Optional[Sequence[Any]] = args.stop_token if args.stop_token else args.stop
    result = client.tokens.sample(
        args.tokens,
        model=args.model,
        max_tokens=args.max_tokens,
        temperature=args.temperature,
        top_p=args.top_p,
        stop=stop,
        lora=args.lora,
        completion_window=args.window,
    )
    if args.json:
        emit(result)
        return
    out.write(
        "tokens: {}\nlogprobs: {}\nstop_reason: {}\nresponse: {}\n".format(
            " ".join(map(str, result.tokens)),
            " ".join(f"{lp:.4f}" for lp in result.logprobs or ()),
            result.stop_reason,
            result.response_id,
        )
    )


def _chat(args: argparse.Namespace, client: Any, out: IO[str], emit: Callable[[Any], None]) -> None:
    """One chat completion; with ``--stream`` each text delta is written and flushed as it arrives."""
    messages = [{"role": "user", "content": args.prompt}]
    if args.system:
        messages.insert(0, {"role": "system", "content": args.system})
    options = dict(
        model=args.model,
        messages=messages,
        max_completion_tokens=args.max_tokens,
        temperature=args.temperature,
        lora=args.lora,
        completion_window=args.window,
    )
    if not args.stream:
        completion = client.chat.completions.create(**options)
        if args.json:
            emit(completion)
        else:
            out.write(_terminal_text(completion.choices[0].content or "") + "\n")
        return
    with client.chat.completions.create(stream=True, **options) as stream:
        if args.json:
            for chunk in stream:
                out.write(json.dumps(_plain(chunk), sort_keys=True) + "\n")
                out.flush()
            return
        for text in stream.text_stream:
            out.write(_terminal_text(text))
            out.flush()  # the point of --stream: the reader sees each delta as it comes
        out.write("\n")


def _terminal_text(text: str) -> str:
    """Generated text for a terminal: line breaks and tabs kept, other control characters escaped."""
    return "\n".join(
        "\t".join(_printable(part) for part in line.split("\t")) for line in text.split("\n")
    )


def _loras(
    args: argparse.Namespace,
    client: Any,
    out: IO[str],
    err: IO[str],
    environ: Mapping[str, str],
    emit: Callable[[Any], None],
) -> None:
    if args.action == "upload":
        lora = client.loras.upload(
            args.directory,
            name=args.name,
            supported_models=args.model,
            display_name=args.display_name,
            description=args.description,
            wait=not args.no_wait,
            preflight=not args.skip_preflight,
            progress=ProgressBar("uploading " + args.name, err, tty=interactive(err, environ)),
        )
        _show_loras([lora], args.json, emit, out, single=True)
    elif args.action == "list":
        _show_loras(client.loras.list(), args.json, emit, out)
    else:
        _show_loras([client.loras.retrieve(args.name)], args.json, emit, out, single=True)


def _responses(
    args: argparse.Namespace, client: Any, out: IO[str], emit: Callable[[Any], None]
) -> None:
    if args.action == "wait":
        response = client.responses.wait(args.id, deadline=args.deadline)
    elif args.action == "get":
        response = client.responses.retrieve(args.id)
    else:
        response = client.responses.cancel(args.id)
    if args.json:
        emit(response)
        return
    out.write("{}  {}  {}\n".format(response.id, response.status, response.model or ""))
    if response.output_text:
        out.write(response.output_text + "\n")


# -- sail-lite jobs -------------------------------------------------------------------------------


def _jobs(
    args: argparse.Namespace,
    out: IO[str],
    err: IO[str],
    environ: Mapping[str, str],
    emit: Callable[[Any], None],
) -> int:
    from .errors import InvalidRequestError
    from .jobs import incomplete, summarize

    if not os.path.lexists(args.file):
        raise _Usage(f"journal file not found: {args.file}")
    if args.action == "resume":
        return _resume(args, out, err, environ, emit)
    try:
        summary = summarize(args.file, idempotency_retention=args.idempotency_retention)
    except InvalidRequestError as exc:
        raise _Usage("--idempotency-retention: " + exc.message) from None
    if args.json:
        emit(summary)
    else:
        _print_summary(summary, out)
    return _verdict(incomplete(summary), err)


def _verdict(problem: Optional[str], err: IO[str]) -> int:
    if problem is None:
        return 0
    err.write(f"sail-lite: error: not done: {_one_line(problem)}\n")
    return 1


def _resume(
    args: argparse.Namespace,
    out: IO[str],
    err: IO[str],
    environ: Mapping[str, str],
    emit: Callable[[Any], None],
) -> int:
    from .jobs import incomplete, resume

    bar = ProgressBar(
        "resuming " + os.path.basename(args.file),
        err,
        in_bytes=False,
        tty=interactive(err, environ),
    )

    def progress(state: Any) -> None:
        if state.total:
            bar(state.done, state.total)

    with _client(args, environ) as client:
        outcome = resume(
            args.file,
            client,
            job=args.job,
            max_in_flight=args.max_in_flight,
            retry_failed=args.retry_failed,
            progress=progress,
        )
    if args.json:
        emit(outcome)
    else:
        for job, ran in sorted(outcome["jobs"].items()):
            out.write(
                "{}: ran {ran}, completed {completed}, failed {failed}\n".format(
                    _printable(job), **ran
                )
            )
        _print_summary(outcome["summary"], out)
    return _verdict(incomplete(outcome["summary"]), err)


def _print_summary(summary: Mapping[str, Any], out: IO[str]) -> None:
    from .journal import format_duration

    retention = format_duration(
        summary.get("idempotency_retention") or DEFAULT_IDEMPOTENCY_RETENTION
    )
    for job in summary["jobs"]:
        _print_job(job, retention, out)


def _print_job(job: Mapping[str, Any], retention: str, out: IO[str]) -> None:
    counts = ", ".join(f"{status} {n}" for status, n in sorted(job["counts"].items()) if n)
    out.write(
        "{}  ({}, {} requests): {}\n".format(
            _printable(job["job"]), _printable(job["kind"]), job["total"] or "?", counts or "empty"
        )
    )
    never = job.get("never_submitted") or 0
    if never:
        out.write(f"  {never} never submitted: run the job's script again\n")
    late = job.get("past_retention") or 0
    if late:
        out.write(
            f"  {late} request(s) claimed more than {retention} ago, past the idempotency "
            "retention window, have no recorded response id: a resume re-sends them, and any "
            "the server got will run and be billed again\n"
        )
    for kind, n in sorted(job.get("errors", {}).items(), key=lambda item: -item[1]):
        out.write(f"  unfinished after {_printable(kind)}: {n}\n")
    for code, n in sorted(job["failure_codes"].items(), key=lambda item: -item[1]):
        out.write(f"  failed with {_printable(code)}: {n}\n")
    for failure in job["failures"]:
        out.write(
            "  #{} {} {}: {}\n".format(
                failure["position"],
                _printable(failure["type"]),
                _printable(failure["code"] or ""),
                _one_line(failure["message"] or ""),
            )
        )


def _printable(text: Any) -> str:
    """``text`` safe for a terminal: control characters (ESC, BEL, ...) shown escaped."""
    text = str(text)
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def _one_line(text: str) -> str:
    return _printable(" ".join(redact_url(text).split()))


def main(
    argv: Optional[Sequence[str]] = None,
    *,
    out: Optional[IO[str]] = None,
    err: Optional[IO[str]] = None,
    environ: Optional[Mapping[str, str]] = None,
) -> int:
    """Run ``sail-lite`` with ``argv`` (default: the process's); return the exit status.

    ``out``/``err`` default to the process's streams and ``environ`` to
    ``os.environ`` (read for ``SAIL_API_KEY``, ``SAIL_BASE_URL``, ``CI``).
    Every sail_lite error ends as one line on ``err`` (exit 1); usage errors
    exit 2; nothing here raises.
    """
    from .errors import SailError

    argv = list(sys.argv[1:] if argv is None else argv)
    out = out or sys.stdout
    err = err or sys.stderr
    environ = os.environ if environ is None else environ
    from ._demo import DemoUsageError

    parser = _parser(out, err)
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:
        return exit_.code if isinstance(exit_.code, int) else 2
    try:
        return _run(args, argv, out, err, environ)
    except (_Usage, DemoUsageError) as exc:
        err.write(f"sail-lite: error: {_one_line(str(exc))}\n")
        return 2
    except SailError as exc:
        err.write(f"sail-lite: error: {_one_line(str(exc))}\n")
        return 1
    except OSError as exc:  # reading a local file: a permission, a vanished folder
        detail = exc.strerror or str(exc)
        where = f": {exc.filename}" if exc.filename else ""
        err.write(f"sail-lite: error: {_one_line(detail)}{where}\n")
        return 1
    except KeyboardInterrupt as exc:
        err.write("sail-lite: interrupted\n")
        # What the interrupted call had in flight (sail_lite.submission.Interruption.annotate).
        for label, group in (("cancelled", "cancelled"), ("still running", "uncancelled")):
            for response_id in getattr(exc, group, ()):
                err.write(f"sail-lite: {label} {response_id}\n")
        for response_id in getattr(exc, "finished", ()):
            err.write(
                f"sail-lite: finished {response_id} (sail-lite responses get {response_id})\n"
            )
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
