"""Streaming (issue 23): time to first event and CPU per event, sail_lite vs openai-python, and memory.

Both clients stream ``POST /v1/responses`` (``stream: true``) from the same emulator, which runs in
its own process (so its CPU is not counted) with turns of 0 s and no gap between tokens; every
stream samples greedily (``temperature=0``), so it runs to its token limit (one event per token):

- time to first event: from the ``create(..., stream=True)`` call to the first event
  (``response.created``) and to the first text delta; median and p90 over ``--runs`` streams of
  ``--short`` tokens, the two clients interleaved;
- CPU per event: this process's CPU time (user + system) over one stream of ``--long`` tokens,
  read to its end, divided by the events read; best of ``--repeats``;
- memory: sail_lite streams of 1,000, 10,000 and 100,000 events on each endpoint, read to the end
  with ``text_stream`` and ``final()``: the tracemalloc peak while streaming and the growth of the
  process's peak RSS. Flat means the peak does not grow with the number of events (what is kept
  is the final object: the generated text, once).

``python bench/streaming.py [--runs 40] [--short 16] [--long 20000] [--json FILE]`` prints a table.
openai is optional (its columns say "not installed" without it).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import statistics
import sys
import time
import tracemalloc
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

HERE = os.path.dirname(os.path.abspath(__file__))
if os.path.dirname(HERE) not in sys.path:
    sys.path.insert(1, os.path.dirname(HERE))

from bench._emulator import EmulatorProcess  # noqa: E402
from sail_lite import Client  # noqa: E402

MODEL = "moonshotai/Kimi-K2.6"
TURNS = {"asap": 0.0, "balanced": 0.0}


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _sail_events(client: Client, tokens: int) -> Iterator[Tuple[str, Any]]:
    with client.responses.create(
        model=MODEL, input="Tell me a story", max_output_tokens=tokens, temperature=0, stream=True
    ) as stream:
        for event in stream:
            yield event.type, event


def _openai_events(client: Any, tokens: int) -> Iterator[Tuple[str, Any]]:
    with client.responses.create(
        model=MODEL, input="Tell me a story", max_output_tokens=tokens, temperature=0, stream=True
    ) as stream:
        for event in stream:
            yield event.type, event


def first_event_times(
    events: Callable[[int], Iterator[Tuple[str, Any]]], tokens: int
) -> Tuple[float, float]:
    """Seconds to the first event and to the first text delta (the stream is read to its end)."""
    started = time.perf_counter()
    first = delta = None
    for kind, _ in events(tokens):
        now = time.perf_counter()
        if first is None:
            first = now - started
        if delta is None and kind == "response.output_text.delta":
            delta = now - started
    assert first is not None and delta is not None, "the stream had no text"
    return first, delta


def cpu_per_event(
    events: Callable[[int], Iterator[Tuple[str, Any]]], tokens: int
) -> Tuple[float, int]:
    """Microseconds of this process's CPU per event over one stream, and the events read."""
    gc.collect()
    before = _cpu()
    count = sum(1 for _ in events(tokens))
    return (_cpu() - before) / count * 1e6, count


def _summary(values: List[float]) -> Dict[str, float]:
    ordered = sorted(values)
    return {
        "median_ms": statistics.median(ordered) * 1000,
        "p90_ms": ordered[max(0, int(round(0.9 * len(ordered))) - 1)] * 1000,
    }


def latency_rows(
    clients: Dict[str, Callable[[int], Iterator[Tuple[str, Any]]]], runs: int, tokens: int
) -> Dict[str, Any]:
    firsts: Dict[str, List[float]] = {name: [] for name in clients}
    deltas: Dict[str, List[float]] = {name: [] for name in clients}
    for events in clients.values():  # warm: connections, imports, first-call caches
        first_event_times(events, tokens)
    for _ in range(runs):
        for name, events in clients.items():  # interleaved: both see the same machine load
            first, delta = first_event_times(events, tokens)
            firsts[name].append(first)
            deltas[name].append(delta)
    return {
        name: {"first_event": _summary(firsts[name]), "first_delta": _summary(deltas[name])}
        for name in clients
    }


def cpu_rows(
    clients: Dict[str, Callable[[int], Iterator[Tuple[str, Any]]]], tokens: int, repeats: int
) -> Dict[str, Any]:
    result: Dict[str, Any] = {}
    for name, events in clients.items():
        best, count = min(cpu_per_event(events, tokens) for _ in range(repeats))
        result[name] = {"cpu_us_per_event": best, "events": count}
    return result


