"""Streams through a real server: numbered SSE events, the heartbeat setting, the metrics."""

from __future__ import annotations

from typing import Any

import requests
from prometheus_client.parser import text_string_to_metric_families

import openbayes_serving as serv

SSE = {"Accept": "text/event-stream"}
HEARTBEAT = ("--stream-heartbeat", "0.2")


def samples(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of the server's /metrics, by name and labels."""
    text = requests.get(f"{url}/metrics", timeout=10).text
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


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


def test_an_idle_sse_stream_gets_pings_as_the_flag_sets_and_the_client_skips_them(
    shared_server,
):
    url = shared_server("streams", *HEARTBEAT)
    slow = {"count": 2, "delay": 0.8}  # 0.8 s between the two chunks, and after the last

    body = stream_body(url, slow, SSE)

    assert body.startswith(b"id: 1\ndata: tok0 \n\n: ping\n\n: ping\n\n")
    assert body.count(b": ping\n\n") >= 3
    assert body.count(b"data: ") == 2
    with serv.Client(url, timeout=10) as client:
        assert list(client.stream(json=slow, sse=True)) == ["tok0 ", "tok1 "]


def test_an_ndjson_stream_is_never_pinged(shared_server):
    url = shared_server("streams", *HEARTBEAT)

    body = stream_body(url, {"count": 2, "delay": 0.6, "dicts": True}, {})

    assert body == b'{"index":0}\n{"index":1}\n'


def test_metrics_have_the_time_to_the_first_chunk_and_the_chunks_per_stream(shared_server):
    url = shared_server("streams", *HEARTBEAT)
    before = samples(url)

    stream_body(url, {"count": 3, "delay": 0.3, "dicts": True}, {})  # first chunk at once
    stream_body(url, {"count": 0}, SSE)  # a stream without a chunk
    after = samples(url)

    def added(name: str, **labels: str) -> float:
        key = (name, tuple(sorted(labels.items())))
        return after.get(key, 0.0) - before.get(key, 0.0)

    chunks = "openbayes_serving_stream_chunks"
    assert added(f"{chunks}_count") == 2
    assert added(f"{chunks}_sum") == 3
    assert added(f"{chunks}_bucket", le="0.0") == 1
    assert added(f"{chunks}_bucket", le="2.0") == 1
    assert added(f"{chunks}_bucket", le="5.0") == 2
    first = "openbayes_serving_stream_first_chunk_seconds"
    assert added(f"{first}_count") == 1  # the stream without a chunk has no first chunk
    assert added(f"{first}_bucket", le="0.25") == 1  # not the 0.6 s the stream lasted
