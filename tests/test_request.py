"""The Request object in-process: headers read once, id, deadline, body reading."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import msgpack
import pytest

from openbayes_serving.errors import (
    BadRequestError,
    ClientGone,
    PayloadTooLargeError,
    RequestTimeoutError,
)
from openbayes_serving.request import Request


def scope(*headers: tuple[bytes, bytes]) -> dict[str, Any]:
    return {"type": "http", "method": "POST", "path": "/", "headers": list(headers)}


def receiver(*messages: dict[str, Any], stall: bool = False) -> Any:
    queue = list(messages)

    async def receive() -> dict[str, Any]:
        if queue:
            return queue.pop(0)
        if stall:
            await asyncio.sleep(60)
        return {"type": "http.disconnect"}

    return receive


def body(data: bytes, more: bool = False) -> dict[str, Any]:
    return {"type": "http.request", "body": data, "more_body": more}


def test_headers_are_read_into_fields_once():
    request = Request(
        scope(
            (b"content-type", b"application/json"),
            (b"accept", b"application/msgpack"),
            (b"origin", b"https://a.example"),
            (b"authorization", b"Bearer k"),
        ),
        receiver(),
        timeout=5,
    )
    assert request.content_type == "application/json"
    assert request.accept == "application/msgpack"
    assert request.origin == b"https://a.example"
    assert request.auth == (b"authorization", b"Bearer k")


def test_the_request_id_is_the_clients_else_the_platforms_else_a_new_one():
    given = Request(scope((b"x-request-id", b"abc")), receiver(), 5)
    platform = Request(scope((b"x-openbayes-serving-request-id", b"42")), receiver(), 5)
    first, second = Request(scope(), receiver(), 5), Request(scope(), receiver(), 5)
    assert given.request_id == "abc"
    assert platform.request_id == "42"
    assert first.request_id != second.request_id


def test_the_deadline_is_computed_once_from_the_timeout():
    before = time.monotonic()
    request = Request(scope(), receiver(), timeout=7)
    assert before + 7 <= request.deadline <= time.monotonic() + 7


def test_a_body_in_pieces_is_joined():
    request = Request(scope(), receiver(body(b"ab", more=True), body(b"c")), 5)
    assert asyncio.run(request.read_body(10)) == b"abc"
    assert request.body == b"abc"


def test_a_body_over_the_limit_is_413_by_its_length_or_while_reading():
    declared = Request(scope((b"content-length", b"11")), receiver(body(b"x")), 5)
    with pytest.raises(PayloadTooLargeError):
        asyncio.run(declared.read_body(10))
    streamed = Request(scope(), receiver(body(b"x" * 6, more=True), body(b"x" * 6)), 5)
    with pytest.raises(PayloadTooLargeError):
        asyncio.run(streamed.read_body(10))


def test_a_body_that_stalls_past_the_deadline_is_408():
    request = Request(scope(), receiver(body(b"x", more=True), stall=True), timeout=0.1)
    with pytest.raises(RequestTimeoutError, match="within 0.1s"):
        asyncio.run(request.read_body(10))


def test_a_client_that_leaves_mid_body_is_gone():
    request = Request(scope(), receiver(body(b"x", more=True)), 5)
    with pytest.raises(ClientGone):
        asyncio.run(request.read_body(10))


def test_json_is_strict_and_payload_is_raw_for_other_types():
    packed = msgpack.packb({"a": 1})
    request = Request(scope((b"content-type", b"application/msgpack")), receiver(), 5)
    request.body = packed
    assert request.parsed(strict=True) == {"a": 1}
    raw = Request(scope((b"content-type", b"image/png")), receiver(), 5)
    raw.body = b"\x89PNG"
    assert raw.parsed(strict=False) == b"\x89PNG"
    with pytest.raises(BadRequestError):
        raw.parsed(strict=True)


def test_a_receive_without_a_server_cycle_counts_as_connected():
    assert Request(scope(), receiver(), 5).disconnected is False
