"""Client deadlines: ``X-Request-Timeout`` against ``request_timeout``, the 504 that says
which applied, and the 400 for a bad value; over HTTP and in-process."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
import requests
from asgi_calls import instance, post, run
from conftest import post_in_background, wait_for_load

import openbayes_serving as serv
from openbayes_serving.request import Request
from openbayes_serving.testing import LocalClient

BAD_VALUES = ["soon", "-1", "0", "0.0", "nan", "inf", "1e400", "1,5", "", "2s"]


def test_a_request_whose_header_deadline_passes_in_the_queue_is_504_and_never_runs(serve):
    server = serve("sleeper", "--predict-concurrency", "1")
    busy = post_in_background(server.url, {"id": "busy", "sleep": 1.5})
    wait_for_load(server.url, running=1)
    started = time.monotonic()
    late = requests.post(
        server.url, json={"id": "late"}, headers={"X-Request-Timeout": "0.3"}, timeout=10
    )
    waited = time.monotonic() - started
    assert late.status_code == 504
    body = late.json()
    assert body["deadline"] == "X-Request-Timeout"
    assert body["timeout"] == 0.3
    assert "X-Request-Timeout" in body["error"]
    assert 0.25 < waited < 1.0  # answered at its own deadline, not at the busy one's end
    busy.join(10)
    ran = requests.post(server.url, json={"ran": True}, timeout=10).json()["ran"]
    assert ran == ["busy"]


def test_request_timeout_applies_when_it_is_the_smaller(serve):
    server = serve("sleeper", "--request-timeout", "0.4")
    for headers in ({"X-Request-Timeout": "30"}, {}):
        answer = requests.post(server.url, json={"sleep": 1}, headers=headers, timeout=10)
        assert answer.status_code == 504
        body = answer.json()
        assert body["deadline"] == "request_timeout"
        assert body["timeout"] == 0.4
        assert "request_timeout" in body["error"]
    # a header below request_timeout is the deadline; one that leaves time changes nothing
    fine = requests.post(server.url, json={"id": 1}, headers={"X-Request-Timeout": "5"}, timeout=10)
    assert fine.status_code == 200


@pytest.mark.parametrize("value", BAD_VALUES)
def test_a_bad_header_value_is_400_json(shared_server, value):
    url = shared_server("sleeper")
    answer = requests.post(url, json={"id": 1}, headers={"X-Request-Timeout": value}, timeout=10)
    assert answer.status_code == 400
    assert answer.headers["content-type"] == "application/json"
    assert "X-Request-Timeout" in answer.json()["error"]


def test_the_client_timeout_reaches_the_server_as_its_deadline(serve):
    server = serve("sleeper", "--predict-concurrency", "1")
    busy = post_in_background(server.url, {"id": "busy", "sleep": 1.5})
    wait_for_load(server.url, running=1)
    with serv.Client(server.url, timeout=0.4, max_retries=0) as client:
        with pytest.raises(serv.PredictError) as caught:
            client.predict(json={"id": "from-client"})
    assert caught.value.status_code == 504
    assert caught.value.body["deadline"] == "X-Request-Timeout"
    busy.join(10)
    ran = requests.post(server.url, json={"ran": True}, timeout=10).json()["ran"]
    assert ran == ["busy"]


# ---- in-process ---------------------------------------------------------------------------


def request_with(headers: list[tuple[bytes, bytes]], timeout: float) -> Request:
    async def receive() -> dict[str, Any]:
        return {"type": "http.disconnect"}

    scope = {"type": "http", "method": "POST", "path": "/", "headers": headers}
    return Request(scope, receive, timeout)


def test_the_deadline_is_the_smaller_of_the_header_and_request_timeout():
    before = time.monotonic()
    short = request_with([(b"x-request-timeout", b"2.5")], 60)
    assert before + 2.5 <= short.deadline <= time.monotonic() + 2.5
    assert short.timeout == 2.5
    assert short.deadline_source == "X-Request-Timeout"
    long = request_with([(b"x-request-timeout", b"100")], 60)
    assert long.timeout == 60
    assert long.deadline_source == "request_timeout"
    none = request_with([], 60)
    assert none.timeout == 60
    assert none.deadline_source == "request_timeout"


class Sleeper:
    def __init__(self) -> None:
        self.ran: list[Any] = []
        self.lock = threading.Lock()

    def predict(self, json):
        with self.lock:
            self.ran.append(json["id"])
        time.sleep(json.get("sleep", 0))
        return {"id": json["id"]}


def test_in_process_a_queued_request_past_its_header_deadline_is_504_and_never_runs():
    with LocalClient(Sleeper, predict_concurrency=1) as client:
        busy, late = run(
            client,
            post(client.app, {"id": "busy", "sleep": 0.6}),
            post(client.app, {"id": "late"}, {"X-Request-Timeout": "0.2"}, delay=0.05),
        )
        assert busy.status == 200
        assert late.status == 504
        assert late.json()["deadline"] == "X-Request-Timeout"
        assert late.finished_at < busy.finished_at
        assert client.post(json={"id": "after"}).status_code == 200
        assert instance(client).ran == ["busy", "after"]


@pytest.mark.parametrize("value", BAD_VALUES)
def test_in_process_a_bad_header_value_is_400(value):
    with LocalClient(Sleeper) as client:
        answer = client.post(json={"id": 1}, headers={"X-Request-Timeout": value})
        assert answer.status_code == 400
        assert "X-Request-Timeout" in answer.json()["error"]
        assert instance(client).ran == []
