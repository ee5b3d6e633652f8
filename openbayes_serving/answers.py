"""What the client reads back: answers decoded by Content-Type, errors, and streams.

Standard library, ``msgpack`` and ``requests`` (only when a Client made the call), like
the client that uses it: ``PredictError`` for 4xx/5xx answers, ``ChunkStream`` for a
streamed answer (raw, NDJSON or Server-Sent Events, read as the chunks arrive).
"""

from __future__ import annotations

import codecs
import contextlib
import itertools
import json as jsonlib
from collections.abc import Generator, Iterator
from typing import TYPE_CHECKING, Any

from msgpack import unpackb

if TYPE_CHECKING:
    import requests

JSON_TYPE = "application/json"
MSGPACK_TYPE = "application/msgpack"
NDJSON_TYPE = "application/x-ndjson"
SSE_TYPE = "text/event-stream"
OCTET_TYPE = "application/octet-stream"
MSGPACK_TYPES = frozenset(
    f"application/{name}" for name in ("msgpack", "x-msgpack", "vnd.msgpack", "vnd.messagepack")
)
_ERROR_TEXT_LIMIT = 500


class PredictError(Exception):
    """The server answered 4xx or 5xx, or a stream it sent ended with an error event.

    Attributes:
        status_code: The HTTP status.
        body: The decoded error body: a dict such as ``{"error": "..."}`` for the runtime's
            JSON errors, else the body as text.
        request_id: The ``X-Request-Id`` of the answer, to find the request in the logs.
    """

    def __init__(self, status_code: int, body: Any, request_id: str | None) -> None:
        super().__init__(status_code, body, request_id)
        self.status_code = status_code
        self.body = body
        self.request_id = request_id

    @property
    def message(self) -> str:
        """The ``error`` field of a JSON error body, else the start of the body text."""
        if isinstance(self.body, dict) and isinstance(self.body.get("error"), str):
            return str(self.body["error"])
        text = (self.body if isinstance(self.body, str) else repr(self.body)).strip()
        if len(text) > _ERROR_TEXT_LIMIT:
            return text[:_ERROR_TEXT_LIMIT] + "..."
        return text or "(empty body)"

    @property
    def traceback(self) -> str | None:
        """The server's traceback, sent with 500 answers in local mode only."""
        if isinstance(self.body, dict) and isinstance(self.body.get("traceback"), str):
            return str(self.body["traceback"])
        return None

    def __str__(self) -> str:
        where = f" (request id {self.request_id})" if self.request_id else ""
        return f"HTTP {self.status_code}: {self.message}{where}"


class ChunkStream(Iterator[Any]):
    """The chunks of a streamed answer, read from the connection as they arrive.

    Iterate over it; ``close()`` (or leaving a ``with`` block) drops the connection. It
    is closed by itself once the last chunk has been read.

    Attributes:
        status_code: The HTTP status of the answer.
        content_type: Its ``Content-Type`` header.
        request_id: Its ``X-Request-Id`` header.
    """

    def __init__(self, response: requests.Response) -> None:
        self.response = response
        self.status_code = response.status_code
        self.content_type = response.headers.get("Content-Type", "")
        self.request_id = response.headers.get("X-Request-Id")
        response.encoding = charset(self.content_type)
        self._chunks = self._read()

    def __iter__(self) -> ChunkStream:
        return self

    def __next__(self) -> Any:
        return next(self._chunks)

    def __enter__(self) -> ChunkStream:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop reading and close the connection."""
        self._chunks.close()
        self.response.close()

    def _read(self) -> Generator[Any, None, None]:
        mime = media_type(self.content_type)
        # chunk_size=None hands over each piece as it arrives instead of filling a buffer.
        pieces = self.response.iter_content(chunk_size=None)
        try:
            if mime == NDJSON_TYPE:
                yield from ndjson_chunks(pieces)
            elif mime == SSE_TYPE:
                for event, data in sse_events(pieces):
                    if event == "error":
                        raise PredictError(self.status_code, sse_value(data), self.request_id)
                    yield sse_value(data)
            elif mime.startswith("text/"):
                texts = self.response.iter_content(chunk_size=None, decode_unicode=True)
                yield from (text for text in texts if text)
            elif is_structured(mime):
                yield decode(self.response)
            else:
                yield from (piece for piece in pieces if piece)
        finally:
            self.response.close()


def media_type(content_type: str | None) -> str:
    """The media type of a Content-Type, lower-case, without parameters."""
    return (content_type or "").split(";", 1)[0].strip().lower()


def charset(content_type: str | None) -> str:
    """The charset parameter of a Content-Type when Python knows it, else UTF-8."""
    for param in (content_type or "").split(";")[1:]:
        key, _, value = param.strip().partition("=")
        if key.lower() == "charset":
            with contextlib.suppress(LookupError):
                return codecs.lookup(value.strip('" ')).name
    return "utf-8"


def is_structured(mime: str) -> bool:
    """True for JSON (and +json) and every MessagePack alias."""
    return mime == JSON_TYPE or mime.endswith("+json") or mime in MSGPACK_TYPES


def decode(response: requests.Response) -> Any:
    """The body of a complete answer, decoded by its Content-Type (see ``Client.predict``)."""
    content_type = response.headers.get("Content-Type")
    mime = media_type(content_type)
    content = response.content
    if mime in MSGPACK_TYPES:
        return unpackb(content, raw=False) if content else None
    if mime == JSON_TYPE or mime.endswith("+json"):
        return jsonlib.loads(content) if content else None
    if mime == NDJSON_TYPE:
        return list(ndjson_chunks(iter([content])))
    if mime == SSE_TYPE:
        return [sse_value(data) for _, data in sse_events(iter([content]))]
    if mime.startswith("text/"):
        return content.decode(charset(content_type), "replace")
    return content


def predict_error(response: requests.Response) -> PredictError:
    """A PredictError for a 4xx/5xx answer; a body that does not decode is kept as text."""
    request_id = response.headers.get("X-Request-Id")
    mime = media_type(response.headers.get("Content-Type"))
    body: Any = None
    if is_structured(mime):
        with contextlib.suppress(ValueError):
            body = decode(response)
    if body is None:
        body = response.content.decode(charset(response.headers.get("Content-Type")), "replace")
    return PredictError(response.status_code, body, request_id)


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
