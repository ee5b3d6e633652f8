"""Slow and broken clients: answered cleanly, never pinning the server."""

from __future__ import annotations

import contextlib
import select
import socket
import time

import pytest
import requests


def test_client_that_stalls_sending_its_body_gets_408_json(serve):
    server = serve("echo_json", "--request-timeout", "0.5")
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b'Content-Length: 100\r\n\r\n{"a":'
        )
        started = time.monotonic()
        answer = b""
        while b"\r\n\r\n" not in answer or not answer.rstrip().endswith(b"}"):
            data = sock.recv(4096)
            if not data:
                break
            answer += data
        assert time.monotonic() - started < 3
    assert answer.startswith(b"HTTP/1.1 408")
    assert b'"error":"the request body did not arrive within 0.5s"' in answer


def read_answer(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection."""
    answer = b""
    while data := sock.recv(4096):
        answer += data
    return answer


def test_client_that_trickles_its_headers_gets_408_json_and_is_closed(serve):
    server = serve("echo_json", "--request-timeout", "0.5")
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        started = time.monotonic()
        sock.sendall(b"POST / HTTP/1.1\r\nHost: x\r\n")
        for _ in range(30):  # a byte every 0.1 s does not extend the deadline
            if select.select([sock], [], [], 0.1)[0]:
                break
            sock.sendall(b"X")
        answer = read_answer(sock)
        assert time.monotonic() - started < 2.5
    assert answer.startswith(b"HTTP/1.1 408")
    assert answer.endswith(b'{"error":"the request head did not arrive within 0.5s"}')
    # Requests whose head arrives in pieces, but in time, are served as usual.
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        for piece in (b"POST / HTTP/1.1\r\nHost: x\r\n", b"Content-Type: application/json\r\n"):
            sock.sendall(piece)
            time.sleep(0.1)
        sock.sendall(b'Content-Length: 8\r\nConnection: close\r\n\r\n{"a": 1}')
        answer = read_answer(sock)
    assert answer.startswith(b"HTTP/1.1 200")
    assert answer.endswith(b'{"a":1}')


def connect(url: str) -> socket.socket:
    """A raw connection to the server at ``url``."""
    return socket.create_connection(("127.0.0.1", int(url.rsplit(":", 1)[1])), timeout=5)


TOO_LARGE = b'{"error":"the request line and headers are larger than 65536 bytes"}'


@pytest.mark.parametrize(
    "head",
    [
        b"POST / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 70_000,  # unfinished
        b"POST / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 70_000 + b"\r\n\r\n",
        b"GET /?q=" + b"a" * 70_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",  # a long URL
        b"POST / HTTP/1.1\r\nHost: x\r\n" + b"X-Many: 1234567890\r\n" * 4000 + b"\r\n",
    ],
    ids=["unfinished-header", "complete-header", "long-url", "many-headers"],
)
def test_request_head_over_64_kib_gets_431_json(shared_server, head):
    with connect(shared_server("echo_json")) as sock:
        sock.sendall(head)
        answer = read_answer(sock)
    assert answer.startswith(b"HTTP/1.1 431 Request Header Fields Too Large\r\n")
    assert answer.endswith(TOO_LARGE)


def test_request_head_over_64_kib_in_smaller_pieces_gets_431_json(shared_server):
    with connect(shared_server("echo_json")) as sock:
        sock.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nX-A: " + b"a" * 40_000 + b"\r\n")
        time.sleep(0.2)  # two reads of 40 KB each, neither over the limit alone
        sock.sendall(b"X-B: " + b"b" * 40_000 + b"\r\nContent-Length: 2\r\n\r\n{}")
        answer = read_answer(sock)
    assert answer.startswith(b"HTTP/1.1 431 Request Header Fields Too Large\r\n")
    assert answer.endswith(TOO_LARGE)


def test_client_sending_megabytes_of_header_is_cut_off_after_64_kib(shared_server):
    url = shared_server("echo_json")
    with connect(url) as sock:
        sock.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nX-Big: ")
        with contextlib.suppress(OSError):  # the server may close before all of it is sent
            for _ in range(100):
                sock.sendall(b"a" * 100_000)
        answer = read_answer(sock)
    assert answer.endswith(TOO_LARGE)
    # A big head under the limit is still served.
    cookie = "c" * 30_000
    rv = requests.post(url, json={"ok": 1}, headers={"Cookie": cookie}, timeout=5)
    assert rv.status_code == 200


def test_malformed_request_gets_400_json(shared_server):
    with connect(shared_server("echo_json")) as sock:
        sock.sendall(b"NOT HTTP AT ALL\r\n\r\n")
        answer = read_answer(sock)
    assert answer.startswith(b"HTTP/1.1 400 Bad Request\r\ncontent-type: application/json")
    assert answer.endswith(b'{"error":"invalid HTTP request"}')


def test_connection_that_sends_nothing_is_closed_after_keepalive(serve):
    server = serve("echo_json", "--keepalive", "1")
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        started = time.monotonic()
        assert read_answer(sock) == b""
        assert 0.8 <= time.monotonic() - started < 3


def test_many_stalled_clients_do_not_block_a_good_one(serve):
    server = serve("echo_json", "--request-timeout", "10")
    stalled = []
    for _ in range(50):
        sock = socket.create_connection(("127.0.0.1", server.port), timeout=5)
        sock.sendall(
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 10\r\n\r\n"
        )
        stalled.append(sock)
    try:
        started = time.monotonic()
        assert requests.post(server.url, json={"ok": 1}, timeout=5).json() == {"ok": 1}
        assert time.monotonic() - started < 1
    finally:
        for sock in stalled:
            sock.close()


def test_client_that_leaves_mid_body_does_not_break_the_server(serve):
    server = serve("echo_json")
    for _ in range(5):
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
            sock.sendall(
                b"POST / HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                b"Content-Length: 1000\r\n\r\n{"
            )
    assert requests.post(server.url, json={"still": "up"}, timeout=5).json() == {"still": "up"}
