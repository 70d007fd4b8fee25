"""A user's script, run as its own process and stopped with a real SIGINT (tests/test_interrupt.py).

``python -m tests._interrupt_worker BASE_URL API_KEY MODE [JOURNAL]`` writes ``result <response id>``
(flushed) for every result it gets, as a user's script would print them, and never catches the
``KeyboardInterrupt`` itself (except in ``submit``, which shows what ``Client.close()`` did):

- ``sample``         ``client.tokens.sample`` over many prompts, one after another;
- ``map``            ``client.tokens.map`` over many prompts, 8 in flight (its progress callback
                     writes ``progress N`` from inside the map's own loop);
- ``map-journal``    the same with a Journal (``JOURNAL``) and ``on_interrupt="cancel"``;
- ``sample-term``    ``sample`` with a SIGTERM handler that calls ``sys.exit(3)``;
- ``create``         ``client.responses.create`` (foreground: the reply comes when the turn ends);
- ``sample-journal`` ``client.tokens.sample(..., journal=)`` over many prompts;
- ``completer``      ``SailTokenCompleter.sample_tokens`` over many prompts (needs tinker-cookbook;
                     writes ``result -``: which id a result carries is the completer's business);
- ``submit``         three futures from ``submit()``, then unrelated code (a sleep) is interrupted;
                     after ``client.close()`` it prints ``future <id> <exception type>`` for each.

The client is made without a ``with`` block, as the short scripts people write are.
"""

from __future__ import annotations

import logging
import signal
import sys
import time

from sail_lite import Client, Journal, PollPolicy, RetryPolicy

MODEL = "moonshotai/Kimi-K2.6"
N = 400

POLL = PollPolicy(initial_interval=0.02, default_max_interval=0.1, max_interval={"balanced": 0.1})


def prompts():
    return [[1 + i % 7, 2 + i // 7, 3] for i in range(N)]


def say(*words: object) -> None:
    sys.stdout.write(" ".join(map(str, words)) + "\n")
    sys.stdout.flush()


def submit_then_sleep(client: Client) -> None:
    futures = [client.tokens.submit([1, 2, i], model=MODEL, max_tokens=4) for i in range(3)]
    while not all(future.response_id for future in futures):
        time.sleep(0.01)
    try:
        say("submitted", *(future.response_id for future in futures))
        time.sleep(600)  # unrelated code: the interrupt lands here (or in the line above)
    except KeyboardInterrupt:
        client.close()
        for future in futures:
            say("future", future.response_id, type(future.exception()).__name__)
        raise


def main(argv):
    base_url, api_key, mode = argv[1], argv[2], argv[3]
    signal.signal(signal.SIGINT, signal.default_int_handler)  # as in a terminal
    logging.basicConfig(level=logging.INFO)  # a script that shows what sail_lite logs
    client = Client(
        api_key,
        base_url=base_url,
        poll=POLL,
        retry=RetryPolicy(initial_delay=0.01, max_delay=0.05),
        environ={},
    )
    say("ready")
    if mode == "submit":
        submit_then_sleep(client)
    elif mode in ("sample", "sample-term"):
        if mode == "sample-term":
            signal.signal(signal.SIGTERM, lambda *_: sys.exit(3))
        for prompt in prompts():
            say("result", client.tokens.sample(prompt, model=MODEL, max_tokens=4).response_id)
    elif mode == "create":
        for i in range(N):
            response = client.responses.create(
                model=MODEL, input=f"say {i}", max_output_tokens=4, completion_window="balanced"
            )
            say("result", response.id)
    elif mode == "sample-journal":
        journal = Journal(argv[4])
        for prompt in prompts():
            result = client.tokens.sample(
                prompt, model=MODEL, max_tokens=4, journal=journal, job="sampled"
            )
            say("result", result.response_id)
    elif mode == "completer":
        from sail_lite.tinker import SailTokenCompleter

        completer = SailTokenCompleter(model=MODEL, max_tokens=4, client=client)
        for prompt in prompts():
            completer.sample_tokens(prompt)
            say("result", "-")
    elif mode in ("map", "map-journal"):
        options = {}
        if mode == "map-journal":
            options = dict(journal=Journal(argv[4]), job="mapped", on_interrupt="cancel")
        results = client.tokens.map(
            prompts(),
            model=MODEL,
            max_tokens=4,
            max_in_flight=8,
            progress=lambda progress: say("progress", progress.done),  # said inside the map's loop
            **options,
        )
        for result in results:
            say("result", result.response_id)
    else:
        raise SystemExit(f"unknown mode {mode!r}")


if __name__ == "__main__":
    main(sys.argv)
