"""The scheduler over HTTP: predict limit, pre/post off the lock, batching, overload, streams."""

from __future__ import annotations

import concurrent.futures
import json
import socket
import time

import pytest
import requests
from conftest import post_in_background, wait_for_load


def post_many(url: str, bodies: list[dict], timeout: float = 30) -> list[requests.Response]:
    with concurrent.futures.ThreadPoolExecutor(len(bodies)) as pool:
        return list(pool.map(lambda body: requests.post(url, json=body, timeout=timeout), bodies))


def test_preprocess_overlaps_while_predict_never_runs_twice(serve):
    server = serve("pipeline_timing", "--predict-concurrency", "1")
    started = time.monotonic()
    answers = post_many(server.url, [{"id": i} for i in range(10)])
    wall = time.monotonic() - started
    assert [rv.status_code for rv in answers] == [200] * 10
    assert sorted(rv.json()["id"] for rv in answers) == list(range(10))
    assert max(rv.json()["max_running"] for rv in answers) == 1
    assert not any(
        rv.json()["post_on_model_thread"] or rv.json()["pre_on_model_thread"] for rv in answers
    )
    # 0.2 s of preprocess for all at once, then 10 x 0.05 s of predict in turn.
    assert 0.65 <= wall < 1.6


def test_predict_concurrency_allows_that_many_at_once(serve):
    server = serve("pipeline_timing", "--predict-concurrency", "3")
    answers = post_many(server.url, [{"id": i, "pre": 0.0, "compute": 0.2} for i in range(6)])
    assert max(rv.json()["max_running"] for rv in answers) == 3


def test_async_preprocess_and_postprocess_are_awaited(shared_server):
    url = shared_server("async_steps")
    rv = requests.post(url, params={"scale": "3"}, json={"value": 7}, timeout=10)
    assert rv.json() == {"result": 21}


def test_batching_forms_batches_and_answers_each_request_from_its_own_input(serve):
    server = serve("batch_sum")
    bodies = [{"values": [i, i, 1]} for i in range(32)]
    answers = post_many(server.url, bodies)
    assert [rv.json()["sum"] for rv in answers] == [2 * i + 1 for i in range(32)]
    sizes = [rv.json()["batch"] for rv in answers]
    assert max(sizes) > 1
    assert max(sizes) <= 8


def test_lone_request_waits_at_most_max_delay(serve):
    server = serve("batch_sum")
    requests.post(server.url, json={"values": [0]}, timeout=10)  # warm the connection path
    started = time.monotonic()
    rv = requests.post(server.url, json={"values": [1, 2]}, timeout=10)
    elapsed = time.monotonic() - started
    assert rv.json() == {"sum": 3, "batch": 1}
    # A batch that waited to fill would never start: one request, one batch of 1.
    assert elapsed < 0.1 + 0.02 + 0.5  # max_delay_ms + predict + HTTP slack on a busy machine


def test_a_lone_client_stops_waiting_for_a_batch_once_waiting_got_no_one(serve):
    server = serve("batch_wide_window")  # max_delay_ms 1000
    took = []
    with requests.Session() as session:
        for _ in range(4):
            started = time.monotonic()
            rv = session.post(server.url, json={}, timeout=10)
            took.append(time.monotonic() - started)
            assert rv.json() == {"batch": 1}
    assert took[0] >= 1.0  # the first waited its window and got no one else
    assert max(took[1:]) < 0.5  # so the next ones, finding nothing queued, start at once


def test_batched_predict_after_preprocess_gets_preprocess_results(shared_server):
    url = shared_server("batch_preprocessed")
    answers = post_many(url, [{"x": i} for i in range(8)])
    assert [rv.json() for rv in answers] == [i * 10 + 1 for i in range(8)]


def test_wrong_length_batch_result_is_500_that_says_so(shared_server):
    url = shared_server("batch_preprocessed")
    rv = requests.post(url, json={"x": -1}, timeout=10)
    assert rv.status_code == 500
    assert "returned 0 results for a batch of 1" in rv.json()["error"]


def test_batching_with_several_batches_in_flight(serve):
    server = serve("batch_sum", "--predict-concurrency", "2")
    answers = post_many(server.url, [{"values": [i]} for i in range(24)])
    assert [rv.json()["sum"] for rv in answers] == list(range(24))


def test_queue_full_answers_503_with_retry_after_at_once_and_loses_nothing(serve):
    server = serve("sleeper", "--max-queue", "2")
    bodies = [{"sleep": 1.0, "id": i} for i in range(8)]
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        futures = []
        for body in bodies:
            futures.append(pool.submit(_timed_post, server.url, body))
            time.sleep(0.02)
        answers = [f.result() for f in futures]
    statuses = [status for status, _, _ in answers]
    assert statuses.count(200) == 3  # one running, two queued
    assert statuses.count(503) == 5
    for status, elapsed, rv in answers:
        if status == 503:
            assert elapsed < 0.5  # a queued request would take 1 s or more
            assert rv.headers["retry-after"] == "1"
            assert "overloaded" in rv.json()["error"]


def _timed_post(url: str, body: dict) -> tuple[int, float, requests.Response]:
    started = time.monotonic()
    rv = requests.post(url, json=body, timeout=30)
    return rv.status_code, time.monotonic() - started, rv


