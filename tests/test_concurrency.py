"""Predict concurrency over HTTP (auto and pinned), and requests that come while loading."""

from __future__ import annotations

import concurrent.futures
import socket
import time

import requests

CLIENTS = 32


def hammer(url: str, seconds: float, body: dict) -> list[requests.Response]:
    """``CLIENTS`` closed-loop clients for ``seconds``; every answer."""
    stop = time.monotonic() + seconds

    def client() -> list[requests.Response]:
        answers = []
        with requests.Session() as session:
            while time.monotonic() < stop:
                answers.append(session.post(url, json=body, timeout=30))
        return answers

    with concurrent.futures.ThreadPoolExecutor(CLIENTS) as pool:
        return [rv for answers in pool.map(lambda _: client(), range(CLIENTS)) for rv in answers]


def test_by_default_an_io_bound_predict_runs_8_or_more_at_once_within_2_seconds(serve):
    server = serve("io_bound")
    answers = hammer(server.url, 2.0, {"sleep": 0.05})
    assert {rv.status_code for rv in answers} == {200}
    assert max(rv.json()["peak"] for rv in answers) >= 8
    metrics = requests.get(f"{server.url}/metrics", timeout=5).text
    limit = next(
        float(line.split()[-1])
        for line in metrics.splitlines()
        if line.startswith("openbayes_serving_predict_concurrency ")
    )
    assert limit >= 7


def test_an_explicit_predict_concurrency_of_1_is_never_exceeded(serve):
    server = serve("io_bound", "--predict-concurrency", "1")
    answers = hammer(server.url, 1.0, {"sleep": 0.02})
    assert {rv.status_code for rv in answers} == {200}
    assert max(rv.json()["peak"] for rv in answers) == 1


def wait_for_port(port: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.02)
    raise AssertionError("the port never opened")


def test_a_request_sent_while_the_model_loads_is_answered_once_it_is_ready(serve):
    server = serve("slow_init", ready=False, env={"SLOW_INIT": "2"})
    wait_for_port(server.port)
    started = time.monotonic()
    assert requests.get(f"{server.url}/healthz", timeout=5).status_code == 200
    assert requests.get(f"{server.url}/readyz", timeout=5).status_code == 503
    assert time.monotonic() - started < 1.0  # probes never wait
    rv = requests.post(server.url, json={"a": 1}, timeout=30)
    assert rv.status_code == 200
    assert rv.json() == {"ok": True, "echo": {"a": 1}}
    assert requests.get(server.url, timeout=5).status_code == 200


def test_requests_waiting_for_the_model_count_against_the_queue_and_the_timeout(serve):
    server = serve(
        "slow_init",
        "--max-queue",
        "1",
        "--request-timeout",
        "1",
        ready=False,
        env={"SLOW_INIT": "3"},
    )
    wait_for_port(server.port)
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        first = pool.submit(requests.post, server.url, json={}, timeout=30)
        time.sleep(0.3)
        second = requests.post(server.url, json={}, timeout=30)
        assert second.status_code == 503
        assert "loading" in second.json()["error"]
        assert first.result().status_code == 504  # the model took 3 s, the request 1 s