def _stream(client: Client, endpoint: str, tokens: int) -> Any:
    if endpoint == "responses":
        return client.responses.create(
            model=MODEL,
            input="Tell me a story",
            max_output_tokens=tokens,
            temperature=0,
            stream=True,
        )
    messages = [{"role": "user", "content": "Tell me a story"}]
    if endpoint == "chat":
        return client.chat.completions.create(
            model=MODEL, messages=messages, max_completion_tokens=tokens, temperature=0, stream=True
        )
    return client.messages.create(
        model=MODEL, max_tokens=tokens, messages=messages, temperature=0, stream=True
    )


def memory_row(client: Client, endpoint: str, tokens: int) -> Dict[str, Any]:
    """tracemalloc peak and peak-RSS growth while one stream of ``tokens`` tokens is read to its end."""
    gc.collect()
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    tracemalloc.start()
    started = time.perf_counter()
    with _stream(client, endpoint, tokens) as stream:
        text = sum(len(piece) for piece in stream.text_stream)
        stream.final()
    took = time.perf_counter() - started
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    rss_growth = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before
    return {
        "endpoint": endpoint,
        "tokens": tokens,
        "text_chars": text,
        "tracemalloc_peak_kib": peak / 1024,
        "peak_rss_growth_kib": rss_growth,  # ru_maxrss is KiB on Linux
        "seconds": took,
    }


def _openai_client(base_url: str, api_key: str) -> Optional[Any]:
    try:
        import openai
    except ImportError:
        return None
    return openai.OpenAI(api_key=api_key, base_url=base_url, max_retries=0)


def main(argv: Optional[List[str]] = None) -> Dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--runs", type=int, default=40, help="streams per client for time to first event"
    )
    parser.add_argument("--short", type=int, default=16, help="tokens per short stream")
    parser.add_argument(
        "--long", type=int, default=20000, help="tokens of the CPU-per-event stream"
    )
    parser.add_argument("--repeats", type=int, default=3, help="CPU runs per client (best kept)")
    parser.add_argument(
        "--memory-sizes", default="1000,10000,100000", help="stream lengths for memory"
    )
    parser.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    args = parser.parse_args(argv)
    results: Dict[str, Any] = {}
    with EmulatorProcess(TURNS) as emulator:
        sail = Client(emulator.api_key, base_url=emulator.base_url, environ={})
        openai_client = _openai_client(emulator.base_url, emulator.api_key)
        clients = {"sail_lite": lambda n: _sail_events(sail, n)}
        if openai_client is not None:
            clients["openai"] = lambda n: _openai_events(openai_client, n)
        results["first_event"] = latency_rows(clients, args.runs, args.short)
        results["cpu"] = cpu_rows(clients, args.long, args.repeats)
        sizes = [int(size) for size in args.memory_sizes.split(",")]
        results["memory"] = [
            memory_row(sail, endpoint, size)
            for endpoint in ("responses", "chat", "messages")
            for size in sizes
        ]
        sail.close()
        if openai_client is not None:
            openai_client.close()
    results["machine"] = {
        "cores": os.cpu_count(),
        "python": sys.version.split()[0],
        "load": os.getloadavg(),
    }
    _print(results)
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(results, handle, indent=2)
    return results


def _print(results: Dict[str, Any]) -> None:
    print("time to first event, POST /v1/responses stream (ms, median / p90)")
    for name, row in results["first_event"].items():
        first, delta = row["first_event"], row["first_delta"]
        print(
            f"  {name:10} first event {first['median_ms']:7.2f} / {first['p90_ms']:7.2f}"
            f"   first text delta {delta['median_ms']:7.2f} / {delta['p90_ms']:7.2f}"
        )
    print("CPU per event, one long stream read to its end (this process only)")
    for name, row in results["cpu"].items():
        print(f"  {name:10} {row['cpu_us_per_event']:7.1f} us/event over {row['events']} events")
    print("memory, sail_lite, stream read with text_stream + final()")
    for row in results["memory"]:
        print(
            f"  {row['endpoint']:10} {row['tokens']:>7} tokens ({row['text_chars']} chars): "
            f"tracemalloc peak {row['tracemalloc_peak_kib']:8.0f} KiB, "
            f"peak RSS growth {row['peak_rss_growth_kib']:6d} KiB, {row['seconds']:.2f} s"
        )
    load = results["machine"]["load"]
    print(
        f"machine: {results['machine']['cores']} cores, load {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}"
    )


if __name__ == "__main__":
    main()
