"""Fake peers for the client and page tests: stdlib HTTP servers on 127.0.0.1."""

from __future__ import annotations

import contextlib
import struct
import sys
import threading
import uuid
import zlib
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, TypeVar

FAKE_WAIT = 5.0  # seconds any handshake between a test and a fake server may take


class FakeServer(ThreadingHTTPServer):
    """A stdlib HTTP server on 127.0.0.1 standing in for a peer; keeps handler errors.

    ``gate`` holds a stream open after its first chunk until the test sets it;
    ``gate_opened_in_time`` says whether it was set within ``FAKE_WAIT``.
    """

    daemon_threads = True

    def __init__(self, handler: type[BaseHTTPRequestHandler]) -> None:
        super().__init__(("127.0.0.1", 0), handler)
        self.errors: list[BaseException] = []
        self.gate = threading.Event()
        self.gate_opened_in_time: bool | None = None

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Keep what a handler raised, for the fixture to report; a client that left is fine."""
        error = sys.exc_info()[1]
        if error is not None and not isinstance(error, ConnectionError):
            self.errors.append(error)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host!s}:{port}"


S = TypeVar("S", bound=FakeServer)


@contextlib.contextmanager
def running(server: S) -> Iterator[S]:
    """Serve ``server`` on a thread; stop it after, and fail on what its handlers raised."""
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield server
    finally:
        server.gate.set()
        server.shutdown()
        server.server_close()
        thread.join(FAKE_WAIT)
    assert server.errors == []


class FakeHandler(BaseHTTPRequestHandler):
    """Base of the fake servers' handlers: keep-alive HTTP/1.1, quiet, answer helpers."""

    protocol_version = "HTTP/1.1"
    timeout = 10  # an idle keep-alive connection closes by itself

    def log_message(self, fmt: str, *args: Any) -> None:
        """Keep test output quiet."""

    def new_request_id(self) -> str:
        """The X-Request-Id of the next answer."""
        return uuid.uuid4().hex

    def start_answer(self, status: int, kind: str, extra: dict[str, str]) -> None:
        """Status line and headers, with a request id as the runtime sends."""
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("X-Request-Id", self.new_request_id())
        for name, value in extra.items():
            self.send_header(name, value)
        self.end_headers()

    def answer(
        self, status: int, kind: str, body: bytes, extra: dict[str, str] | None = None
    ) -> None:
        """A whole answer with a Content-Length."""
        self.start_answer(status, kind, {"Content-Length": str(len(body)), **(extra or {})})
        self.wfile.write(body)

    def send_chunk(self, data: bytes) -> None:
        """One chunk of a chunked answer, sent at once."""
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()


def png_bytes(width: int = 3, height: int = 2) -> bytes:
    """A valid RGB PNG, built without Pillow."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    rows = b"".join(b"\x00" + b"\x20\x90\xff" * width for _ in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )
