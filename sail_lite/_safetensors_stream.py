"""A safetensors header checked as it streams in: memory bounded whatever the header's size.

:func:`sail_lite.adapters.read_safetensors_header` reads a header whole; a
header may be 100 MiB (``MAX_HEADER_BYTES``), and parsing it whole costs
about three times that. Here the header's JSON object is read entry by entry
from an iterator of byte chunks, and each batch of entries is checked by
``read_safetensors_header`` and ``check_tensors`` themselves (one definition
of the rules), so memory is a batch (256 KiB of text) plus the tally of what was
found, never the header.

One limit this adds: a single entry (a tensor, or ``__metadata__``) over
:data:`MAX_ENTRY_CHARS` is refused as ``invalid_safetensors``; a tensor
entry is about a hundred bytes.
"""

from __future__ import annotations

import codecs
import json
import os
import re
import struct
from dataclasses import dataclass, field
from typing import Any, Dict, Iterable, Iterator, List, Mapping, Optional, Tuple

from .adapters import (
    MAX_HEADER_BYTES,
    AdapterProblem,
    TensorInfo,
    check_tensors,
    read_safetensors_header,
)
from .errors import AdapterError

__all__ = ["HeaderScan", "scan_safetensors_header", "MAX_ENTRY_CHARS"]

#: The largest single entry of a header (its name and value, as JSON text) read here.
MAX_ENTRY_CHARS = 1 << 20
#: Entries are checked in batches of about this much JSON text (a few MiB of Python objects).
_BATCH_CHARS = 1 << 18
_WHITESPACE = re.compile(r"[ \t\n\r]*")
_DECODE = json.JSONDecoder().raw_decode


@dataclass
class HeaderScan:
    """What a streamed header holds: its own problems, and the tensor checks against the config."""

    problems: List[AdapterProblem] = field(default_factory=list)
    tensor_problems: List[AdapterProblem] = field(default_factory=list)
    tensors: int = 0


def _invalid(message: str) -> AdapterError:
    problem = AdapterProblem("invalid_safetensors", message)
    return AdapterError(message, problems=[problem])


def scan_safetensors_header(
    data: Iterable[bytes], file_size: int, config: Optional[Mapping[str, Any]]
) -> HeaderScan:
    """Check the header of a safetensors file of ``file_size`` bytes whose bytes ``data`` yields from offset 0.

    Reads ``data`` only as far as the header's end. ``tensor_problems`` is
    ``check_tensors`` over every tensor against ``config`` (empty without a
    config). Never raises for the file's content: every problem is reported.
    """
    tally = _Tally(config)
    scan = HeaderScan()
    try:
        length, text = _header_text(iter(data), file_size)
        data_size = file_size - 8 - length
        batch: Dict[str, Any] = {}
        size = 0
        for name, value, chars in _entries(text):
            if name != "__metadata__":
                batch[name] = value
                size += chars
            if size >= _BATCH_CHARS:
                tally.add(_tensors(batch, data_size))
                batch, size = {}, 0
        tally.add(_tensors(batch, data_size))
    except AdapterError as exc:
        scan.problems.extend(exc.problems)
    scan.tensors = tally.tensors
    if config is not None and (tally.tensors or not scan.problems):
        scan.tensor_problems = tally.problems()
    return scan


def _header_text(data: Iterator[bytes], file_size: int) -> Tuple[int, Iterator[str]]:
    """The header's length, and its text (decoded as it arrives); the length checked as the reader does."""
    head = b""
    for chunk in data:
        head += chunk
        if len(head) >= 8:
            break
    if len(head) < 8:
        raise _invalid(f"the weights file is {file_size} bytes: too short for a safetensors header")
    (length,) = struct.unpack("<Q", head[:8])
    if length > MAX_HEADER_BYTES:
        message = (
            f"the safetensors header claims {length} bytes (the limit is {MAX_HEADER_BYTES}): "
            "the file is corrupt or not safetensors"
        )
        raise AdapterError(
            message, problems=[AdapterProblem("safetensors_header_too_large", message)]
        )
    if 8 + length > file_size:
        raise _invalid(
            f"the safetensors header claims {length} bytes but the file has only {file_size - 8}"
        )
    return length, _decoded(head[8:], data, length)


def _decoded(first: bytes, rest: Iterator[bytes], length: int) -> Iterator[str]:
    decoder = codecs.getincrementaldecoder("utf-8")()
    left = length
    try:
        for chunk in _chained(first, rest):
            piece = chunk[:left]
            left -= len(piece)
            yield decoder.decode(piece, final=left == 0)
            if left == 0:
                return
    except UnicodeDecodeError:
        raise _invalid("the safetensors header is not valid UTF-8") from None
    raise _invalid(f"the weights file ended {left} bytes before the end of its header")


def _chained(first: bytes, rest: Iterator[bytes]) -> Iterator[bytes]:
    if first:
        yield first
    yield from rest


class _Text:
    """The header's text as a window that slides over the chunks: only the unread part is kept."""

    def __init__(self, chunks: Iterator[str]) -> None:
        self._chunks = chunks
        self.text = ""
        self.pos = 0
        self.dropped = 0  # characters read and no longer kept
        self.done = False

    @property
    def offset(self) -> int:
        """Characters read from the start of the header."""
        return self.dropped + self.pos

    def fill(self) -> bool:
        """Append the next chunk (dropping what was read); False at the end of the header."""
        if self.done:
            return False
        chunk = next(self._chunks, None)
        if chunk is None:
            self.done = True
            return False
        self.dropped += self.pos
        self.text = self.text[self.pos :] + chunk
        self.pos = 0
        return True

    def skip_whitespace(self) -> None:
        while True:
            self.pos = _WHITESPACE.match(self.text, self.pos).end()  # type: ignore[union-attr]
            if self.pos < len(self.text) or not self.fill():
                return

    def expect(self, char: str) -> None:
        self.skip_whitespace()
        if self.text[self.pos : self.pos + 1] != char:
            found = self.text[self.pos : self.pos + 20] or "the end of the header"
            raise _invalid(
                f"the safetensors header is not valid JSON: expected {char!r}, found {found!r}"
            )
        self.pos += 1

    def peek(self) -> str:
        self.skip_whitespace()
        return self.text[self.pos : self.pos + 1]

    def value(self) -> Any:
        """The next JSON value; more text is read while it may be cut off at the window's end."""
        self.skip_whitespace()
        while True:
            try:
                value, end = _DECODE(self.text, self.pos)
                if end < len(self.text) or self.done:  # a number at the very end may go on
                    self.pos = end
                    return value
            except json.JSONDecodeError:
                if self.done:
                    raise _invalid("the safetensors header is not valid JSON") from None
            except RecursionError:
                raise _invalid("the safetensors header is nested too deeply") from None
            if len(self.text) - self.pos > MAX_ENTRY_CHARS:
                raise _invalid(
                    f"an entry of the safetensors header is over {MAX_ENTRY_CHARS} characters: "
                    "not a PEFT adapter's"
                )
            self.fill()


def _entries(chunks: Iterator[str]) -> Iterator[Tuple[str, Any, int]]:
    """``(name, value, characters)`` for each entry of the header's top-level object, in order."""
    text = _Text(chunks)
    text.expect("{")
    first = True
    while text.peek() != "}":
        if not first:
            text.expect(",")
        first = False
        start = text.offset
        name = text.value()
        if not isinstance(name, str):
            raise _invalid("the safetensors header must be a JSON object of tensors")
        text.expect(":")
        value = text.value()
        yield name, value, text.offset - start
    text.expect("}")
    if text.peek():
        raise _invalid("the safetensors header has text after its JSON object")


def _tensors(batch: Dict[str, Any], data_size: int) -> List[TensorInfo]:
    """The batch checked by ``read_safetensors_header``, as a header of its own over the same data."""
    if not batch:
        return []
    header = json.dumps(batch).encode("utf-8")
    return read_safetensors_header(_View(struct.pack("<Q", len(header)) + header, data_size))  # type: ignore[arg-type]


class _View:
    """``header`` as the start of a file of ``len(header) + data_size`` bytes (only the header is read)."""

    def __init__(self, header: bytes, data_size: int) -> None:
        self._header, self._size, self._pos = header, len(header) + data_size, 0

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        self._pos = self._size + offset if whence == os.SEEK_END else offset
        return self._pos

    def read(self, count: int) -> bytes:
        data = self._header[self._pos : self._pos + count]
        self._pos += len(data)
        return data


class _Tally:
    """``check_tensors`` over every batch, kept as counts: the first mismatch and how many there are."""

    def __init__(self, config: Optional[Mapping[str, Any]]) -> None:
        self.config = config
        self.tensors = 0
        self.lora = False
        self.first: Optional[TensorInfo] = None
        self.mismatched = 0

    def add(self, tensors: List[TensorInfo]) -> None:
        self.tensors += len(tensors)
        if self.config is None or not tensors:
            return
        found = check_tensors(tensors, self.config)
        if found and found[0].code == "no_lora_tensors":
            return
        self.lora = True
        if not found:
            return
        for tensor in tensors:  # a batch with a mismatch: which ones, one by one
            one = check_tensors([tensor], self.config)
            if one and one[0].code == "tensor_shape_mismatch":
                self.first = self.first or tensor
                self.mismatched += 1

    def problems(self) -> List[AdapterProblem]:
        assert self.config is not None
        if self.mismatched:
            # The same message check_tensors gives for the whole list, from the count alone.
            return check_tensors([self.first] * self.mismatched, self.config)  # type: ignore[list-item]
        return [] if self.lora else check_tensors([], self.config)
