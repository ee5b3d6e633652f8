"""Read streamed answers on the client side: NDJSON lines and Server-Sent Events.

Standard library only, like the client that uses it.
"""

from __future__ import annotations

import codecs
import contextlib
import itertools
import json as jsonlib
from collections.abc import Iterator
from typing import Any


def ndjson_chunks(pieces: Iterator[bytes]) -> Iterator[Any]:
    """Decode NDJSON: one JSON value for each non-empty line."""
    buffer = b""
    for piece in itertools.chain(pieces, [b"\n"]):  # the newline ends an unfinished last line
        *lines, buffer = (buffer + piece).split(b"\n")
        yield from (jsonlib.loads(line) for line in lines if line.strip())


def sse_events(pieces: Iterator[bytes]) -> Iterator[tuple[str, str]]:
    """Parse Server-Sent Events into ``(event name, data)`` pairs; comments are skipped."""
    decoder = codecs.getincrementaldecoder("utf-8")("replace")
    buffer = ""
    for piece in itertools.chain(pieces, [b"\n\n"]):  # the blank line ends an unfinished event
        buffer += decoder.decode(piece)
        # A "\r" at the end may be the first half of a "\r\n" split across two pieces.
        held = "\r" if buffer.endswith("\r") else ""
        text = buffer[: len(buffer) - len(held)].replace("\r\n", "\n").replace("\r", "\n")
        *blocks, buffer = text.split("\n\n")
        buffer += held
        for block in blocks:
            event = _sse_event(block)
            if event is not None:
                yield event


def _sse_event(block: str) -> tuple[str, str] | None:
    name = "message"
    data: list[str] = []
    for line in block.split("\n"):
        if not line or line.startswith(":"):
            continue
        field, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if field == "event":
            name = value
        elif field == "data":
            data.append(value)
    if not data:
        return None
    return name, "\n".join(data)


def sse_value(data: str) -> Any:
    """An SSE event's data: parsed when it is a JSON object or array, else the text."""
    if data[:1] in ("{", "["):
        with contextlib.suppress(ValueError):
            return jsonlib.loads(data)
    return data
