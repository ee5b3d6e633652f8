"""The bounded-head protocol in-process: bytes fed to a mock transport, as uvicorn tests it."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from uvicorn.config import Config
from uvicorn.server import ServerState

from openbayes_serving.protocol import (
    DRAIN_IDLE_SECONDS,
    LINGER_SECONDS,
    MAX_HEAD_BYTES,
    BoundedHeadProtocol,
    with_head_timeout,
)


class MockTransport:
    """Collects what the protocol writes; says whether it closed."""

    def __init__(self) -> None:
        self.buffer = b""
        self.closed = False
        self.eof = False

    def get_extra_info(self, name: str) -> Any:
        return {"sockname": ("127.0.0.1", 8000), "peername": ("127.0.0.1", 9000)}.get(name)

    def write(self, data: bytes) -> None:
        self.buffer += data

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        self.eof = True

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def set_protocol(self, protocol: Any) -> None:
        pass


async def hello(scope: dict[str, Any], receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"hello"})


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


def connect(
    loop: asyncio.AbstractEventLoop, head_timeout: float = 60.0, keepalive: float = 5.0
) -> tuple[BoundedHeadProtocol, MockTransport]:
    config = Config(
        app=hello,
        lifespan="off",
        timeout_keep_alive=keepalive,  # type: ignore[arg-type]
        access_log=False,
        ws="none",  # as the server's worker configures it
    )
    config.load()
    protocol = with_head_timeout(head_timeout)(config, ServerState(), {}, _loop=loop)
    transport = MockTransport()
    protocol.connection_made(transport)  # type: ignore[arg-type]
    return protocol, transport


def answer(transport: MockTransport) -> tuple[int, dict[str, Any]]:
    head, _, body = transport.buffer.partition(b"\r\n\r\n")
    return int(head.split(b" ")[1]), orjson.loads(body)


def test_a_head_in_one_read_is_served(loop):
    protocol, transport = connect(loop)
    protocol.data_received(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    loop.run_until_complete(asyncio.sleep(0.01))
    assert transport.buffer.startswith(b"HTTP/1.1 200 OK")
    assert b"hello" in transport.buffer


def test_a_head_that_trickles_past_its_deadline_gets_408_json_and_a_close(loop):
    protocol, transport = connect(loop, head_timeout=0.05)
    protocol.data_received(b"GET / HTTP/1.1\r\n")
    protocol.data_received(b"Host: x\r\n")
    loop.run_until_complete(asyncio.sleep(0.15))
    status, body = answer(transport)
    assert status == 408
    assert "did not arrive within 0.05s" in body["error"]
    assert transport.eof


def test_a_head_too_large_across_reads_gets_431_json(loop):
    protocol, transport = connect(loop)
    protocol.data_received(b"GET / HTTP/1.1\r\nX-Big: ")
    for _ in range(MAX_HEAD_BYTES // 4096 + 1):
        protocol.data_received(b"a" * 4096)
    status, body = answer(transport)
    assert status == 431
    assert str(MAX_HEAD_BYTES) in body["error"]


def test_a_head_too_large_in_one_read_gets_431_json(loop):
    protocol, transport = connect(loop)
    protocol.data_received(b"GET / HTTP/1.1\r\nX-Big: " + b"a" * (MAX_HEAD_BYTES + 1) + b"\r\n\r\n")
    assert answer(transport)[0] == 431


def test_a_malformed_request_gets_400_json(loop):
    protocol, transport = connect(loop)
    protocol.data_received(b"NOT HTTP AT ALL\r\n\r\n")
    assert answer(transport) == (400, {"error": "invalid HTTP request"})


def test_a_connection_that_sends_nothing_closes_after_keepalive(loop):
    protocol, transport = connect(loop, keepalive=0.05)
    loop.run_until_complete(asyncio.sleep(0.15))
    assert transport.closed
    assert transport.buffer == b""


def head_of(transport: MockTransport) -> bytes:
    return transport.buffer.partition(b"\r\n\r\n")[0].lower()


def test_an_answer_before_the_body_arrived_says_close_and_lingers_then_closes(loop):
    protocol, transport = connect(loop)
    # hello never reads the body, of which one byte of 100 has come.
    protocol.data_received(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nx")
    loop.run_until_complete(asyncio.sleep(0.01))
    assert transport.buffer.startswith(b"HTTP/1.1 200 OK")
    assert b"connection: close" in head_of(transport)
    assert transport.eof  # the answer went out with a FIN
    assert not transport.closed
    protocol.data_received(b"y" * 99 + b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")  # dropped
    assert transport.buffer.count(b"HTTP/1.1") == 1
    loop.run_until_complete(asyncio.sleep(LINGER_SECONDS + 0.1))
    assert transport.closed


def test_a_body_that_arrived_whole_but_unread_keeps_the_connection(loop):
    protocol, transport = connect(loop)
    protocol.data_received(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}")
    loop.run_until_complete(asyncio.sleep(0.01))
    assert b"connection: close" not in head_of(transport)
    protocol.data_received(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    loop.run_until_complete(asyncio.sleep(0.01))
    assert transport.buffer.count(b"HTTP/1.1 200 OK") == 2
    assert not transport.eof
    assert not transport.closed


def test_an_upgrade_request_is_answered_as_http_and_closed(loop):
    protocol, transport = connect(loop)
    protocol.data_received(
        b"GET / HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    loop.run_until_complete(asyncio.sleep(0.01))
    assert transport.buffer.startswith(b"HTTP/1.1 200 OK")
    assert b"connection: close" in head_of(transport)
    assert transport.closed


def test_an_idle_connection_still_gets_an_answer_for_a_request_sent_as_the_drain_began(loop):
    protocol, transport = connect(loop)
    protocol.shutdown()  # the server drains
    assert not transport.closed
    protocol.data_received(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    loop.run_until_complete(asyncio.sleep(0.01))
    assert transport.buffer.startswith(b"HTTP/1.1 200 OK")
    assert b"connection: close" in head_of(transport)
    assert transport.closed


def test_an_idle_connection_closes_soon_after_the_drain_began(loop):
    protocol, transport = connect(loop)
    protocol.shutdown()
    loop.run_until_complete(asyncio.sleep(DRAIN_IDLE_SECONDS + 0.1))
    assert transport.closed
    assert transport.buffer == b""


async def never_answers(scope: dict[str, Any], receive: Any, send: Any) -> None:
    await asyncio.sleep(3600)


def test_a_request_still_running_when_the_drain_is_cut_short_gets_503_json(loop):
    protocol, transport = connect_app(loop, never_answers)
    protocol.data_received(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    loop.run_until_complete(asyncio.sleep(0.01))
    protocol.cut_short("the request did not finish within 30s")
    status, body = answer(transport)
    assert status == 503
    assert body == {"error": "the request did not finish within 30s"}
    assert b"retry-after: 1" in head_of(transport)
    assert transport.closed
    for task in protocol.tasks:
        task.cancel()
    loop.run_until_complete(asyncio.sleep(0))


class CountingTransport(MockTransport):
    """A MockTransport that counts its writes."""

    def __init__(self) -> None:
        super().__init__()
        self.writes = 0

    def write(self, data: bytes) -> None:
        self.writes += 1
        super().write(data)


def serve_one(app: Any, request: bytes = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n") -> CountingTransport:
    loop = asyncio.new_event_loop()
    try:
        config = Config(app=app, lifespan="off", access_log=False, ws="none")
        config.load()
        protocol = with_head_timeout(60)(config, ServerState(), {}, _loop=loop)
        transport = CountingTransport()
        protocol.connection_made(transport)  # type: ignore[arg-type]
        protocol.data_received(request)
        loop.run_until_complete(asyncio.sleep(0.01))
        for task in protocol.tasks:
            task.cancel()
        loop.run_until_complete(asyncio.sleep(0))
        return transport
    finally:
        loop.close()


def whole_answer(headers: list[tuple[bytes, bytes]]) -> Any:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        start = [(b"content-type", b"application/json"), (b"content-length", b"11"), *headers]
        await send({"type": "http.response.start", "status": 200, "headers": start})
        await send({"type": "http.response.body", "body": b'{"ok":true}'})

    return app


def test_a_whole_answer_goes_out_in_one_write_with_its_head():
    transport = serve_one(whole_answer([(b"x-request-id", b"abc")]))
    assert transport.writes == 1
    head, _, body = transport.buffer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"\r\nx-request-id: abc" in head
    assert b"\r\ncontent-length: 11" in head
    assert body == b'{"ok":true}'
    assert not transport.closed


def test_a_head_request_gets_the_head_alone():
    transport = serve_one(whole_answer([]), b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert transport.buffer.startswith(b"HTTP/1.1 200 OK")
    assert transport.buffer.endswith(b"\r\n\r\n")


def test_a_header_value_with_a_line_break_never_reaches_the_wire():
    transport = serve_one(whole_answer([(b"x-bad", b"a\r\nset-cookie: b")]))
    assert b"set-cookie" not in transport.buffer
    assert transport.closed


def responder_app(direct: bool, **kwargs: Any) -> Any:
    from openbayes_serving.request import Request
    from openbayes_serving.responses import Responder

    out = Responder(("https://a.example",))

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        request = Request(scope, receive, 5)
        plain = send if direct else (lambda message: send(message))  # no cycle behind it
        await out.respond(plain, request, 201, b'{"ok":true}', "application/json", **kwargs)

    return app


@pytest.mark.parametrize("extra", [None, [(b"retry-after", b"1")]], ids=["own", "extra"])
def test_the_responder_puts_the_same_bytes_on_the_wire_as_the_asgi_messages_do(extra):
    request = (
        b"POST / HTTP/1.1\r\nHost: x\r\nOrigin: https://a.example\r\nX-Request-Id: r1\r\n"
        b"Content-Length: 2\r\n\r\n{}"
    )
    direct = serve_one(responder_app(True, extra=extra), request)
    asgi = serve_one(responder_app(False, extra=extra), request)
    assert direct.buffer == asgi.buffer
    assert direct.buffer.startswith(b"HTTP/1.1 201 Created\r\nx-request-id: r1\r\n")
    assert direct.writes == 1


async def echo_body(scope: dict[str, Any], receive: Any, send: Any) -> None:
    from openbayes_serving.request import Request

    body = await Request(scope, receive, 5).read_body(1000)
    headers = [(b"content-length", b"%d" % len(body))]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def connect_app(loop: asyncio.AbstractEventLoop, app: Any) -> tuple[Any, MockTransport]:
    config = Config(app=app, lifespan="off", access_log=False, ws="none")
    config.load()
    protocol = with_head_timeout(60)(config, ServerState(), {}, _loop=loop)
    transport = MockTransport()
    protocol.connection_made(transport)  # type: ignore[arg-type]
    return protocol, transport


@pytest.mark.parametrize("pieces", [1, 2], ids=["whole", "in-two-reads"])
def test_a_body_is_read_whole_however_it_arrived(loop, pieces):
    protocol, transport = connect_app(loop, echo_body)
    request = b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 6\r\n\r\nabcdef"
    if pieces == 1:
        protocol.data_received(request)
    else:
        protocol.data_received(request[:-3])
        loop.run_until_complete(asyncio.sleep(0.01))
        protocol.data_received(request[-3:])
    loop.run_until_complete(asyncio.sleep(0.01))
    assert transport.buffer.startswith(b"HTTP/1.1 200 OK")
    assert transport.buffer.endswith(b"\r\n\r\nabcdef")
    protocol.data_received(request)  # the connection carries the next request
    loop.run_until_complete(asyncio.sleep(0.01))
    assert transport.buffer.count(b"abcdef") == 2


def test_a_client_that_expects_100_continue_gets_it_before_its_answer(loop):
    protocol, transport = connect_app(loop, echo_body)
    protocol.data_received(
        b"POST / HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n"
    )
    loop.run_until_complete(asyncio.sleep(0.01))
    assert transport.buffer == b"HTTP/1.1 100 Continue\r\n\r\n"
    protocol.data_received(b"ok")
    loop.run_until_complete(asyncio.sleep(0.01))
    assert transport.buffer.endswith(b"\r\n\r\nok")
