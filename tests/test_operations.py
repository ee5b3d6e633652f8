"""What operators rely on: metrics, request ids in logs, API keys, events, worker faults."""

from __future__ import annotations

import json
import os
import signal
import time

import pytest
import requests
from conftest import metric, post_in_background, wait_for_load


def test_metrics_count_requests_stages_and_batches(serve):
    server = serve("batch_sum")
    for i in range(3):
        requests.post(server.url, json={"values": [i]}, timeout=10)
    requests.post(server.url, data=b"{", headers={"Content-Type": "application/json"}, timeout=10)
    text = requests.get(server.url + "/metrics", timeout=5).text
    assert metric(text, "openbayes_serving_requests_total", route="/", status="200") == 3
    assert metric(text, "openbayes_serving_requests_total", route="/", status="400") == 1
    assert metric(text, "openbayes_serving_request_duration_seconds_count", stage="total") == 4
    assert metric(text, "openbayes_serving_request_duration_seconds_count", stage="predict") == 3
    assert metric(text, "openbayes_serving_request_duration_seconds_count", stage="queue") == 3
    assert metric(text, "openbayes_serving_batch_size_count") == 3
    assert metric(text, "openbayes_serving_queue_depth") == 0
    assert metric(text, "openbayes_serving_model_load_seconds") >= 0


def test_metrics_count_503_and_504(serve):
    server = serve("sleeper", "--max-queue", "0", "--request-timeout", "0.3")

    slow = post_in_background(server.url, {"sleep": 0.6}, timeout=10)
    wait_for_load(server.url, running=1)
    assert requests.post(server.url, json={}, timeout=5).status_code == 503
    slow.join(10)
    text = requests.get(server.url + "/metrics", timeout=5).text
    assert metric(text, "openbayes_serving_rejected_total", reason="overloaded") == 1
    assert metric(text, "openbayes_serving_rejected_total", reason="timeout") == 1


def test_metrics_sum_over_several_workers_and_request_ids_stay_unique(serve):
    server = serve("echo_json", "--workers", "2")
    ids = set()
    for _ in range(20):
        rv = requests.post(server.url, json={}, headers={"Connection": "close"}, timeout=5)
        ids.add(rv.headers["x-request-id"])
    assert len(ids) == 20

    def total() -> float:  # read by whichever worker takes the new connection
        text = requests.get(server.url + "/metrics", headers={"Connection": "close"}, timeout=5)
        return metric(text.text, "openbayes_serving_requests_total", route="/", status="200")

    # A worker counts a request once its answer is sent: on a loaded machine the scrape
    # can come before the last count.
    deadline = time.monotonic() + 5
    while total() != 20 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert {total() for _ in range(4)} == {20.0}


def test_every_log_line_of_a_request_carries_its_id(serve):
    server = serve("raises")
    requests.post(
        server.url, json={"kind": "crash"}, headers={"X-Request-Id": "trace-me-7"}, timeout=5
    )
    lines = [line for line in server.log().splitlines() if "trace-me-7" in line]
    assert any("predict failed" in line for line in lines)


def test_json_log_format_writes_one_object_per_line_with_request_id(serve):
    server = serve("raises", "--log-format", "json")
    requests.post(server.url, json={"kind": "crash"}, headers={"X-Request-Id": "json-9"}, timeout=5)
    lines = server.log().splitlines()
    records = [json.loads(line) for line in lines]  # every line, gunicorn's and uvicorn's too
    assert {"gunicorn.error", "uvicorn.error", "openbayes_serving.app"} <= {
        r["logger"] for r in records
    }
    failure = next(r for r in records if r["request_id"] == "json-9")
    assert failure["level"] == "ERROR"
    assert "secret internal detail" in failure["exception"]


def test_api_key_protects_predict_and_metrics_but_not_health(serve):
    server = serve("echo_json", env={"OPENBAYES_SERVING_API_KEY": "s3cret"})
    assert requests.post(server.url, json={}, timeout=5).status_code == 401
    assert (
        requests.post(
            server.url, json={}, headers={"Authorization": "Bearer nope"}, timeout=5
        ).status_code
        == 401
    )
    denied = requests.get(server.url + "/metrics", timeout=5)
    assert denied.status_code == 401
    assert "API key" in denied.json()["error"]
    assert requests.post(
        server.url, json={"a": 1}, headers={"Authorization": "Bearer s3cret"}, timeout=5
    ).json() == {"a": 1}
    assert (
        requests.post(server.url, json={}, headers={"X-API-Key": "s3cret"}, timeout=5).status_code
        == 200
    )
    assert requests.get(server.url + "/healthz", timeout=5).status_code == 200
    assert requests.get(server.url + "/readyz", timeout=5).status_code == 200


def test_emit_event_logs_outside_production(serve):
    server = serve("emits_event")
    assert requests.post(server.url, json={"x": 5}, timeout=5).json() == {"ok": True}
    assert "event seen -> {'x': 5}" in server.log()


def test_emit_event_with_collector_down_does_not_slow_requests(serve):
    server = serve("emits_event", env={"OPENBAYES_SERVING_PRODUCTION": "1"})
    started = time.monotonic()
    for i in range(20):
        rv = requests.post(
            server.url,
            json={"x": i},
            headers={"X-Openbayes-Serving-Request-Id": str(i + 1)},
            timeout=5,
        )
        assert rv.status_code == 200
    assert time.monotonic() - started < 2.0


def worker_pids(master: int) -> list[int]:
    with open(f"/proc/{master}/task/{master}/children") as children:
        return [int(pid) for pid in children.read().split()]


def test_worker_killed_by_sigkill_is_replaced_and_ready_again(serve):
    server = serve("echo_json")
    children = worker_pids(server.proc.pid)
    assert children
    os.kill(children[0], signal.SIGKILL)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if requests.get(server.url + "/readyz", timeout=1).status_code == 200:
                new = worker_pids(server.proc.pid)
                if new and new[0] != children[0]:
                    break
        except requests.RequestException:
            pass
        time.sleep(0.1)
    else:
        pytest.fail("the worker was not replaced")
    assert requests.post(server.url, json={"back": True}, timeout=5).json() == {"back": True}


def test_emit_event_in_production_posts_msgpack_to_the_collector(serve):
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    import msgpack

    received: list[tuple[str, dict]] = []
    arrived = threading.Event()

    class Collector(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802
            body = self.rfile.read(int(self.headers["Content-Length"]))
            received.append((self.headers["Content-Type"], msgpack.unpackb(body)))
            self.send_response(204)
            self.end_headers()
            arrived.set()

        def log_message(self, *args):
            pass

    with ThreadingHTTPServer(("127.0.0.1", 0), Collector) as collector:
        thread = threading.Thread(target=collector.serve_forever, daemon=True)
        thread.start()
        url = f"http://127.0.0.1:{collector.server_address[1]}/events"
        server = serve(
            "emits_event",
            env={"OPENBAYES_SERVING_PRODUCTION": "1", "OPENBAYES_SERVING_EVENTS_URL": url},
        )
        rv = requests.post(
            server.url, json={"x": 5}, headers={"X-Openbayes-Serving-Request-Id": "42"}, timeout=5
        )
        assert rv.status_code == 200
        assert arrived.wait(10)
        collector.shutdown()
    assert received == [("application/msgpack", {"id": 42, "name": "seen", "data": b'{"x":5}'})]
