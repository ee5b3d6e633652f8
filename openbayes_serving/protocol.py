"""uvicorn's httptools protocol with a deadline for every request's head.

uvicorn bounds the idle time between requests (keep-alive) but not the time a request's
head takes to arrive: a client that connects and sends its headers a byte at a time holds
its connection forever, and enough of them use up the worker's file descriptors. Here a
head must be complete within ``request_timeout`` of its first byte (the body has the same
bound, in the app); a connection that sends nothing at all is closed after the keep-alive
time. A head that arrives in one read, as nearly every head does, costs no timer.

Imported in the worker only (the master never serves a request).
"""

from __future__ import annotations

import asyncio

import orjson
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol


class HeadTimeoutProtocol(HttpToolsProtocol):  # type: ignore[misc,unused-ignore]
    """Answers 408 (JSON, then closes) to a request head that arrives too slowly."""

    head_timeout = 60.0  # set per server by ``with_head_timeout``

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        """A new connection: closed after the keep-alive time if it sends nothing."""
        self._in_head = False
        self._head_timer: asyncio.TimerHandle | None = None
        super().connection_made(transport)
        # Until the first byte, a new connection is as idle as a kept-alive one.
        self.timeout_keep_alive_task = self.loop.call_later(
            self.timeout_keep_alive, self.timeout_keep_alive_handler
        )

    def on_message_begin(self) -> None:
        """A request's first byte: its head is now being read."""
        self._in_head = True
        super().on_message_begin()

    def on_headers_complete(self) -> None:
        """The head is complete: the app takes over (the body has its own bound)."""
        self._in_head = False
        super().on_headers_complete()

    def data_received(self, data: bytes) -> None:
        """Parse, then start or stop the head's deadline."""
        super().data_received(data)
        if self._in_head:
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

    def _head_expired(self) -> None:
        self._head_timer = None
        if self.transport.is_closing() or not self._in_head:
            return
        if self.cycle is not None and not self.cycle.response_complete:
            # A pipelined head behind a response still being written: answer after it.
            self._head_timer = self.loop.call_later(1.0, self._head_expired)
            return
        body = orjson.dumps(
            {"error": f"the request head did not arrive within {self.head_timeout:g}s"}
        )
        self.transport.write(
            b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\n"
            b"content-length: %d\r\nconnection: close\r\n\r\n%s" % (len(body), body)
        )
        self.transport.close()


def with_head_timeout(seconds: float) -> type[HeadTimeoutProtocol]:
    """The protocol class for a server whose request heads must arrive within ``seconds``."""
    return type("HeadTimeoutProtocol", (HeadTimeoutProtocol,), {"head_timeout": seconds})
