"""Streams: a generator predict on its model thread, its chunks on the wire.

A model thread runs the generator (``pump``) and hands chunks through a bounded
``Channel``; the event loop learns that predict streams from a ``StreamStart`` and sends
the chunks as they come (``send_stream``), framed by ``codec``. A slow client slows the
generator instead of growing memory, and a client that leaves stops it.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections import deque
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, Callable

from . import codec
from .error_map import error_answer
from .errors import ServingError
from .request import Receive, Request, Send

if TYPE_CHECKING:
    from .responses import Responder

logger = logging.getLogger(__name__)

STREAMED: Any = object()  # what a runner returns once it has pumped a stream


class Channel:
    """A bounded hand-off of stream chunks from a model thread to the event loop.

    The producer blocks while the buffer is full, so a slow client slows the generator
    instead of growing memory; ``close()`` from the consumer wakes it to stop.
    """

    def __init__(self, notify: Callable[[], object], maxsize: int = 64) -> None:
        self._notify = notify
        self._maxsize = maxsize
        self._items: deque[Any] = deque()
        self._cond = threading.Condition()
        self._closed = False
        self.finished = False
        self.error: BaseException | None = None

    def put(self, item: Any) -> bool:
        """Producer: add a chunk; False once the consumer has gone."""
        with self._cond:
            while len(self._items) >= self._maxsize and not self._closed:
                self._cond.wait()
            if self._closed:
                return False
            self._items.append(item)
        self._notify()
        return True

    def finish(self, error: BaseException | None = None) -> None:
        """Producer: the generator ended (with ``error`` if it raised)."""
        with self._cond:
            self.finished = True
            self.error = error
        self._notify()

    def take(self) -> list[Any]:
        """Consumer: every chunk buffered so far (never blocks)."""
        with self._cond:
            items = list(self._items)
            self._items.clear()
            self._cond.notify_all()
        return items

    def close(self) -> None:
        """Consumer: the client left; the producer stops at its next chunk."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    @property
    def is_closed(self) -> bool:
        """True once the consumer has gone."""
        return self._closed


class StreamStart:
    """What a model thread hands the event loop when predict turns out to stream."""

    __slots__ = ("channel", "event")

    def __init__(self, channel: Channel, event: asyncio.Event) -> None:
        self.channel = channel
        self.event = event


def is_stream(value: Any) -> bool:
    """True for a generator or iterator that predict returned to stream."""
    return isinstance(value, Iterator) and not isinstance(value, (str, bytes, dict, list, tuple))


def pump(generator: Iterator[Any], channel: Channel) -> None:
    """Drive a streaming predict on its model thread until it ends or the client leaves."""
    try:
        for chunk in generator:
            if not channel.put(chunk):
                break
    except BaseException as exc:  # reported on the stream; the slot is freed below
        channel.finish(exc)
    else:
        channel.finish()
    finally:
        close = getattr(generator, "close", None)
        if close is not None:
            close()


async def send_stream(
    send: Send, request: Request, start: StreamStart, out: Responder, details: bool
) -> int:
    """Send a stream's chunks as the model thread produces them; stop when the client leaves."""
    channel, event = start.channel, start.event
    sse = codec.wants_sse(request.accept)
    watcher = asyncio.ensure_future(_watch_disconnect(request.receive, channel, event))
    started = False
    content_type = ""
    try:
        while True:
            finished = channel.finished
            items = channel.take()
            if not started and (items or finished):
                if not items and channel.error is not None:
                    raise channel.error  # nothing sent yet: an ordinary error answer
                content_type = codec.stream_content_type(items[0] if items else "", sse)
                await send(out.start(request, 200, content_type, None, streaming=True))
                started = True
            for item in items:
                body = codec.frame_chunk(item, sse)
                await send({"type": "http.response.body", "body": body, "more_body": True})
            if finished or channel.is_closed:
                break
            await event.wait()
            event.clear()
        if channel.error is not None:
            tail = _error_tail(channel.error, request, sse, content_type, details)
            if tail is None:
                return 500  # no final chunk: the client sees a truncated body
            await send({"type": "http.response.body", "body": tail, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})
        return 200
    finally:
        channel.close()
        watcher.cancel()


def _error_tail(
    error: BaseException, request: Request, sse: bool, content_type: str, details: bool
) -> bytes | None:
    """The last chunk of a stream whose generator raised, in the stream's own framing."""
    logger.error("stream ended by %s", type(error).__name__, exc_info=error)
    answer = error_answer(error, request.request_id, details)
    message = answer.message
    if details and not isinstance(error, ServingError):
        message = str(error) or message
    if sse:
        return codec.sse_error(message)
    if content_type == codec.NDJSON_TYPE:
        return codec.encode_json({"error": message}) + b"\n"
    return None


async def _watch_disconnect(receive: Receive, channel: Channel, event: asyncio.Event) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            channel.close()
            event.set()
            return
