"""The reference model: a tiny, deterministic, honest sampler.

It is not a language model, but its arithmetic is real, so clients can be
tested against it:

- the output vocabulary is the readable bytes (32..126 and newline) plus an
  end-of-sequence token :data:`EOS` (256); prompts may hold any int ids;
- each step's logits are a pure function of (seed, model, prompt, tokens so
  far) and, with a LoRA, of the adapter's weight bytes, so the same request
  gives the same output and an adapter visibly shifts it;
- sampling is a softmax with temperature (0 = greedy) and nucleus top-p, and
  each reported logprob is the true log-probability of the sampled token
  under the distribution it was drawn from (renormalised after top-p, so a
  greedy pick has logprob 0.0);
- stop strings, stop token ids, ``EOS`` (stop reason ``"stop"``) and the
  token limit (``"length"``) end generation; the ending stop token or EOS is
  the last token returned.
"""

from __future__ import annotations

import hashlib
import math
from array import array
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

__all__ = [
    "EOS",
    "VOCAB",
    "Generation",
    "generate",
    "prompt_state",
    "encode_text",
    "decode_tokens",
]

EOS = 256
VOCAB: Tuple[int, ...] = tuple(range(32, 127)) + (10, EOS)
_EOS_BIAS = -2.5  # keeps outputs a readable length: EOS is sampled now and then, not at once
_ADAPTER_SCALE = 6.0


@dataclass(frozen=True)
class Generation:
    """What one inference run produced."""

    tokens: Tuple[int, ...]
    logprobs: Tuple[float, ...]
    stop_reason: str  # "stop" or "length"
    stopped_by: Optional[str] = None  # the stop string that matched, if any

    @property
    def text(self) -> str:
        """The readable output: bytes below 256, EOS left out."""
        return decode_tokens(self.tokens)

    @property
    def answer(self) -> str:
        """The text a chat-style endpoint returns: without the stop string that ended it."""
        text = self.text
        return text[: len(text) - len(self.stopped_by)] if self.stopped_by else text


def encode_text(text: str) -> List[int]:
    """Byte-level tokens of a text (UTF-8 bytes)."""
    return list(text.encode("utf-8"))


def decode_tokens(tokens: Sequence[int]) -> str:
    return bytes(t for t in tokens if 0 <= t < 256).decode("utf-8", "replace")


def _uniform(state: bytes, salt: bytes) -> float:
    value = int.from_bytes(hashlib.blake2b(salt + state, digest_size=8).digest(), "little")
    return (value >> 11) / float(1 << 53)


def _logits(state: bytes, adapter: Optional[bytes]) -> List[float]:
    raw = hashlib.shake_128(state).digest(len(VOCAB))
    logits = [b / 32.0 - 4.0 for b in raw]
    logits[-1] += _EOS_BIAS
    if adapter is not None:
        shift = hashlib.shake_128(adapter + state).digest(len(VOCAB))
        logits = [x + _ADAPTER_SCALE * (b / 255.0 - 0.5) for x, b in zip(logits, shift)]
    return logits


def _distribution(logits: List[float], temperature: float, top_p: float) -> List[Tuple[int, float]]:
    """(vocab index, probability) pairs of the distribution to sample from, most likely first."""
    if temperature <= 0.0:
        best = max(range(len(logits)), key=logits.__getitem__)
        return [(best, 1.0)]
    peak = max(logits)
    weights = [math.exp((x - peak) / temperature) for x in logits]
    total = sum(weights)
    ranked = sorted(((i, w / total) for i, w in enumerate(weights)), key=lambda item: -item[1])
    if top_p >= 1.0:
        return ranked
    kept, mass = [], 0.0
    for index, p in ranked:
        kept.append((index, p))
        mass += p
        if mass >= top_p:
            break
    return [(i, p / mass) for i, p in kept]


_PROMPT_SLICE = 1 << 16


def prompt_state(prompt: Sequence[int], *, seed: int, model: str) -> bytes:
    """The model's state after reading ``prompt`` (16 bytes): all that generation needs of a prompt.

    Hashed a slice at a time, so a prompt of millions of tokens never exists
    as one array of 8-byte ids.
    """
    head = hashlib.blake2b(digest_size=16)
    head.update(f"{seed}\0{model}\0".encode())
    for start in range(0, len(prompt), _PROMPT_SLICE):
        ids = array("q")
        ids.extend(prompt[start : start + _PROMPT_SLICE])  # ints, also from a bytes prompt
        head.update(ids.tobytes())
    return head.digest()


def generate(
    prompt: Sequence[int],
    *,
    seed: int,
    model: str,
    max_tokens: int,
    temperature: float = 1.0,
    top_p: float = 1.0,
    stop_strings: Sequence[str] = (),
    stop_tokens: Sequence[int] = (),
    adapter: Optional[bytes] = None,
    sample_salt: bytes = b"",
    start: Optional[bytes] = None,
) -> Generation:
    """Run the reference model; deterministic in all of its arguments.

    ``start`` is :func:`prompt_state` of (prompt, seed, model) when the caller
    kept only that (then ``prompt`` is not read).
    """
    state = start if start is not None else prompt_state(prompt, seed=seed, model=model)
    salt = b"sample" + sample_salt
    stops = set(stop_tokens)
    tokens: List[int] = []
    logprobs: List[float] = []
    text = ""
    for _ in range(max_tokens):
        choices = _distribution(_logits(state, adapter), temperature, top_p)
        u = _uniform(state, salt)
        index, p = choices[-1]
        for index, p in choices:  # noqa: B007
            u -= p
            if u < 0.0:
                break
        token = VOCAB[index]
        tokens.append(token)
        logprobs.append(math.log(p))
        if token in stops or token == EOS:
            return Generation(tuple(tokens), tuple(logprobs), "stop")
        if stop_strings and token < 256:
            text += chr(token)
            for needle in stop_strings:
                if needle and text.endswith(needle):
                    return Generation(tuple(tokens), tuple(logprobs), "stop", needle)
        state = hashlib.blake2b(state + token.to_bytes(4, "little"), digest_size=16).digest()
    return Generation(tuple(tokens), tuple(logprobs), "length")
