"""Admission from the request's head: refusals cost no body, bodies held are bounded."""

from __future__ import annotations

import socket
import time

import orjson
import requests
from conftest import post_in_background, wait_for_load


def head(port: int, length: int, body: bytes = b"") -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    sock.sendall(
        b"POST / HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (length, body)
    )
    return sock


def answer(sock: socket.socket) -> tuple[int, dict]:
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(65536)
    top, _, rest = data.partition(b"\r\n\r\n")
    length = next(
        int(line.split(b":")[1])
        for line in top.split(b"\r\n")
        if line.lower().startswith(b"content-length")
    )
    while len(rest) < length:
        rest += sock.recv(65536)
    return int(top.split(b" ")[1]), orjson.loads(rest[:length])


def test_a_request_the_full_queue_refuses_gets_503_before_sending_its_body(serve):
    server = serve("sleeper", "--predict-concurrency", "1", "--max-queue", "0")
    busy = post_in_background(server.url, {"id": 1, "sleep": 2})
    wait_for_load(server.url, running=1)
    started = time.monotonic()
    with head(server.port, 32 * 1024 * 1024) as sock:  # 32 MiB announced, none sent
        status, body = answer(sock)
    assert status == 503
    assert "overloaded" in body["error"]
    assert time.monotonic() - started < 0.5
    busy.join(10)


def test_bodies_held_beyond_the_memory_budget_are_refused_with_503(serve):
    server = serve("echo_json", "--max-body-memory", "1000000")
    payload = b'{"a": "' + b"x" * 899_991 + b'"}'
    assert len(payload) == 900_000
    with head(server.port, len(payload), payload[:1000]) as slow:  # admitted, then stalls
        time.sleep(0.3)
        with head(server.port, 200_000) as second:
            status, body = answer(second)
        assert status == 503
        assert "MiB of request bodies" in body["error"]
        slow.sendall(payload[1000:])
        assert answer(slow)[0] == 200
    assert requests.post(server.url, json={"b": 1}, timeout=5).json() == {"b": 1}


def test_a_request_that_would_wait_past_max_queue_wait_gets_503_at_once(serve):
    server = serve(
        "sleeper", "--predict-concurrency", "1", "--max-queue-wait", "0.15", "--max-queue", "500"
    )
    for i in range(16):  # the first 16 calls time predict: 0.1 s each, or more when loaded
        assert requests.post(server.url, json={"id": i, "sleep": 0.1}, timeout=10).ok
    # One runs and one waits (the first to wait is always let in, whatever the estimate):
    # a third would wait (1 + 1) x at least 0.1 s, past 0.15 s.
    busy = [post_in_background(server.url, {"id": 100 + i, "sleep": 0.8}) for i in range(2)]
    wait_for_load(server.url, running=1, waiting=1)
    started = time.monotonic()
    refused = requests.post(server.url, json={"id": 200}, timeout=10)
    assert time.monotonic() - started < 0.5
    assert refused.status_code == 503
    assert refused.headers["retry-after"]
    assert "would wait about" in refused.json()["error"]
    for thread in busy:
        thread.join(10)
    ran = requests.post(server.url, json={"ran": True}, timeout=10).json()["ran"]
    assert 200 not in ran
