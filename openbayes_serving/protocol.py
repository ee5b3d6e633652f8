"""uvicorn's httptools protocol, bounded: every connection ends in bounded time.

uvicorn bounds the idle time between requests (keep-alive) but neither the time a request's
head takes to arrive nor its size: a client that sends its headers a byte at a time holds
its connection forever, and one that sends a header of a gigabyte has it buffered in
memory. Here a head must be complete within ``request_timeout`` of its first byte (408;
the body has the same bound, in the app) and within ``MAX_HEAD_BYTES`` (431); a connection
that sends nothing at all is closed after the keep-alive time. A head that arrives in one
read, as nearly every head does, costs no timer. uvicorn's own answer to a malformed
request (a plain-text 400) becomes a JSON one.

An answer sent before the request's body has arrived in full (a 401, a 413, a 503 from
the head, a route that reads no body) says ``connection: close`` and closes: the rest of
that body would otherwise hold the connection with no deadline. Every close that may leave
unread bytes lingers (the answer goes out with a FIN, and what still comes is read and
dropped for ``LINGER_SECONDS``), so that the kernel does not reset the connection before
the client reads its answer. An upgrade request (WebSocket, h2c) is answered as plain
HTTP/1.1 and closed. While the server drains, a request already on its way on an idle
connection is still answered, with ``connection: close``, and when the drain runs out of
time every request still running is answered 503 (``cut_short``).

Each request's cycle (``cycle``) writes a whole answer at once and takes a body that has
all come without waiting.

Imported in the worker only (the master never serves a request).
"""

from __future__ import annotations

import asyncio
from http import HTTPStatus
from typing import cast

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from . import codec
from .cycle import RequestCycle
from .error_map import error_answer
from .errors import (
    BadRequestError,
    HeadTooLargeError,
    OverloadedError,
    RequestTimeoutError,
    ServingError,
)

MAX_HEAD_BYTES = 64 * 1024  # request line and headers; nginx allows 32 KiB by default
LINGER_SECONDS = 2.0  # how long a closing connection's further bytes are read and dropped
LINGER_MAX_BYTES = 64 * 1024 * 1024  # past this many dropped bytes the close is immediate
DRAIN_IDLE_SECONDS = 1.0  # how long an idle connection may still bring a request when draining

_TOO_LARGE = f"the request line and headers are larger than {MAX_HEAD_BYTES} bytes"


class _HeadRefused(Exception):
    """Raised from a parser callback to stop parsing a head that is too large."""


