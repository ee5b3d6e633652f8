"""Cancellation that reaches the model: ``cancelled`` is set when the client hangs up or the
deadline passes, predict returns early and frees its slot, ``/metrics`` counts it; over
HTTP and in-process."""

from __future__ import annotations

import asyncio
import json as jsonlib
import socket
import threading
import time
from pathlib import Path
from typing import Any

import orjson
import pytest
import requests
from asgi_calls import instance, post, run
from conftest import metric, wait_for_load

import openbayes_serving as serv
from openbayes_serving.errors import PredictorError
from openbayes_serving.predictor import inspect_predictor
from openbayes_serving.settings import resolve_settings
from openbayes_serving.testing import LocalClient


def events(log: Path) -> list[dict[str, Any]]:
    if not log.exists():
        return []
    return [jsonlib.loads(line) for line in log.read_text().splitlines() if line]


def wait_for(log: Path, count: int, seconds: float = 10) -> list[dict[str, Any]]:
    """The log's events once it holds ``count`` of them (fails after ``seconds``)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        seen = events(log)
        if len(seen) >= count:
            return seen
        time.sleep(0.01)
    raise AssertionError(f"{log} holds {events(log)}, expected {count} events")


def send_raw(port: int, body: dict[str, Any]) -> socket.socket:
    """A POST / whose connection the test closes itself (the client hanging up)."""
    data = orjson.dumps(body)
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    sock.sendall(
        b"POST / HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (len(data), data)
    )
    return sock


def cancelled(url: str, reason: str) -> float:
    text = requests.get(f"{url}/metrics", timeout=10).text
    return metric(text, "openbayes_serving_cancelled_total", reason=reason)


def test_a_predict_polling_cancelled_returns_when_the_client_hangs_up_and_the_next_starts(
    serve, tmp_path
):
    server = serve("cancellable", "--predict-concurrency", "1")
    log = tmp_path / "events.jsonl"
    first = send_raw(server.port, {"id": "first", "wait": 10, "log": str(log)})
    wait_for(log, 1)
    answers: list[requests.Response] = []
    second = threading.Thread(
        target=lambda: answers.append(
            requests.post(server.url, json={"id": "second", "log": str(log)}, timeout=20)
        )
    )
    second.start()
    wait_for_load(server.url, running=1, waiting=1)  # the second waits behind the first
    assert len(events(log)) == 1
    hung_up = time.monotonic()
    first.close()
    second.join(15)
    returned, started = wait_for(log, 4)[1:3]
    assert returned["id"] == "first"
    assert returned["reason"] == "disconnect"
    assert returned["at"] - hung_up < 0.5
    assert started == {"at": started["at"], "event": "start", "id": "second"}
    assert started["at"] - hung_up < 0.5
    assert answers[0].status_code == 200
    assert answers[0].json() == {"id": "second", "cancelled": False, "reason": None}
    assert cancelled(server.url, "disconnect") == 1
    assert cancelled(server.url, "deadline") == 0


def test_a_running_predict_sees_its_deadline_and_frees_its_slot(serve, tmp_path):
    server = serve("cancellable", "--predict-concurrency", "1")
    log = tmp_path / "events.jsonl"
    started = time.monotonic()
    answer = requests.post(
        server.url,
        json={"id": "slow", "wait": 10, "log": str(log)},
        headers={"X-Request-Timeout": "0.5"},
        timeout=20,
    )
    assert answer.status_code == 504
    assert answer.json()["deadline"] == "X-Request-Timeout"
    assert time.monotonic() - started < 2
    start, returned = wait_for(log, 2)
    assert returned["reason"] == "deadline"
    assert 0.4 < returned["at"] - start["at"] < 1.0
    began = time.monotonic()
    assert requests.post(server.url, json={"id": "next", "log": str(log)}, timeout=10).ok
    assert time.monotonic() - began < 0.5
    assert cancelled(server.url, "deadline") == 1


def test_a_streaming_predict_sees_the_client_leave(serve, tmp_path):
    server = serve("cancellable_stream")
    log = tmp_path / "events.jsonl"
    response = requests.post(server.url, json={"log": str(log)}, stream=True, timeout=10)
    lines = response.iter_lines()
    assert jsonlib.loads(next(lines)) == {"chunk": 1}
    hung_up = time.monotonic()
    response.close()
    (stopped,) = wait_for(log, 1)
    assert stopped["cancelled"] is True
    assert stopped["reason"] == "disconnect"
    assert stopped["at"] - hung_up < 0.5
    assert cancelled(server.url, "disconnect") == 1


def test_each_item_of_a_batch_has_its_own_cancelled(serve):
    server = serve("cancellable_batch", "--predict-concurrency", "1")
    answers: dict[str, requests.Response] = {}

    def send(name: str, headers: dict[str, str]) -> None:
        body: dict[str, Any] = {"id": name, "wait": 3}
        answers[name] = requests.post(server.url, json=body, headers=headers, timeout=20)

    started = time.monotonic()
    kept = threading.Thread(target=send, args=("kept", {}))
    kept.start()
    time.sleep(0.1)  # both join one batch (max_delay_ms 300); "short" ends at 0.6 s
    send("short", {"X-Request-Timeout": "0.6"})
    kept.join(10)
    assert answers["short"].status_code == 504
    assert answers["kept"].status_code == 200
    assert answers["kept"].json() == {"id": "kept", "batch": 2, "cancelled": False, "reason": None}
    assert time.monotonic() - started < 2  # predict returned when "short" was cancelled


def test_a_batch_drops_items_cancelled_while_it_gathered(serve):
    server = serve("cancellable_batch", "--predict-concurrency", "1")
    answers: dict[str, requests.Response] = {}

    def send(name: str, headers: dict[str, str]) -> None:
        answers[name] = requests.post(server.url, json={"id": name}, headers=headers, timeout=20)

    gone = threading.Thread(target=send, args=("gone", {"X-Request-Timeout": "0.15"}))
    gone.start()
    time.sleep(0.05)  # within the 300 ms the batch gathers; "gone" expires before it runs
    send("kept", {})
    gone.join(10)
    assert answers["gone"].status_code == 504
    assert answers["kept"].json() == {"id": "kept", "batch": 1, "cancelled": False, "reason": None}


# ---- in-process ---------------------------------------------------------------------------


class Poller:
    """predict polls ``cancelled`` for up to ``wait`` seconds and notes what happened."""

    def __init__(self) -> None:
        self.notes: list[tuple[str, str, Any, float]] = []

    def predict(self, json, cancelled):
        self.notes.append(("start", json["id"], None, time.monotonic()))
        end = time.monotonic() + json.get("wait", 0)
        while time.monotonic() < end and not cancelled.is_set():
            time.sleep(0.01)
        self.notes.append(("return", json["id"], cancelled.reason, time.monotonic()))
        return {"id": json["id"], "reason": cancelled.reason}


def metric_of(client: LocalClient, reason: str) -> float:
    return metric(client.get("/metrics").text, "openbayes_serving_cancelled_total", reason=reason)


def test_in_process_a_client_hanging_up_stops_predict_and_the_next_starts():
    with LocalClient(Poller, predict_concurrency=1) as client:
        hung_up_at = time.monotonic() + 0.3
        first, second = run(
            client,
            post(client.app, {"id": 1, "wait": 10}, hang_up_after=0.3),
            post(client.app, {"id": 2}, delay=0.1),
        )
        assert first.status is None  # nobody to answer
        assert second.status == 200
        notes = instance(client).notes
        assert [n[:3] for n in notes] == [
            ("start", 1, None),
            ("return", 1, "disconnect"),
            ("start", 2, None),
            ("return", 2, None),
        ]
        assert notes[1][3] - hung_up_at < 0.5
        assert notes[2][3] - hung_up_at < 0.5
        assert metric_of(client, "disconnect") == 1
        answered = 'openbayes_serving_requests_total{route="/",status="499"} 1.0'
        assert answered in client.get("/metrics").text.splitlines()


def test_in_process_the_deadline_sets_cancelled_and_answers_504():
    with LocalClient(Poller) as client:
        started = time.monotonic()
        answer = client.post(json={"id": 1, "wait": 10}, headers={"X-Request-Timeout": "0.3"})
        assert answer.status_code == 504
        assert time.monotonic() - started < 1.5
        notes = instance(client).notes
        for _ in range(100):  # the 504 may go out before predict has seen cancelled
            if len(notes) == 2:
                break
            time.sleep(0.01)
        assert notes[-1][:3] == ("return", 1, "deadline")
        assert notes[-1][3] - notes[0][3] < 0.5
        assert metric_of(client, "deadline") == 1
        assert metric_of(client, "disconnect") == 0


class BatchPoller:
    @serv.batch(max_batch_size=4, max_delay_ms=300)
    def predict(self, json, cancelled):
        assert isinstance(cancelled, list)
        assert len(cancelled) == len(json)
        end = time.monotonic() + max(item.get("wait", 0) for item in json)
        while time.monotonic() < end and not any(c.is_set() for c in cancelled):
            time.sleep(0.01)
        return [{"batch": len(json), "set": c.is_set()} for c in cancelled]


def test_in_process_batch_items_each_have_their_own_and_set_items_are_dropped():
    with LocalClient(BatchPoller, predict_concurrency=1) as client:
        kept, short = run(
            client,
            post(client.app, {"id": "kept", "wait": 3}),
            post(client.app, {"id": "short", "wait": 3}, {"X-Request-Timeout": "0.6"}, delay=0.1),
        )
        assert short.status == 504
        assert kept.json() == {"batch": 2, "set": False}
        gone, alone = run(
            client,
            post(client.app, {"id": "gone"}, hang_up_after=0.1),
            post(client.app, {"id": "alone"}, delay=0.05),
        )
        assert gone.status is None
        # "gone" left while the batch gathered (300 ms): predict never saw it
        assert alone.json() == {"batch": 1, "set": False}
        assert metric_of(client, "disconnect") == 1


class Stages:
    """Every stage asks for ``cancelled``; the answer says what each one got."""

    def preprocess(self, json, cancelled):
        return {"x": json["x"], "pre": cancelled}

    def predict(self, x, cancelled):
        return {**x, "predict": cancelled}

    def postprocess(self, y, cancelled):
        same = y["pre"] is y["predict"] is cancelled
        return {"x": y["x"], "same": same, "set": cancelled.is_set(), "wait": cancelled.wait(0)}


def test_every_stage_may_ask_for_cancelled_and_gets_the_same_one():
    spec = inspect_predictor(Stages, resolve_settings({}, [], {}))
    assert spec.has_preprocess
    assert spec.has_postprocess
    with LocalClient(Stages) as client:
        answer = client.post(json={"x": 3})
        assert answer.json() == {"x": 3, "same": True, "set": False, "wait": False}


class HelperStages:
    """``predict(self, json, cancelled)`` asks for the request: preprocess is its helper."""

    def preprocess(self, value):
        return value * 2

    def predict(self, json, cancelled):
        return {"y": self.preprocess(json["x"]), "set": cancelled.is_set()}


def test_cancelled_beside_a_request_name_keeps_preprocess_a_helper():
    spec = inspect_predictor(HelperStages, resolve_settings({}, [], {}))
    assert not spec.has_preprocess
    with LocalClient(HelperStages) as client:
        assert client.post(json={"x": 2}).json() == {"y": 4, "set": False}


class PostprocessTwo:
    def predict(self, x):
        return x

    def preprocess(self, json):
        return json

    def postprocess(self, y, other):
        return y


def test_a_postprocess_stage_with_another_extra_argument_is_still_refused():
    with pytest.raises(PredictorError, match="postprocess"):
        inspect_predictor(PostprocessTwo, resolve_settings({}, [], {}))


class Plain:
    def __init__(self) -> None:
        self.tasks: list[int] = []
        self.loop: asyncio.AbstractEventLoop | None = None

    def predict(self, json):
        assert self.loop is not None
        self.tasks.append(len(asyncio.all_tasks(self.loop)))
        return json


class Asking(Plain):
    def predict(self, json, cancelled=None):
        return super().predict(json)


def tasks_during_predict(cls: type) -> list[int]:
    with LocalClient(cls) as client:
        predictor = instance(client)
        predictor.loop = client._loop
        [answer] = run(client, post(client.app, {"a": 1}))
        assert answer.status == 200
        return predictor.tasks


def test_only_predictors_that_ask_for_cancelled_get_a_disconnect_watcher():
    plain = tasks_during_predict(Plain)
    assert tasks_during_predict(Asking) == [plain[0] + 1]  # the watcher, only when asked


class GivesUp:
    """predict raises once cancelled: the answer is the cancellation's, unless it is fatal."""

    def predict(self, json, cancelled):
        cancelled.wait(5)
        if json["fatal"]:
            raise serv.UnrecoverableError("the device is gone")
        raise RuntimeError("stopped because cancelled")


def test_an_error_raised_after_cancelled_answers_504_but_a_fatal_one_stays_fatal():
    with LocalClient(GivesUp) as client:
        calls: list[tuple[int, bool]] = []
        client.app.lifecycle.on_fatal = lambda code, drain: calls.append((code, drain))
        timeout = {"X-Request-Timeout": "0.2"}
        answer = client.post(json={"fatal": False}, headers=timeout)
        assert answer.status_code == 504
        assert answer.json()["deadline"] == "X-Request-Timeout"
        assert calls == []
        assert client.post(json={"fatal": True}, headers=timeout).status_code in (500, 504)
        for _ in range(100):  # the 504 may go out before predict raised
            if calls:
                break
            time.sleep(0.01)
            client.get("/healthz")  # runs the event loop, as a server's always runs
        assert calls == [(4, True)]