def test_request_that_cannot_finish_in_time_is_504_and_never_runs_later(serve):
    server = serve("sleeper", "--request-timeout", "0.5")
    first = post_in_background(server.url, {"sleep": 1.0}, timeout=10)
    wait_for_load(server.url, running=1)
    started = time.monotonic()
    rv = requests.post(server.url, json={"sleep": 0, "id": "late"}, timeout=10)
    assert rv.status_code == 504
    assert time.monotonic() - started < 0.9
    assert "0.5s" in rv.json()["error"]
    first.join(10)
    # The slot accounting stays right: the next request runs at once.
    assert requests.post(server.url, json={"id": 2}, timeout=5).json() == {"id": 2}
    assert requests.post(server.url, json={"ran": True}, timeout=5).json() == {"ran": [None, 2]}


def test_queued_request_whose_client_left_is_dropped_not_run(serve):
    server = serve("sleeper")
    first = post_in_background(server.url, {"sleep": 1.0, "id": "first"}, timeout=10)
    wait_for_load(server.url, running=1)
    body = b'{"id": "gone"}'
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
        )
        wait_for_load(server.url, running=1, waiting=1)  # behind "first"; then the client leaves
    first.join(10)
    assert requests.post(server.url, json={"id": "next"}, timeout=5).json() == {"id": "next"}
    ran = requests.post(server.url, json={"ran": True}, timeout=5).json()["ran"]
    assert ran == ["first", "next"]
    metrics = requests.get(server.url + "/metrics", timeout=5).text
    assert 'openbayes_serving_requests_total{route="/",status="499"} 1.0' in metrics


def test_stream_sends_first_chunk_before_the_generator_finishes(serve):
    server = serve("streams")
    started = time.monotonic()
    with requests.post(server.url, json={"count": 10, "delay": 0.1}, stream=True, timeout=10) as rv:
        assert rv.headers["content-type"] == "text/plain; charset=utf-8"
        chunks = rv.iter_content(chunk_size=None)
        first = next(chunks)
        first_at = time.monotonic() - started
        rest = b"".join(chunks)
    assert first.startswith(b"tok0 ")
    assert first_at < 0.5
    assert (first + rest).decode() == "".join(f"tok{i} " for i in range(10))


def test_stream_of_dicts_is_ndjson(shared_server):
    url = shared_server("streams")
    rv = requests.post(url, json={"count": 3, "dicts": True, "delay": 0}, timeout=10)
    assert rv.headers["content-type"] == "application/x-ndjson"
    assert [json.loads(line) for line in rv.text.splitlines()] == [{"index": i} for i in range(3)]


def test_stream_with_accept_event_stream_is_sse(shared_server):
    url = shared_server("streams")
    rv = requests.post(
        url,
        json={"count": 2, "dicts": True, "delay": 0},
        headers={"Accept": "text/event-stream"},
        timeout=10,
    )
    assert rv.headers["content-type"] == "text/event-stream"
    assert rv.text == 'id: 1\ndata: {"index":0}\n\nid: 2\ndata: {"index":1}\n\n'


def test_stream_that_fails_mid_way_ends_with_an_sse_error_event(shared_server):
    url = shared_server("streams")
    rv = requests.post(
        url,
        json={"count": 5, "fail_at": 2, "delay": 0},
        headers={"Accept": "text/event-stream"},
        timeout=10,
    )
    assert rv.text.startswith("id: 1\ndata: tok0 \n\nid: 2\ndata: tok1 \n\n")
    assert rv.text.endswith('id: 3\nevent: error\ndata: {"error":"stream broke"}\n\n')


def test_ndjson_stream_that_fails_ends_with_an_error_line(shared_server):
    url = shared_server("streams")
    rv = requests.post(url, json={"count": 5, "fail_at": 1, "dicts": True, "delay": 0}, timeout=10)
    assert [json.loads(line) for line in rv.text.splitlines()] == [
        {"index": 0},
        {"error": "stream broke"},
    ]


def test_text_stream_that_fails_is_cut_short(shared_server):
    url = shared_server("streams")
    with pytest.raises(requests.exceptions.ChunkedEncodingError):
        requests.post(url, json={"count": 5, "fail_at": 2, "delay": 0}, timeout=10).content  # noqa: B018
    assert requests.post(url, json={"count": 1, "delay": 0}, timeout=10).text == "tok0 "


def test_stream_error_details_stay_hidden_in_production(serve):
    server = serve("streams", env={"OPENBAYES_SERVING_PRODUCTION": "1"})
    rv = requests.post(
        server.url, json={"count": 3, "fail_at": 1, "dicts": True, "delay": 0}, timeout=10
    )
    assert rv.text.splitlines()[-1] == '{"error":"internal server error"}'


def test_client_that_disconnects_mid_stream_frees_the_slot(serve):
    server = serve("streams")
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        body = b'{"delay": 0.05}'
        sock.sendall(
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            + f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        received = b""
        for _ in range(50):  # headers and the first chunk may come in separate packets
            received += sock.recv(4096)
            if b"tok0" in received:
                break
        assert b"tok0" in received
    # The endless generator must be closed, or this request would wait for its slot.
    rv = requests.post(server.url, json={"count": 2, "delay": 0}, timeout=5)
    assert rv.text == "tok0 tok1 "


def test_two_instances_run_predicts_in_parallel_and_each_sees_its_device(serve):
    server = serve("instances")
    started = time.monotonic()
    answers = post_many(server.url, [{"sleep": 0.5}] * 2)
    assert time.monotonic() - started < 0.9
    assert [rv.json()["device"] for rv in answers] == ["cpu", "cpu"]
    assert len({rv.json()["instance"] for rv in answers}) == 2


@pytest.mark.parametrize("flag", ["--devices=cpu", "--predict-concurrency=1"])
def test_instances_setting_from_kwargs_beats_flags(serve, flag):
    server = serve("instances", flag)
    answers = post_many(server.url, [{"sleep": 0.3}] * 2)
    assert len({rv.json()["instance"] for rv in answers}) == 2
