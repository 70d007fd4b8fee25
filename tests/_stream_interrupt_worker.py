"""A user's script that streams, stopped with a real SIGINT (tests/test_streaming_client.py).

``python -m tests._stream_interrupt_worker BASE_URL API_KEY`` streams a long response from a slow
emulator and writes ``delta`` (flushed) for each text delta. On ``KeyboardInterrupt`` it writes
``interrupted closed=<stream.closed>``, waits for a line on stdin (the test checks meanwhile that the
emulator saw the connection go, while this process still lives), then lets the interrupt end it.
"""

from __future__ import annotations

import sys

from sail_lite import Client

MODEL = "moonshotai/Kimi-K2.6"


def main(base_url: str, api_key: str) -> None:
    client = Client(api_key, base_url=base_url, environ={})
    stream = client.responses.create(
        model=MODEL, input="tell me", max_output_tokens=500, stream=True
    )
    try:
        with stream:
            for text in stream.text_stream:
                sys.stdout.write(f"delta {len(text)}\n")
                sys.stdout.flush()
    except KeyboardInterrupt:
        sys.stdout.write(f"interrupted closed={stream.closed}\n")
        sys.stdout.flush()
        sys.stdin.readline()
        raise


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
