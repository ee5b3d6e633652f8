"""Slow and broken clients: answered cleanly, never pinning the server."""

from __future__ import annotations

import contextlib
import os
import resource
import select
import socket
import time

import orjson
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


def test_client_that_leaves_mid_body_does_not_break_the_server(shared_server):
    url = shared_server("echo_json")
    for _ in range(5):
        with connect(url) as sock:
            sock.sendall(
                b"POST / HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                b"Content-Length: 1000\r\n\r\n{"
            )
    assert requests.post(url, json={"still": "up"}, timeout=5).json() == {"still": "up"}


@pytest.fixture
def many_files() -> int:
    """Raise this process's open-files limit (servers started after inherit it).

    Returns how many connections a test may hold: 600, or fewer where the hard limit
    leaves less room for both ends of every connection.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = 4096 if hard == resource.RLIM_INFINITY else min(hard, 4096)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    usable = wanted if soft == resource.RLIM_INFINITY or soft < wanted else soft
    return max(50, min(600, usable // 2 - 100))


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def worker_pid(master: int) -> int:
    with open(f"/proc/{master}/task/{master}/children") as children:
        return int(children.read().split()[0])


UNREAD_BODIES = {
    # a route that reads no body, a request refused before its body, a body too large
    "healthz": b"GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n",
    "no-key": b"POST / HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
    b"Content-Length: 100\r\n\r\n",
    "too-large": b"POST / HTTP/1.1\r\nHost: x\r\nX-API-Key: k\r\nContent-Type: application/json\r\n"
    b"Content-Length: 100000\r\n\r\n",
}


def test_answers_sent_before_the_body_arrived_close_every_connection(serve, many_files):
    # Each client sends a head, reads the answer, sends one byte of its body, then
    # nothing: the byte used to cancel the keep-alive timer and hold the connection open
    # for good (600 of 600 still open after 60 s).
    server = serve("echo_json", "--api-key", "k", "--max-body-size", "1000")
    worker = worker_pid(server.proc.pid)
    baseline = open_fds(worker)
    kinds = list(UNREAD_BODIES)
    socks = []
    try:
        for i in range(many_files):
            sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
            sock.sendall(UNREAD_BODIES[kinds[i % len(kinds)]])
            socks.append(sock)
        answers: dict[socket.socket, bytes] = {sock: b"" for sock in socks}
        open_socks = set(socks)
        deadline = time.monotonic() + 20
        while open_socks and time.monotonic() < deadline:
            for sock in select.select(list(open_socks), [], [], 0.5)[0]:
                try:
                    data = sock.recv(65536)
                except ConnectionResetError:
                    data = b""
                if data and not answers[sock]:
                    with contextlib.suppress(OSError):
                        sock.sendall(b"x")  # one body byte after the answer, then silence
                answers[sock] += data
                if not data:  # the server closed its side: no more requests on this one
                    open_socks.discard(sock)
        assert not open_socks, f"{len(open_socks)} of {len(socks)} connections still open"
        statuses = {
            kind: {answers[sock].split(b" ", 2)[1] for sock in socks[i :: len(kinds)]}
            for i, kind in enumerate(kinds)
        }
        assert statuses == {"healthz": {b"200"}, "no-key": {b"401"}, "too-large": {b"413"}}
        assert all(b"\r\nconnection: close\r\n" in answer for answer in answers.values())
        # The server lets go of every socket after the linger, though the clients hold
        # theirs open: no connection outlives request_timeout + keepalive.
        deadline = time.monotonic() + 10
        while open_fds(worker) > baseline + 10 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert open_fds(worker) <= baseline + 10
    finally:
        for sock in socks:
            sock.close()


def read_response(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """One answer from ``sock``: the status, headers (lower-case names) and body."""
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(65536)
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.lower().split(": ", 1) for line in lines[1:])
    while len(body) < int(headers.get("content-length", "0")):
        body += sock.recv(65536)
    return int(lines[0].split()[1]), headers, body


def raw_answer(url: str, request: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send ``request`` as is on a new connection; the answer."""
    with connect(url) as sock:
        sock.sendall(request)
        return read_response(sock)


def test_an_answer_to_a_whole_unread_body_keeps_the_connection(shared_server):
    with connect(shared_server("echo_json")) as sock:
        for _ in range(3):
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}")
            status, headers, _ = read_response(sock)
            assert status == 200
            assert "connection" not in headers


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        pytest.param(
            b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Openbayes-Serving-Request-Id: \xb2\r\n\r\n",
            200,
            id="non-ascii-platform-request-id",
        ),
        pytest.param(
            b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Request-Id: \xc3\xa9\xe2\x82\xac\r\n\r\n",
            200,
            id="non-ascii-request-id",
        ),
        pytest.param(
            b"GET /ui/" + b"a" * 300 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 404, id="ui-name-300"
        ),
        pytest.param(b"GET /ui/%00 HTTP/1.1\r\nHost: x\r\n\r\n", 404, id="ui-name-nul"),
        pytest.param(
            b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
            200,
            id="websocket-upgrade",
        ),
    ],
)
def test_odd_headers_and_names_get_json_answers_never_a_plain_500(
    shared_server, request_bytes, status
):
    got, headers, body = raw_answer(shared_server("echo_json"), request_bytes)
    assert got == status
    assert headers["content-type"] == "application/json"
    orjson.loads(body)


def test_a_client_request_id_cannot_forge_log_text(serve):
    server = serve("raises")
    forged = "x] ERROR fake.logger: forged line " + "z" * 300
    rv = requests.post(server.url, json={}, headers={"X-Request-Id": forged}, timeout=5)
    assert rv.status_code == 500
    request_id = rv.headers["x-request-id"]
    assert request_id == ("xERRORfake.logger:forgedline" + "z" * 300)[:128]
    assert rv.json()["request_id"] == request_id
    deadline = time.monotonic() + 5
    while f"[{request_id}]" not in server.log() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert f"[{request_id}] openbayes_serving.app: predict failed" in server.log()
    assert "forged line" not in server.log()


def test_api_key_only_as_bearer_token_or_x_api_key(shared_server):
    url = shared_server("echo_json", "--api-key", "s3cret")
    for headers, status in [
        ({"Authorization": "Bearer s3cret"}, 200),
        ({"Authorization": "bearer s3cret"}, 200),
        ({"X-API-Key": "s3cret"}, 200),
        ({"Authorization": "Basic abc", "X-API-Key": "s3cret"}, 200),
        ({"Authorization": "s3cret"}, 401),  # the key without its scheme
        ({"Authorization": "Basic s3cret"}, 401),
        ({"X-API-Key": "Bearer s3cret"}, 401),
        ({}, 401),
    ]:
        rv = requests.post(url, json={"a": 1}, headers=headers, timeout=5)
        assert rv.status_code == status, headers
        if status == 401:
            assert rv.headers["www-authenticate"] == "Bearer"
            assert rv.json()["error"].startswith("missing or wrong API key")


def test_no_answer_names_the_server_stack(shared_server):
    url = shared_server("echo_json")
    for rv in (
        requests.get(url + "/healthz", timeout=5),
        requests.post(url, json={"a": 1}, timeout=5),
        requests.get(url + "/nope", timeout=5),
    ):
        assert "server" not in rv.headers
