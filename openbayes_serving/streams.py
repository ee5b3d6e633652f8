"""Streams: a generator predict on its model thread, its chunks on the wire.

A model thread runs the generator (``pump``) and hands chunks through a bounded
``Channel``; the event loop learns that predict streams from a ``StreamStart`` and sends
the chunks as they come (``send_stream``), framed by ``codec``. A slow client slows the
generator instead of growing memory, and a client that leaves stops it. An SSE stream
numbers its events (``id:``) and sends a ``: ping`` comment after ``heartbeat`` seconds
without a chunk, so that proxies do not close it; ``StreamOptions`` says how, once per
server.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

from . import codec
from .error_map import error_answer
from .errors import ServingError
from .request import Request, Send

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


@dataclass(frozen=True)
class StreamOptions:
    """How a server sends its streams: the SSE heartbeat and what it measures.

    Attributes:
        heartbeat: Seconds without a chunk after which an SSE stream sends ``: ping``
            (0: never). NDJSON, text and binary streams never get one: a comment would
            change their content.
        on_first_chunk: Called with the seconds from the request's arrival to its first
            chunk on the wire.
        on_end: Called with the number of chunks a stream sent, once it ends (finished,
            failed or left by the client).
    """

    heartbeat: float = 15.0
    on_first_chunk: Callable[[float], object] | None = None
    on_end: Callable[[int], object] | None = None


DEFAULT_OPTIONS = StreamOptions()


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
    send: Send,
    request: Request,
    start: StreamStart,
    out: Responder,
    details: bool,
    options: StreamOptions = DEFAULT_OPTIONS,
) -> int:
    """Send a stream's chunks as the model thread produces them; stop when the client leaves.

    The status goes out with the first chunk, so that a generator failing before it gets
    an ordinary error answer; an SSE stream that has had nothing to send for
    ``options.heartbeat`` seconds sends its status then, and a ``: ping``.
    """
    channel, event = start.channel, start.event
    sse = codec.wants_sse(request.accept)
    watcher = asyncio.ensure_future(_watch_disconnect(request, channel, event))
    beat = _Heartbeat(options.heartbeat, event) if sse and options.heartbeat > 0 else None
    wire = _Wire(send, request, out, sse, options)
    try:
        while True:
            finished = channel.finished
            items = channel.take()
            if not wire.started and (items or finished):
                if not items and channel.error is not None:
                    raise channel.error  # nothing sent yet: an ordinary error answer
                await wire.begin(items[0] if items else "")
            if items:
                await wire.chunks(items)
                if beat is not None:
                    beat.chunk_sent()
            if finished or channel.is_closed:
                break
            if beat is not None and beat.due:
                await wire.ping()
                beat.chunk_sent()  # the next ping is due a whole interval after this one
            await event.wait()
            event.clear()
        return await wire.end(channel.error, details)
    finally:
        channel.close()
        watcher.cancel()
        if beat is not None:
            beat.cancel()
        if options.on_end is not None:
            options.on_end(wire.sent)


class _Wire:
    """One stream's side of the connection: its status, its numbered chunks, its pings, its end."""

    def __init__(
        self, send: Send, request: Request, out: Responder, sse: bool, options: StreamOptions
    ) -> None:
        self._send = send
        self._request = request
        self._out = out
        self._on_first_chunk = options.on_first_chunk
        self.sse = sse
        self.started = False
        self.content_type = codec.SSE_TYPE if sse else ""
        self.sent = 0  # chunks on the wire; an SSE event's id is its number, from 1

    async def begin(self, first: Any) -> None:
        """Send the status and headers; the content type follows the first chunk."""
        self.content_type = codec.stream_content_type(first, self.sse)
        await self._send(self._out.start(self._request, 200, self.content_type, None, True))
        self.started = True

    async def chunks(self, items: list[Any]) -> None:
        """Frame and send chunks (numbered events for SSE)."""
        first = self.sent == 0
        send, sse = self._send, self.sse
        for item in items:
            self.sent += 1
            body = codec.frame_chunk(item, sse, self.sent if sse else None)
            await send({"type": "http.response.body", "body": body, "more_body": True})
        if first and self._on_first_chunk is not None:
            self._on_first_chunk(time.monotonic() - _arrival(self._request))

    async def ping(self) -> None:
        """Send an SSE comment (after the status, when it has not gone out yet)."""
        if not self.started:
            await self.begin("")
        await self.body(codec.SSE_PING)

    async def body(self, data: bytes) -> None:
        """Send bytes of the stream's body."""
        await self._send({"type": "http.response.body", "body": data, "more_body": True})

    async def end(self, error: BaseException | None, details: bool) -> int:
        """End the body; after a generator's error, with its last chunk when the framing has one.

        Returns:
            The status to log: 200, or 500 when the stream failed (the body was cut short).
        """
        if error is not None:
            tail = _error_tail(error, self._request, self, details)
            if tail is None:
                return 500  # no final chunk: the client sees a truncated body
            await self.body(tail)
        await self._send({"type": "http.response.body", "body": b"", "more_body": False})
        return 200


class _Heartbeat:
    """Wakes an SSE stream's sending loop once it has sent nothing for ``interval`` seconds.

    One timer per interval, never one per chunk: a chunk only records the time, and a
    timer that fires less than ``interval`` after the last chunk sleeps again until then.
    """

    def __init__(self, interval: float, event: asyncio.Event) -> None:
        self._loop = asyncio.get_running_loop()
        self._interval = interval
        self._event = event
        self._last = self._loop.time()
        self.due = False  # a ping is owed; the sending loop clears it
        self._timer = self._loop.call_at(self._last + interval, self._fire)

    def chunk_sent(self) -> None:
        """A chunk or a ping went out: the next ping is due ``interval`` from now.

        Counting pings too keeps them ``interval`` apart when the loop ran one late.
        """
        self._last = self._loop.time()
        self.due = False

    def cancel(self) -> None:
        """Stop the timer (the stream ended)."""
        self._timer.cancel()

    def _fire(self) -> None:
        now = self._loop.time()
        due_at = self._last + self._interval
        if now < due_at - _TIMER_SLACK:  # a chunk went out since this timer was set
            self._timer = self._loop.call_at(due_at, self._fire)
            return
        self.due = True
        self._event.set()
        self._timer = self._loop.call_at(now + self._interval, self._fire)


_TIMER_SLACK = 0.001  # the loop may run a timer a little before its due time


def _arrival(request: Request) -> float:
    """When the request arrived (``time.monotonic``): its deadline less its timeout."""
    return request.deadline - request.timeout


def _error_tail(error: BaseException, request: Request, wire: _Wire, details: bool) -> bytes | None:
    """The last chunk of a stream whose generator raised, in the stream's own framing."""
    logger.error("stream ended by %s", type(error).__name__, exc_info=error)
    answer = error_answer(error, request.request_id, details)
    message = answer.message
    if details and not isinstance(error, ServingError):
        message = str(error) or message
    if wire.sse:
        return codec.sse_error(message, wire.sent + 1)
    if wire.content_type == codec.NDJSON_TYPE:
        return codec.encode_json({"error": message}) + b"\n"
    return None


async def _watch_disconnect(request: Request, channel: Channel, event: asyncio.Event) -> None:
    """Close the channel when the client leaves; set ``cancelled`` too, when asked for.

    A generator waiting between chunks (``cancelled.wait``) then stops at once.
    """
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            if request.cancelled is not None and not channel.finished:
                request.cancelled.cancel(request.cancelled.DISCONNECT)
            channel.close()
            event.set()
            return
