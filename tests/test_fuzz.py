"""Property-based fuzzing of the HTTP layer against a running server.

Whatever a client sends, the runtime answers 2xx or 4xx (never a 5xx of its own), stays
up, and its memory stays bounded. CI runs a bounded number of examples; for a longer run:
``FUZZ_EXAMPLES=5000 .venv/bin/python -m pytest tests/test_fuzz.py``.
"""

from __future__ import annotations

import os
import socket

import msgpack
import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "150"))
CONTENT_TYPES = st.sampled_from(
    [
        "application/json",
        "application/msgpack",
        "application/x-msgpack",
        "application/vnd.messagepack",
        "application/octet-stream",
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
        "application/json; charset=latin-1",
        "",
    ]
)
ACCEPTS = st.one_of(
    st.sampled_from(["", "*/*", "application/json", "application/msgpack", "text/html", "image/*"]),
    # requests refuses header values with leading or trailing whitespace before sending
    st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=60).map(
        str.strip
    ),
)
JSONISH = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)  # what MessagePack can carry
    | st.floats(allow_nan=False)
    | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=8), inner, max_size=5)
    ),
    max_leaves=20,
)
BODIES = st.one_of(
    st.binary(max_size=512),
    JSONISH.map(lambda v: requests.models.complexjson.dumps(v).encode()),
    JSONISH.map(lambda v: msgpack.packb(v)),
    st.sampled_from(
        [
            b"[" * 5000,
            b"\x91" * 5000 + b"\xc0",
            b"\xdd\xff\xff\xff\xff",
            b'{"a":',
            b"[" * 300 + b"]" * 300,  # decodes, deeper than an answer can be
            b"\x91" * 300 + b"\xc0",
            msgpack.packb(msgpack.Timestamp(1, 2)),
            msgpack.packb([msgpack.ExtType(5, b"x")]),
            msgpack.packb({b"key": 1}, use_bin_type=True),
        ]
    ),
)
HEADER_TEXT = st.text(alphabet=st.characters(min_codepoint=33, max_codepoint=126), max_size=40)


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def worker_pid(master: int) -> int:
    with open(f"/proc/{master}/task/{master}/children") as children:
        return int(children.read().split()[0])


@pytest.fixture(scope="module")
def fuzz_target(shared_server):
    return shared_server("inject_all", "--max-body-size", "4096")


@pytest.fixture(scope="module")
def session():
    with requests.Session() as session:
        yield session


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    body=BODIES,
    content_type=CONTENT_TYPES,
    accept=ACCEPTS,
    query=st.lists(st.tuples(HEADER_TEXT, st.text(max_size=20)), max_size=4),
    header=HEADER_TEXT,
    method=st.sampled_from(["POST", "POST", "POST", "GET", "PUT", "OPTIONS", "PATCH"]),
)
def test_any_request_gets_2xx_or_4xx_with_json_errors(
    fuzz_target, session, body, content_type, accept, query, header, method
):
    headers = {"X-Custom": header}
    if content_type:
        headers["Content-Type"] = content_type
    if accept:
        headers["Accept"] = accept
    rv = session.request(method, fuzz_target, data=body, headers=headers, params=query, timeout=10)
    assert rv.status_code < 500, rv.text
    if rv.status_code >= 400:
        assert "error" in rv.json()


def test_raw_garbage_on_the_socket_never_kills_the_server(fuzz_target):
    host, port = fuzz_target.removeprefix("http://").split(":")
    for garbage in [
        b"\x00\xff" * 100,
        b"GET / HTTP/9.9\r\n\r\n",
        b"POST / HTTP/1.1\r\nContent-Length: -5\r\n\r\n",
        b"POST / HTTP/1.1\r\n" + b"X: " + b"a" * 100_000 + b"\r\n\r\n",
    ]:
        with socket.create_connection((host, int(port)), timeout=5) as sock:
            sock.sendall(garbage)
            try:
                sock.recv(1024)
            except (ConnectionResetError, socket.timeout):
                pass
    assert requests.get(fuzz_target + "/healthz", timeout=5).status_code == 200


def test_memory_stays_bounded_under_bad_and_good_requests(serve):
    server = serve("inject_all", "--max-body-size", "4096")
    pid = worker_pid(server.proc.pid)
    good = msgpack.packb({"k": "v" * 1000})
    with requests.Session() as session:
        for _ in range(100):  # warm up: allocator pools, caches
            session.post(
                server.url, data=good, headers={"Content-Type": "application/msgpack"}, timeout=10
            )
        before = rss_kib(pid)
        for i in range(1000):
            if i % 2:
                session.post(
                    server.url,
                    data=good,
                    headers={"Content-Type": "application/msgpack"},
                    timeout=10,
                )
            else:
                session.post(
                    server.url,
                    data=b"{bad",
                    headers={"Content-Type": "application/json"},
                    timeout=10,
                )
        after = rss_kib(pid)
    assert after - before < 8 * 1024  # KiB over 1000 requests: nothing kept per request


DEEP_JSON = b"[" * 129 + b"]" * 129
DEEP_MSGPACK = b"\x91" * 129 + b"\xc0"


@pytest.mark.parametrize(
    ("body", "content_type", "error"),
    [
        (DEEP_JSON, "application/json", "it nests deeper than 128 levels"),
        (b'{"a":' * 200 + b"1" + b"}" * 200, "application/json", "it nests deeper than 128"),
        (DEEP_MSGPACK, "application/msgpack", "it nests deeper than 128 levels"),
        (
            msgpack.packb({"at": msgpack.Timestamp(1, 2)}),
            "application/msgpack",
            "it holds a MessagePack Timestamp, which is not supported",
        ),
        (
            msgpack.packb([msgpack.ExtType(5, b"x")]),
            "application/msgpack",
            "extension type (5), which is not supported",
        ),
        (
            msgpack.packb({b"key": 1}, use_bin_type=True),
            "application/msgpack",
            "its map keys must be strings",
        ),
    ],
    ids=["json-129", "json-objects-200", "msgpack-129", "timestamp", "ext", "bytes-key"],
)
def test_a_body_no_answer_could_hold_is_refused_when_decoded(
    fuzz_target, session, body, content_type, error
):
    for accept in ("application/json", "application/msgpack"):
        rv = session.post(
            fuzz_target,
            data=body,
            headers={"Content-Type": content_type, "Accept": accept},
            timeout=10,
        )
        assert rv.status_code == 400
        assert error in rv.json()["error"]


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (b"[" * 128 + b"]" * 128, "application/json"),
        (b"\x91" * 128 + b"\xc0", "application/msgpack"),
        (
            msgpack.packb({"bin": b"\x00\xff" * 100, "n": [2**64 - 1, -(2**63)]}),
            "application/msgpack",
        ),
    ],
    ids=["json-128", "msgpack-128", "msgpack-bin"],
)
def test_what_the_decoder_accepts_is_answered_in_either_format(
    fuzz_target, session, body, content_type
):
    for accept in ("application/json", "application/msgpack"):
        rv = session.post(
            fuzz_target,
            data=body,
            headers={"Content-Type": content_type, "Accept": accept},
            timeout=10,
        )
        assert rv.status_code == 200, rv.text
