"""One request on a connection of the bounded protocol: its body in, its answer out.

uvicorn's request cycle writes an answer's head and body apart: two system calls and, on
loopback, two trips through TCP. This one writes a whole answer (a Content-Length and one
body) at once: held from its start message to its body, or given as bytes by the app
(``write_answer``). A body that has all come is taken without waiting (``take_body``).
An answer that starts before the request's body is in says ``connection: close``, and
the close lingers (``protocol``).

Imported in the worker only (the master never serves a request).
"""

from __future__ import annotations

import asyncio
from typing import Any, Protocol, cast

from uvicorn.protocols.http.httptools_impl import (
    HEADER_RE,
    HEADER_VALUE_RE,
    STATUS_LINE,
    RequestResponseCycle,
)


class Connection(Protocol):
    """What a cycle needs of its connection (``protocol.BoundedHeadProtocol``)."""

    lingering: bool  # answered, and closing: what still comes is dropped

    def linger(self) -> None:
        """Close after the answer, reading and dropping what still comes for a while."""


class RequestCycle(RequestResponseCycle):  # type: ignore[misc,unused-ignore]
    """uvicorn's request cycle: a whole answer in one write; a close if the body was unread.

    The protocol turns uvicorn's cycle into this class as each request's head completes.
    """

    protocol: Connection
    held: Any = None  # an answer's start message, written with its body

    async def send(self, message: Any) -> None:
        """Send an ASGI message; an answer that starts before the body is in says close."""
        start = self.held
        if start is not None:
            self.held = None
            if not message.get("more_body", False) and await self._send_whole(start, message):
                return
            self.response_started = False  # the start goes out the usual way after all
            await super().send(start)
        elif self.protocol.lingering:
            self.disconnected = True  # the connection was answered already, and is closing
        elif not self.response_started and not self.disconnected:
            if self.more_body:
                # The parser has not reached the body's end: whatever is left of it cannot
                # be told from the next request without reading it, which nobody will do.
                self.keep_alive = False
                self.transport = cast(
                    asyncio.Transport, LingeringClose(self.transport, self.protocol)
                )
            if message["type"] == "http.response.start" and not self.access_log:
                self.held = message  # until the body: head and body may go in one write
                self.response_started = True
                return
        await super().send(message)

    def take_body(self) -> bytes | None:
        """The request's whole body, when it has all come and is still unread; else None.

        What ``receive()`` would give at once, without its message; None (``receive()``
        then) when the body is still coming, was read, or waits for ``100 Continue``.
        """
        if (
            self.more_body
            or self.disconnected
            or self.response_complete
            or self.waiting_for_100_continue
            or not self.message_event.is_set()
        ):
            return None
        self.message_event.clear()
        self.flow.resume_reading()
        body = bytes(self.body)
        self.body = bytearray()
        return body

    def write_answer(self, status: int, lines: bytes, body: bytes) -> bool:
        """Write a whole answer at once, without its ASGI messages; False if it cannot be.

        ``lines`` are the answer's header lines (each ending in CRLF, Content-Length
        among them), already checked by the caller: the cycle adds the status line and
        uvicorn's default headers (``date``). False, and nothing written, when uvicorn's
        own ``send`` must answer (HEAD, an access log, a connection paused or lingering):
        the caller then sends the ASGI messages.
        """
        if (
            self.response_started
            or self.disconnected
            or self.flow.write_paused
            or self.access_log
            or self.protocol.lingering
            or self.scope["method"] == "HEAD"
        ):
            return False
        if self.more_body:  # as in send: the unread rest of the body ends the connection
            self.keep_alive = False
            self.transport = cast(asyncio.Transport, LingeringClose(self.transport, self.protocol))
        self.response_started = True
        self._complete(STATUS_LINE[status] + _default_lines(self.default_headers) + lines, body)
        return True

    async def _send_whole(self, start: dict[str, Any], message: dict[str, Any]) -> bool:
        """Write a whole answer, head and body, at once; False when uvicorn must send it.

        uvicorn sends an answer it would frame otherwise (no or a wrong Content-Length, a
        ``connection`` or ``transfer-encoding`` header, HEAD) or refuse (a bad header).
        """
        if message["type"] != "http.response.body" or self.scope["method"] == "HEAD":
            return False
        body = message.get("body", b"")
        headers = [*self.default_headers, *start.get("headers", ())]
        names = b"".join([name for name, _ in headers])
        if HEADER_RE.search(names) or not names.islower():
            return False
        if HEADER_VALUE_RE.search(b"".join([value for _, value in headers])):
            return False
        length = b""
        for name, value in headers:
            if name == b"content-length" and not length:
                length = value
            elif name == b"connection" or name == b"transfer-encoding":
                return False
        if length != b"%d" % len(body):
            return False
        if self.flow.write_paused and not self.disconnected:
            await self.flow.drain()
        if self.disconnected:
            return True
        lines = [b"%s: %s\r\n" % header for header in headers]
        self._complete(b"".join([STATUS_LINE[start["status"]], *lines]), body)
        return True

    def _complete(self, head: bytes, body: bytes) -> None:
        """Write the answer (``head``: status line and header lines) and end the cycle."""
        close = b"" if self.keep_alive else b"connection: close\r\n"
        self.transport.write(b"".join([head, close, b"\r\n", body]))
        self.response_complete = True
        self.message_event.set()
        if not self.keep_alive:
            self.transport.close()
        self.on_response()


_DEFAULTS: list[Any] = [None, b""]  # uvicorn's default headers (a new list each second), as lines


def _default_lines(headers: list[tuple[bytes, bytes]]) -> bytes:
    """The default headers uvicorn adds (``date``, made each second) as header lines."""
    if headers is not _DEFAULTS[0]:
        _DEFAULTS[:] = [headers, b"".join([b"%s: %s\r\n" % header for header in headers])]
    return _DEFAULTS[1]


class LingeringClose:
    """A transport whose ``close`` lingers (``BoundedHeadProtocol.linger``)."""

    def __init__(self, transport: asyncio.Transport, protocol: Connection) -> None:
        self._transport = transport
        self._protocol = protocol

    def write(self, data: bytes) -> None:
        """Write to the connection."""
        self._transport.write(data)

    def is_closing(self) -> bool:
        """True once the connection is closing."""
        return self._transport.is_closing() or self._protocol.lingering

    def close(self) -> None:
        """Close after a linger rather than at once."""
        self._protocol.linger()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)
