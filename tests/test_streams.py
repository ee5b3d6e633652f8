"""Streams in-process: the bounded channel, the pump, and the chunks sent over ASGI."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from typing import Any

from openbayes_serving.request import Request
from openbayes_serving.responses import Responder
from openbayes_serving.streams import Channel, StreamStart, is_stream, pump, send_stream


def test_channel_blocks_the_producer_when_full_and_releases_it_on_close():
    channel = Channel(lambda: None, maxsize=2)
    assert channel.put(1)
    assert channel.put(2)
    outcome: list[bool] = []
    producer = threading.Thread(target=lambda: outcome.append(channel.put(3)))
    producer.start()
    time.sleep(0.05)
    assert producer.is_alive()
    channel.close()
    producer.join(1)
    assert outcome == [False]


def test_pump_stops_and_closes_the_generator_once_the_client_left():
    closed: list[bool] = []

    def generate() -> Iterator[int]:
        try:
            yield from range(1000)
        finally:
            closed.append(True)

    channel = Channel(lambda: None, maxsize=4)
    channel.close()
    pump(generate(), channel)
    assert closed == [True]
    assert channel.take() == []


def test_pump_reports_what_the_generator_raised():
    def generate() -> Iterator[str]:
        yield "a"
        raise ValueError("broke")

    channel = Channel(lambda: None)
    pump(generate(), channel)
    assert channel.take() == ["a"]
    assert channel.finished
    assert isinstance(channel.error, ValueError)


def test_only_iterators_that_are_not_values_stream():
    assert is_stream(iter([1]))
    assert is_stream(x for x in "ab")
    assert not any(is_stream(v) for v in ("ab", b"ab", {"a": 1}, [1], (1,)))


def _stream(chunks: list[Any], error: BaseException | None, accept: str) -> list[dict[str, Any]]:
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        await asyncio.sleep(10)
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    async def main() -> None:
        scope = {
            "type": "http",
            "method": "POST",
            "path": "/",
            "headers": [(b"accept", accept.encode())],
        }
        request = Request(scope, receive, timeout=5)
        event = asyncio.Event()
        channel = Channel(event.set)
        for chunk in chunks:
            channel.put(chunk)
        channel.finish(error)
        await send_stream(send, request, StreamStart(channel, event), Responder(("*",)), False)

    asyncio.run(main())
    return sent


def test_dict_chunks_are_ndjson_lines_and_an_error_ends_with_an_error_line():
    sent = _stream([{"a": 1}, {"b": 2}], RuntimeError("secret"), "*/*")
    headers = dict(sent[0]["headers"])
    assert headers[b"content-type"] == b"application/x-ndjson"
    body = b"".join(m.get("body", b"") for m in sent[1:])
    assert body == b'{"a":1}\n{"b":2}\n{"error":"internal server error"}\n'
    assert sent[-1]["more_body"] is False


def test_sse_frames_each_chunk_as_an_event_and_the_error_as_an_error_event():
    sent = _stream(["hi"], ValueError("x"), "text/event-stream")
    body = b"".join(m.get("body", b"") for m in sent[1:])
    assert body.startswith(b"data: hi\n\n")
    assert b"event: error\ndata: " in body
