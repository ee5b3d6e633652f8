"""Streams through a real server: numbered SSE events, the heartbeat setting, the metrics."""

from __future__ import annotations

from typing import Any

import requests

SSE = {"Accept": "text/event-stream"}
HEARTBEAT = ("--stream-heartbeat", "0.2")


def stream_body(url: str, body: dict[str, Any], headers: dict[str, str]) -> bytes:
    with requests.post(url, json=body, headers=headers, stream=True, timeout=10) as answer:
        assert answer.status_code == 200
        return b"".join(answer.iter_content(chunk_size=None))


def test_sse_events_carry_ids_counting_from_1_in_each_stream(shared_server):
    url = shared_server("streams")

    for _ in range(2):  # a counter per stream, not per server
        body = stream_body(url, {"count": 3, "delay": 0}, SSE).decode()
        ids = [line for line in body.split("\n") if line.startswith("id:")]
        assert ids == ["id: 1", "id: 2", "id: 3"]


def test_an_sse_stream_that_fails_numbers_its_error_event_too(shared_server):
    url = shared_server("streams")

    body = stream_body(url, {"count": 5, "fail_at": 2, "delay": 0}, SSE).decode()

    assert body.endswith('id: 3\nevent: error\ndata: {"error":"stream broke"}\n\n')


def test_an_ndjson_stream_is_never_pinged(shared_server):
    url = shared_server("streams", *HEARTBEAT)

    body = stream_body(url, {"count": 2, "delay": 0.6, "dicts": True}, {})

    assert body == b'{"index":0}\n{"index":1}\n'
