"""Streams in-process: the bounded channel, the pump, and the chunks sent over ASGI.

SSE events are numbered, an idle SSE stream sends ``: ping``, and the metrics hooks see
the time to the first chunk and the number of chunks.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from typing import Any, Callable

import pytest

from openbayes_serving import codec
from openbayes_serving.answers import sse_events
from openbayes_serving.errors import SettingsError
from openbayes_serving.request import Request
from openbayes_serving.responses import Responder
from openbayes_serving.settings import resolve_settings
from openbayes_serving.streams import (
    Channel,
    StreamOptions,
    StreamStart,
    is_stream,
    pump,
    send_stream,
)


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


def test_sse_events_are_numbered_from_1_and_the_error_event_takes_the_next_id():
    sent = _stream(["hi", {"n": 2}], ValueError("x"), "text/event-stream")
    body = b"".join(m.get("body", b"") for m in sent[1:])
    assert body.startswith(b'id: 1\ndata: hi\n\nid: 2\ndata: {"n":2}\n\n')
    assert body.endswith(b"\n\n")
    assert b"id: 3\nevent: error\ndata: " in body


def test_a_chunk_cannot_forge_an_sse_field_or_end_its_event_with_carriage_returns():
    framed = codec.frame_chunk("a\rid: 9\r\revent: error\r\nb", sse=True, event_id=4)

    assert framed == b"id: 4\ndata: a\ndata: id: 9\ndata: \ndata: event: error\ndata: b\n\n"
    assert list(sse_events(iter([framed]))) == [("message", "a\nid: 9\n\nevent: error\nb")]


# ---- over time: a generator on a thread, the event loop sending ---------------------------


class Sent:
    """What ``send_stream`` sent and what its hooks saw, with the time of each message."""

    def __init__(self) -> None:
        self.messages: list[tuple[float, dict[str, Any]]] = []
        self.first_chunk: list[float] = []
        self.chunk_counts: list[int] = []

    @property
    def start(self) -> dict[str, Any]:
        return self.messages[0][1]

    @property
    def body(self) -> bytes:
        return b"".join(m.get("body", b"") for _, m in self.messages[1:])

    def pieces(self) -> list[bytes]:
        return [m["body"] for _, m in self.messages[1:] if m.get("body")]


def run_stream(
    generate: Callable[[], Iterator[Any]],
    accept: str,
    heartbeat: float,
    leave_after: float | None = None,
) -> Sent:
    """Pump ``generate()`` on a thread and send it as the app does, with the metrics hooks."""
    result = Sent()

    async def main() -> None:
        loop = asyncio.get_running_loop()
        left = asyncio.Event()

        async def receive() -> dict[str, Any]:
            await left.wait()
            return {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            result.messages.append((loop.time(), message))

        headers = [(b"accept", accept.encode())]
        scope = {"type": "http", "method": "POST", "path": "/", "headers": headers}
        request = Request(scope, receive, timeout=30)
        event = asyncio.Event()
        channel = Channel(lambda: loop.call_soon_threadsafe(event.set))
        producer = threading.Thread(target=pump, args=(generate(), channel))
        producer.start()
        if leave_after is not None:
            loop.call_later(leave_after, left.set)
        options = StreamOptions(heartbeat, result.first_chunk.append, result.chunk_counts.append)
        await send_stream(
            send, request, StreamStart(channel, event), Responder(("*",)), False, options
        )
        await loop.run_in_executor(None, producer.join, 10)

    asyncio.run(main())
    return result


def test_an_idle_sse_stream_sends_a_ping_after_the_heartbeat_and_keeps_its_ids():
    def generate() -> Iterator[str]:
        yield "a"
        time.sleep(0.5)
        yield "b"

    sent = run_stream(generate, "text/event-stream", heartbeat=0.1)

    pieces = sent.pieces()
    assert pieces[0] == b"id: 1\ndata: a\n\n"
    assert pieces[-1] == b"id: 2\ndata: b\n\n"
    pings = pieces[1:-1]
    assert len(pings) >= 2  # about one per 0.1 s of the 0.5 s pause
    assert set(pings) == {b": ping\n\n"}
    times = [t for t, m in sent.messages[1:] if m.get("body")]
    assert all(later - earlier >= 0.08 for earlier, later in zip(times, times[1:-1]))


def test_a_ping_before_the_first_chunk_sends_the_status_first():
    def generate() -> Iterator[str]:
        time.sleep(0.4)
        yield "late"

    sent = run_stream(generate, "text/event-stream", heartbeat=0.1)

    assert sent.start["status"] == 200
    assert dict(sent.start["headers"])[b"content-type"] == b"text/event-stream"
    assert sent.pieces()[0] == b": ping\n\n"
    assert sent.body.endswith(b"id: 1\ndata: late\n\n")
    assert [event for event in sse_events(iter([sent.body]))] == [("message", "late")]


def test_a_generator_that_fails_after_a_ping_ends_the_stream_with_an_error_event():
    def generate() -> Iterator[str]:
        time.sleep(0.3)
        raise RuntimeError("no first token")
        yield "never"

    sent = run_stream(generate, "text/event-stream", heartbeat=0.1)

    assert sent.start["status"] == 200  # already sent with the ping
    assert sent.body.startswith(b": ping\n\n")
    assert sent.body.endswith(b'id: 1\nevent: error\ndata: {"error":"internal server error"}\n\n')


def test_no_ping_while_chunks_come_faster_than_the_heartbeat():
    def generate() -> Iterator[str]:
        for index in range(5):
            time.sleep(0.05)
            yield str(index)

    sent = run_stream(generate, "text/event-stream", heartbeat=1.0)

    assert b": ping" not in sent.body
    assert [data for _, data in sse_events(iter([sent.body]))] == ["0", "1", "2", "3", "4"]


@pytest.mark.parametrize(
    ("accept", "heartbeat", "chunks"),
    [
        ("application/x-ndjson", 0.05, [{"a": 1}, {"b": 2}]),  # NDJSON
        ("*/*", 0.05, ["a", "b"]),  # text/plain
        ("text/event-stream", 0, ["a", "b"]),  # SSE with the heartbeat off
    ],
)
def test_no_ping_in_ndjson_or_text_streams_nor_with_the_heartbeat_off(accept, heartbeat, chunks):
    def generate() -> Iterator[Any]:
        yield chunks[0]
        time.sleep(0.3)
        yield chunks[1]

    sent = run_stream(generate, accept, heartbeat=heartbeat)

    assert b"ping" not in sent.body
    assert len(sent.pieces()) == 2


def test_the_hooks_see_the_time_to_the_first_chunk_and_the_chunks_sent():
    def generate() -> Iterator[str]:
        time.sleep(0.3)
        yield from ("a", "b", "c")

    sent = run_stream(generate, "*/*", heartbeat=15)

    assert len(sent.first_chunk) == 1
    assert 0.25 <= sent.first_chunk[0] < 5
    assert sent.chunk_counts == [3]


def test_the_chunks_of_a_stream_the_client_left_are_counted_when_it_ends():
    def generate() -> Iterator[str]:
        for index in range(1000):
            yield f"t{index} "
            time.sleep(0.05)

    sent = run_stream(generate, "text/event-stream", heartbeat=15, leave_after=0.3)

    assert len(sent.chunk_counts) == 1
    assert 1 <= sent.chunk_counts[0] < 100
    assert sent.chunk_counts[0] == sent.body.count(b"data: ")


def test_a_stream_without_chunks_counts_zero_and_has_no_first_chunk_time():
    sent = run_stream(lambda: iter(()), "text/event-stream", heartbeat=15)

    assert (sent.first_chunk, sent.chunk_counts) == ([], [0])


def test_stream_heartbeat_has_three_spellings_and_0_turns_it_off():
    env = {"OPENBAYES_SERVING_STREAM_HEARTBEAT": "2.5"}

    assert resolve_settings({}, [], {}).stream_heartbeat == 15
    assert resolve_settings({}, [], env).stream_heartbeat == 2.5
    assert resolve_settings({}, ["--stream-heartbeat", "0"], env).stream_heartbeat == 0
    assert (
        resolve_settings({"stream_heartbeat": 1}, ["--stream-heartbeat", "0"]).stream_heartbeat == 1
    )
    for bad in ("-1", "nan", "inf", "soon"):
        with pytest.raises(SettingsError, match="stream_heartbeat"):
            resolve_settings({}, ["--stream-heartbeat", bad], {})