class BoundedHeadProtocol(HttpToolsProtocol):  # type: ignore[misc,unused-ignore]
    """Bounds every connection in time and every head in size; errors are JSON."""

    head_timeout = 60.0  # set per server by ``with_head_timeout``

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        """A new connection: closed after the keep-alive time if it sends nothing."""
        self._in_head = False
        self._head_read = 0  # bytes read while the head was unfinished (an upper bound)
        self._big_read = False  # the read being parsed could hold a whole head too large
        self._refused = False
        self.lingering = False
        self._dropped = 0  # bytes read and dropped while lingering
        self._draining = False
        self._head_timer: asyncio.TimerHandle | None = None
        self._idle_since: float | None = None  # loop time the connection went idle; None: busy
        self._idle_timer: asyncio.TimerHandle | None = None
        self._idle_seconds: float = self.timeout_keep_alive  # keep-alive; the drain shortens it
        super().connection_made(transport)
        # Until the first byte, a new connection is as idle as a kept-alive one.
        self._idle()

    def on_message_begin(self) -> None:
        """A request's first byte: its head is now being read."""
        self._in_head = True
        self._head_read = 0
        super().on_message_begin()

    def on_headers_complete(self) -> None:
        """The head is complete: the app takes over (the body has its own bound)."""
        self._in_head = False
        # Measured exactly when it came in several reads or in one large one (rarely).
        measure = self._big_read or self._head_read
        if measure and _head_size(self.url, self.headers) > MAX_HEAD_BYTES:
            self._refused = True
            raise _HeadRefused  # the parser stops; uvicorn calls send_400_response
        super().on_headers_complete()
        cycle = self.cycle
        if cycle is None or cycle.scope is not self.scope:
            return  # uvicorn took the request elsewhere (an upgrade it speaks)
        cycle.__class__ = RequestCycle
        cast(RequestCycle, cycle).protocol = self
        if self._draining or self.parser.should_upgrade():
            # Draining: this is the connection's last request. An upgrade: the parser
            # reads nothing after this request, so the connection cannot carry another.
            cycle.keep_alive = False

    def data_received(self, data: bytes) -> None:
        """Parse, then start or stop the head's deadline and check its size so far."""
        if self.lingering:
            self._dropped += len(data)
            if self._dropped > LINGER_MAX_BYTES:
                self.transport.close()
            return  # answered and closing: what still comes is dropped
        # A head that ends within one read is measured when it ends, and only if the read
        # could hold one too large or the head began in an earlier read (rare either way).
        self._big_read = len(data) > MAX_HEAD_BYTES
        super().data_received(data)
        if self._in_head and not self.lingering:
            # The parser holds an unfinished header until it ends: count what it holds
            # (every byte of this read, when the head is still not complete after it).
            self._head_read += len(data)
            if self._head_read > MAX_HEAD_BYTES:
                self._in_head = False
                self._refuse(HeadTooLargeError(_TOO_LARGE))
                return
            if self._head_timer is None:  # from the head's first byte, never extended
                self._head_timer = self.loop.call_later(self.head_timeout, self._head_expired)
        elif self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def connection_lost(self, exc: Exception | None) -> None:
        """The connection closed: no deadline left to keep."""
        for timer in (self._head_timer, self._idle_timer):
            if timer is not None:
                timer.cancel()
        self._head_timer = self._idle_timer = None
        super().connection_lost(exc)

    def on_response_complete(self) -> None:
        """An answer went out: the next request may start, unless the connection closes."""
        self.server_state.total_requests += 1
        if self.lingering or self.transport.is_closing():
            return
        self.flow.resume_reading()
        if self.pipeline:
            cycle, app = self.pipeline.pop()
            self._start_asgi_task(cycle, app)
        else:
            self._idle()

    def _idle(self) -> None:
        """Idle from now: closed unless a request begins within the keep-alive time.

        uvicorn arms a loop timer after every answer and cancels it as the next request
        begins; here the connection notes when it went idle, and one timer, armed while
        none is, reads the note when it fires (``_idle_check``).
        """
        self._idle_since = now = self.loop.time()
        if self._idle_timer is None:
            self._idle_timer = self.loop.call_at(now + self._idle_seconds, self._idle_check)

    def _unset_keepalive_if_required(self) -> None:
        """Busy (uvicorn calls this when bytes come): no keep-alive deadline now."""
        self._idle_since = None

    def _idle_check(self) -> None:
        self._idle_timer = None
        since = self._idle_since
        if since is None:
            return  # busy: the timer is armed again when the connection goes idle
        due = since + self._idle_seconds
        if due <= self.loop.time():
            self.timeout_keep_alive_handler()
        else:
            self._idle_timer = self.loop.call_at(due, self._idle_check)

    def send_400_response(self, msg: str) -> None:
        """The answer to a request the parser refused: JSON, like every other error."""
        if self._refused:
            self._refuse(HeadTooLargeError(_TOO_LARGE))
        else:
            self._refuse(BadRequestError("invalid HTTP request"))

    def _unsupported_upgrade_warning(self) -> None:
        # An upgrade this server does not speak is answered as plain HTTP/1.1 (RFC 9110
        # 7.8): nothing to warn about, and a client must not be able to flood the log.
        pass

    def shutdown(self) -> None:
        """The server drains: finish the request in progress, then close.

        An idle connection stays open for ``DRAIN_IDLE_SECONDS`` and a request that comes
        on it is answered with ``connection: close``: a client that sent it just as the
        drain began gets its answer instead of a closed connection.
        """
        self._draining = True
        if self.lingering:
            return
        if self.cycle is not None and not self.cycle.response_complete:
            self.cycle.keep_alive = False
        elif not self._in_head:
            self._idle_seconds = DRAIN_IDLE_SECONDS
            if self._idle_timer is not None:
                self._idle_timer.cancel()
                self._idle_timer = None
            self._idle()

    def cut_short(self, message: str) -> None:
        """The drain ran out of time: answer the request in progress 503 and close.

        An answer already under way (a stream) cannot change its status: it is cut off.
        """
        cycle = self.cycle
        if cycle is None or cycle.response_complete or self.lingering:
            self.transport.close()
        else:
            self._refuse(OverloadedError(message), linger=False)

    def linger(self) -> None:
        """Close after the answer: send a FIN now, drop what still comes, close later."""
        if self.lingering or self.transport.is_closing():
            return
        self.lingering = True
        self._unset_keepalive_if_required()
        self.pipeline.clear()  # requests read behind this one are never answered
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self.loop.call_later(LINGER_SECONDS, self.transport.close)

    def _head_expired(self) -> None:
        self._head_timer = None
        if self.transport.is_closing() or not self._in_head:
            return
        if self.cycle is not None and not self.cycle.response_complete:
            # A pipelined head behind a response still being written: answer after it.
            self._head_timer = self.loop.call_later(1.0, self._head_expired)
            return
        message = f"the request head did not arrive within {self.head_timeout:g}s"
        self._refuse(RequestTimeoutError(message))

    def _refuse(self, error: ServingError, linger: bool = True) -> None:
        """Answer ``error`` (as ``error_map`` says) and close the connection, lingering."""
        if self.transport.is_closing() or self.lingering:
            return
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete:
            cycle.disconnected = True  # the app's answer, if it still sends one, is dropped
            cycle.message_event.set()
            if cycle.response_started:  # half an answer is out: no status can follow it
                self.transport.close()
                return
        self.transport.write(_closing_answer(error))
        if linger:
            self.linger()
        else:  # nothing left unread (the server is leaving): close once the answer is out
            self.transport.close()


def _head_size(url: bytes, headers: list[tuple[bytes, bytes]]) -> int:
    """The size of a head just parsed: request target and headers."""
    return len(url) + sum(len(name) + len(value) + 4 for name, value in headers)


def _closing_answer(error: ServingError) -> bytes:
    """The whole answer to ``error`` (as ``error_map`` says), saying ``connection: close``."""
    answer = error_answer(error)
    body = codec.encode_json(answer.body)
    extra = b"".join(b"%s: %s\r\n" % (name, value) for name, value in answer.headers)
    return (
        b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\n"
        b"content-length: %d\r\n%sconnection: close\r\n\r\n%s"
        % (
            answer.status,
            HTTPStatus(answer.status).phrase.encode(),
            len(body),
            extra,
            body,
        )
    )


def with_head_timeout(seconds: float) -> type[BoundedHeadProtocol]:
    """The protocol class for a server whose request heads must arrive within ``seconds``."""
    return type("BoundedHeadProtocol", (BoundedHeadProtocol,), {"head_timeout": seconds})
