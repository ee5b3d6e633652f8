"""Send answers over ASGI: request ids, CORS, JSON bodies, static UI files and streams.

``app.py`` decides what to answer; this module puts it on the wire.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import itertools
import logging
import os
import uuid
from importlib import resources
from typing import Any, Callable

from . import codec
from .errors import NotFoundError, ServingError
from .events import PLATFORM_REQUEST_ID
from .scheduler import Channel

logger = logging.getLogger(__name__)

# The id of the request being served, for log lines (set by app.py, read by server.py).
REQUEST_ID: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")

# Request ids: a random per-process prefix and a counter. Unique across processes and
# restarts without a system call per request (uuid4 reads os.urandom every time).
_id_prefix = uuid.uuid4().hex[:16]
_id_counter = itertools.count(1)


def _new_id_prefix() -> None:
    global _id_prefix, _id_counter
    _id_prefix = uuid.uuid4().hex[:16]
    _id_counter = itertools.count(1)


os.register_at_fork(after_in_child=_new_id_prefix)  # each gunicorn worker its own prefix


def new_request_id() -> str:
    """A fresh request id, such as ``3f9c0a1b2c4d5e6f-1a``."""
    return f"{_id_prefix}-{next(_id_counter):x}"


Send = Callable[[dict[str, Any]], Any]
Receive = Callable[[], Any]
Headers = list[tuple[bytes, bytes]]


class RequestInfo:
    """Per-request facts taken from the headers in one pass."""

    __slots__ = ("request_id", "content_type", "accept", "origin", "content_length", "auth")

    def __init__(self, headers: Headers) -> None:
        self.content_type: str | None = None
        self.accept: str | None = None
        self.origin: bytes | None = None
        self.content_length: bytes | None = None
        self.auth: tuple[bytes, bytes] | None = None
        given: str | None = None
        platform: str | None = None
        for name, value in headers:
            if name == b"content-type":
                self.content_type = value.decode("latin-1")
            elif name == b"accept":
                self.accept = value.decode("latin-1")
            elif name == b"content-length":
                self.content_length = value
            elif name == b"origin":
                self.origin = value
            elif name == b"x-request-id":
                given = value.decode("latin-1")[:128]
            elif name == b"x-openbayes-serving-request-id":
                platform = value.decode("latin-1")[:128]
            elif name in (b"authorization", b"x-api-key"):
                self.auth = (name, value)
        self.request_id: str = given or platform or new_request_id()
        if platform and platform.isdigit():
            PLATFORM_REQUEST_ID.set(int(platform))


class Responder:
    """Builds and sends responses with the headers every answer carries."""

    def __init__(self, cors_origins: tuple[str, ...], show_details: bool) -> None:
        self._cors = _cors_headers(cors_origins)
        self._show_details = show_details

    async def stream(
        self, send: Send, receive: Receive, ctx: RequestInfo, start: StreamStart
    ) -> int:
        """Send a stream's chunks as the model thread produces them; stop when the client leaves."""
        channel, event = start.channel, start.event
        sse = codec.wants_sse(ctx.accept)
        watcher = asyncio.ensure_future(_watch_disconnect(receive, channel, event))
        started = False
        content_type = ""
        try:
            while True:
                finished = channel.finished
                items = channel.take()
                if not started and (items or finished):
                    if not items and channel.error is not None:
                        raise channel.error
                    content_type = codec.stream_content_type(items[0] if items else "", sse)
                    await send(self.start(ctx, 200, content_type, None, streaming=True))
                    started = True
                for item in items:
                    await send(
                        {
                            "type": "http.response.body",
                            "body": codec.frame_chunk(item, sse),
                            "more_body": True,
                        }
                    )
                if finished or channel.is_closed:
                    break
                await event.wait()
                event.clear()
            if channel.error is not None:
                # Headers are gone: say so in the stream's own framing, or cut it short.
                error = channel.error
                logger.error("stream ended by %s", type(error).__name__, exc_info=error)
                message = (
                    error.message
                    if isinstance(error, ServingError)
                    else str(error)
                    if self._show_details
                    else "internal server error"
                )
                if sse:
                    tail = codec.sse_error(message)
                elif content_type == codec.NDJSON_TYPE:
                    tail = codec.encode_json({"error": message}) + b"\n"
                else:
                    return 500  # no final chunk: the client sees a truncated body
                await send({"type": "http.response.body", "body": tail, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
            return 200
        finally:
            channel.close()
            watcher.cancel()

    def start(
        self,
        ctx: RequestInfo,
        status: int,
        content_type: str | None,
        extra: Headers | None,
        streaming: bool = False,
    ) -> dict[str, Any]:
        """The http.response.start message: request id, content type, CORS."""
        headers: Headers = [(b"x-request-id", ctx.request_id.encode("latin-1"))]
        if content_type is not None:
            headers.append((b"content-type", content_type.encode("latin-1")))
        if streaming:
            headers.append((b"cache-control", b"no-cache"))
            headers.append((b"x-accel-buffering", b"no"))
        if extra:
            headers.extend(extra)
        headers.extend(self._cors(ctx.origin))
        return {"type": "http.response.start", "status": status, "headers": headers}

    async def respond(
        self,
        send: Send,
        ctx: RequestInfo,
        status: int,
        body: bytes,
        content_type: str | None,
        extra: Headers | None = None,
    ) -> int:
        """Send a whole answer with its Content-Length."""
        start = self.start(ctx, status, content_type, extra)
        if not any(name == b"content-length" for name, _ in start["headers"]):
            start["headers"].append((b"content-length", str(len(body)).encode()))
        await send(start)
        await send({"type": "http.response.body", "body": body})
        return status

    async def json(
        self, send: Send, ctx: RequestInfo, status: int, value: Any, extra: Headers | None = None
    ) -> int:
        """Send ``value`` as a JSON answer."""
        return await self.respond(
            send, ctx, status, codec.encode_json(value), codec.JSON_TYPE, extra
        )


class StreamStart:
    """What a model thread hands the event loop when predict turns out to stream."""

    __slots__ = ("channel", "event")

    def __init__(self, channel: Channel, event: asyncio.Event) -> None:
        self.channel = channel
        self.event = event


async def _watch_disconnect(receive: Receive, channel: Channel, event: asyncio.Event) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            channel.close()
            event.set()
            return


def _cors_headers(origins: tuple[str, ...]) -> Callable[[bytes | None], Headers]:
    expose = (b"access-control-expose-headers", b"x-request-id, retry-after")
    if not origins:
        return lambda origin: []
    if "*" in origins:
        fixed = [(b"access-control-allow-origin", b"*"), expose]
        return lambda origin: fixed
    allowed = {o.encode("latin-1") for o in origins}

    def headers(origin: bytes | None) -> Headers:
        if origin is not None and origin in allowed:
            return [(b"access-control-allow-origin", origin), (b"vary", b"Origin"), expose]
        return [(b"vary", b"Origin")]

    return headers


def preflight(headers: Headers) -> Headers:
    """The answer headers of a CORS preflight request."""
    asked = next((v for k, v in headers if k == b"access-control-request-headers"), b"content-type")
    return [
        (b"access-control-allow-methods", b"GET, POST, OPTIONS"),
        (b"access-control-allow-headers", asked),
        (b"access-control-max-age", b"600"),
    ]


_UI_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript", ".css": "text/css"}


def guess_type(path: str) -> str:
    """The content type of a UI file by its extension."""
    return next(
        (t for ext, t in _UI_TYPES.items() if path.endswith(ext)), "application/octet-stream"
    )


@functools.lru_cache(maxsize=16)
def ui_file(name: str) -> bytes:
    """A file of the try-it page, from the package (cached)."""
    if "/" in name or name.startswith("."):
        raise NotFoundError(f"no file {name}")
    path = resources.files("openbayes_serving") / "ui" / name
    if not path.is_file():
        raise NotFoundError(f"no file {name}")
    return path.read_bytes()
