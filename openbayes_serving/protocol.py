"""uvicorn's httptools protocol with a deadline and a size limit for every request's head.

uvicorn bounds the idle time between requests (keep-alive) but neither the time a request's
head takes to arrive nor its size: a client that sends its headers a byte at a time holds
its connection forever, and one that sends a header of a gigabyte has it buffered in
memory. Here a head must be complete within ``request_timeout`` of its first byte (408;
the body has the same bound, in the app) and within ``MAX_HEAD_BYTES`` (431); a connection
that sends nothing at all is closed after the keep-alive time. A head that arrives in one
read, as nearly every head does, costs no timer. uvicorn's own answer to a malformed
request (a plain-text 400) becomes a JSON one.

Imported in the worker only (the master never serves a request).
"""

from __future__ import annotations

import asyncio
from http import HTTPStatus

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from . import codec
from .error_map import error_answer
from .errors import BadRequestError, HeadTooLargeError, RequestTimeoutError, ServingError

MAX_HEAD_BYTES = 64 * 1024  # request line and headers; nginx allows 32 KiB by default
LINGER_SECONDS = 2.0  # how long a refused client's further bytes are read and dropped

_TOO_LARGE = f"the request line and headers are larger than {MAX_HEAD_BYTES} bytes"


class _HeadRefused(Exception):
    """Raised from a parser callback to stop parsing a head that is too large."""


class BoundedHeadProtocol(HttpToolsProtocol):  # type: ignore[misc,unused-ignore]
    """Answers 408 to a head that arrives too slowly, 431 to one too large (JSON)."""

    head_timeout = 60.0  # set per server by ``with_head_timeout``

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        """A new connection: closed after the keep-alive time if it sends nothing."""
        self._in_head = False
        self._head_read = 0  # bytes read while the head was unfinished (an upper bound)
        self._big_read = False  # the read being parsed could hold a whole head too large
        self._refused = False
        self._lingering = False
        self._head_timer: asyncio.TimerHandle | None = None
        super().connection_made(transport)
        # Until the first byte, a new connection is as idle as a kept-alive one.
        self.timeout_keep_alive_task = self.loop.call_later(
            self.timeout_keep_alive, self.timeout_keep_alive_handler
        )

    def on_message_begin(self) -> None:
        """A request's first byte: its head is now being read."""
        self._in_head = True
        self._head_read = 0
        super().on_message_begin()

    def on_headers_complete(self) -> None:
        """The head is complete: the app takes over (the body has its own bound)."""
        self._in_head = False
        # Measured exactly when it came in several reads or in one large one (rarely).
        if (self._big_read or self._head_read) and self._head_size() > MAX_HEAD_BYTES:
            self._refused = True
            raise _HeadRefused  # the parser stops; uvicorn calls send_400_response
        super().on_headers_complete()

    def data_received(self, data: bytes) -> None:
        """Parse, then start or stop the head's deadline and check its size so far."""
        if self._lingering:
            return  # answered and closing: what still comes is dropped
        # A head that ends within one read is measured when it ends, and only if the read
        # could hold one too large or the head began in an earlier read (rare either way).
        self._big_read = len(data) > MAX_HEAD_BYTES
        super().data_received(data)
        if self._in_head and not self._lingering:
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
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
        super().connection_lost(exc)

    def send_400_response(self, msg: str) -> None:
        """The answer to a request the parser refused: JSON, like every other error."""
        if self._refused:
            self._refuse(HeadTooLargeError(_TOO_LARGE))
        else:
            self._refuse(BadRequestError("invalid HTTP request"))

    def _head_size(self) -> int:
        """The size of the head just parsed: request target and headers."""
        return len(self.url) + sum(len(name) + len(value) + 4 for name, value in self.headers)

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

    def _refuse(self, error: ServingError) -> None:
        """Answer ``error`` (as ``error_map`` says) and close the connection.

        The close lingers: the answer goes out with a FIN, and whatever the client is
        still sending is read and dropped for a moment. Closing at once with unread bytes
        would make the kernel reset the connection, and a reset can destroy the answer
        before the client reads it.
        """
        if self.transport.is_closing() or self._lingering:
            return
        answer = error_answer(error)
        body = codec.encode_json(answer.body)
        self.transport.write(
            b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\n"
            b"content-length: %d\r\nconnection: close\r\n\r\n%s"
            % (answer.status, HTTPStatus(answer.status).phrase.encode(), len(body), body)
        )
        self._lingering = True
        self._unset_keepalive_if_required()
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self.loop.call_later(LINGER_SECONDS, self.transport.close)


def with_head_timeout(seconds: float) -> type[BoundedHeadProtocol]:
    """The protocol class for a server whose request heads must arrive within ``seconds``."""
    return type("BoundedHeadProtocol", (BoundedHeadProtocol,), {"head_timeout": seconds})
