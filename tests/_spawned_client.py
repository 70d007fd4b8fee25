"""The function test_concurrency runs in a spawned process, in a module that is cheap to import.

A spawned child imports the module that defines its target; the test module would bring pytest and
the test helpers with it.
"""

from __future__ import annotations

import pickle


def sample_with_a_pickled_client(pickled: bytes, queue, model: str) -> None:
    client = pickle.loads(pickled)
    with client:
        queue.put(
            client.tokens.sample([1, 2, 3], model=model, max_tokens=3, temperature=0.0).tokens
        )
