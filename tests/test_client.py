"""The HTTP client against a small stdlib server that follows the runtime's HTTP contract."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import msgpack
import pytest
import requests
from conftest import PREDICTORS, launch, post_in_background, wait_for_load
from fakes import FAKE_WAIT, FakeHandler, FakeServer, png_bytes, running

from openbayes_serving import Client, PredictError


class FakeError(Exception):
    """What the fake predictor raises to answer with an error status."""

    def __init__(self, status: int, body: dict[str, Any]) -> None:
        super().__init__(body.get("error"))
        self.status = status
        self.body = body


def fake_predict(payload: Any, params: dict[str, str]) -> Any:
    """The fake runtime's predictor: behaviour chosen by query parameters."""
    if "status" in params:
        raise FakeError(int(params["status"]), {"hint": "teapot", "error": params["message"]})
    if "fail" in params:
        raise FakeError(
            500,
            {
                "error": "RuntimeError: boom",
                "traceback": 'Traceback (most recent call last):\n  File "predictor.py", '
                "line 3, in predict\nRuntimeError: boom\n",
            },
        )
    if params.get("kind") == "text":
        return "héllo wörld"
    if params.get("kind") == "png":
        return png_bytes()
    if params.get("kind") == "mixed":
        return iter([{"i": 0}, "plain", "two\nlines", [1, 2]])
    if "chunks" in params:
        count = int(params["chunks"])
        if "text" in params:
            return (f"piece {i} " for i in range(count))
        return ({"i": i} for i in range(count))
    if isinstance(payload, bytes):
        return payload
    return {"payload": payload, "params": params}


class FakeRuntime(FakeServer):
    """A stdlib HTTP server that answers as openbayes-serving does."""

    def __init__(self) -> None:
        super().__init__(FakeRuntimeHandler)
        self.ready = True
        self.received: list[tuple[dict[str, str], bytes]] = []
        self.arrivals: list[float] = []  # time.monotonic() of each POST
        self.request_ids: list[str] = []
        self.client_left = threading.Event()


class FakeRuntimeHandler(FakeHandler):
    """One connection to the fake runtime; keep-alive and chunked, like the real one."""

    server: FakeRuntime

    def do_GET(self) -> None:
        path = urlsplit(self.path).path
        if path == "/healthz":
            self.answer(200, "application/json", b'{"status":"ok"}')
        elif path == "/readyz" and self.server.ready:
            self.answer(200, "application/json", b'{"status":"ready"}')
        elif path == "/readyz":
            body = b'{"error":"not ready"}'
            self.answer(503, "application/json", body, {"Retry-After": "1"})
        else:
            self.answer(404, "application/json", b'{"error":"not found"}')

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.server.received.append((dict(self.headers.items()), body))
        self.server.arrivals.append(time.monotonic())
        params = dict(parse_qsl(urlsplit(self.path).query))
        accept = self.headers.get("Accept") or ""
        if "plain_error" in params:
            self.answer(502, "text/html", b"<h1>Bad gateway</h1>")
            return
        if len(self.server.received) <= int(params.get("busy", 0)):  # the first N are refused
            extra = {"Retry-After": params["retry_after"]} if "retry_after" in params else {}
            self.answer(503, "application/json", b'{"error":"queue full"}', extra)
            return
        if "drop" in params:  # the request arrived, the connection breaks before an answer
            self.close_connection = True
            return
        try:
            result = fake_predict(self._decode(body), params)
        except FakeError as exc:
            self.answer(exc.status, "application/json", json.dumps(exc.body).encode())
            return
        if isinstance(result, Iterator):
            self._stream(result, sse="text/event-stream" in accept, params=params)
        elif isinstance(result, str):
            self.answer(200, "text/plain; charset=utf-8", result.encode())
        elif isinstance(result, bytes):
            kind = "image/png" if result.startswith(b"\x89PNG") else "application/octet-stream"
            self.answer(200, kind, result)
        elif "msgpack" in accept:
            self.answer(200, "application/msgpack", msgpack.packb(result))
        else:
            text = json.dumps(result, ensure_ascii=False)
            self.answer(200, "application/json", text.encode())

    def _decode(self, body: bytes) -> Any:
        kind = (self.headers.get("Content-Type") or "").split(";")[0]
        if kind == "application/json":
            return json.loads(body)
        if kind == "application/msgpack":
            return msgpack.unpackb(body, raw=False)
        return body

    def new_request_id(self) -> str:
        """A fresh id, kept for the tests to compare."""
        request_id = super().new_request_id()
        self.server.request_ids.append(request_id)
        return request_id

    def _stream(self, chunks: Iterator[Any], sse: bool, params: dict[str, str]) -> None:
        if sse:
            kind = "text/event-stream"
        elif "text" in params:
            kind = "text/plain; charset=utf-8"
        else:
            kind = "application/x-ndjson"
        self.start_answer(200, kind, {"Transfer-Encoding": "chunked"})
        try:
            for index, chunk in enumerate(chunks):
                self.send_chunk(_frame(chunk, sse))
                if index == 0 and "gate" in params:
                    self.server.gate_opened_in_time = self.server.gate.wait(FAKE_WAIT)
            if "sse_error" in params:
                self.send_chunk(b'event: error\ndata: {"error": "generator failed"}\n\n')
            if "endless" in params:
                for _ in range(10_000):  # until the client leaves; bounded all the same
                    self.send_chunk(b'{"more": true}\n' * 64)
            self.wfile.write(b"0\r\n\r\n")
        except OSError:
            self.server.client_left.set()
            self.close_connection = True


def _frame(chunk: Any, sse: bool) -> bytes:
    """Frame one chunk as the runtime does: raw text, an NDJSON line, or an SSE event."""
    text = chunk if isinstance(chunk, str) else json.dumps(chunk)
    if sse:
        return ("".join(f"data: {line}\n" for line in text.split("\n")) + "\n").encode()
    return text.encode() if isinstance(chunk, str) else text.encode() + b"\n"


@pytest.fixture
def fake() -> Iterator[FakeRuntime]:
    with running(FakeRuntime()) as server:
        yield server


@pytest.fixture
def client(fake: FakeRuntime) -> Iterator[Client]:
    with Client(fake.url, timeout=FAKE_WAIT) as client:
        yield client


def unused_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_predict_sends_json_with_params_and_returns_the_decoded_answer(client, fake):
    answer = client.predict(json={"text": "héllo", "n": [1, 2]}, params={"lang": "fr"})

    assert answer == {"payload": {"text": "héllo", "n": [1, 2]}, "params": {"lang": "fr"}}
    headers, body = fake.received[-1]
    assert headers["Content-Type"] == "application/json"
    assert headers["Accept"] == "application/json"
    assert json.loads(body.decode("utf-8")) == {"text": "héllo", "n": [1, 2]}
    assert "héllo".encode() in body


def test_predict_with_msgpack_sends_and_accepts_msgpack_and_keeps_bytes(client, fake):
    answer = client.predict(json={"blob": b"\x00\xff", "n": 1}, msgpack=True)

    assert answer == {"payload": {"blob": b"\x00\xff", "n": 1}, "params": {}}
    headers, body = fake.received[-1]
    assert headers["Content-Type"] == "application/msgpack"
    assert headers["Accept"] == "application/msgpack"
    assert msgpack.unpackb(body) == {"blob": b"\x00\xff", "n": 1}


def test_predict_returns_str_for_a_text_answer(client):
    assert client.predict(json={}, params={"kind": "text"}) == "héllo wörld"


def test_predict_sends_raw_bytes_with_their_content_type_and_returns_bytes(client, fake):
    image = png_bytes()

    answer = client.predict(data=image, content_type="image/png")

    assert answer == image
    headers, body = fake.received[-1]
    assert headers["Content-Type"] == "image/png"
    assert body == image


def test_predict_guesses_the_content_type_of_a_file_from_its_name(client, fake, tmp_path: Path):
    path = tmp_path / "photo.png"
    path.write_bytes(png_bytes())

    with path.open("rb") as file:
        answer = client.predict(data=file)

    assert answer == png_bytes()
    assert fake.received[-1][0]["Content-Type"] == "image/png"


def test_predict_returns_the_lines_of_a_streamed_answer_as_a_list(client):
    assert client.predict(json={}, params={"chunks": "3"}) == [{"i": 0}, {"i": 1}, {"i": 2}]


def test_predict_rejects_json_and_data_together(client):
    with pytest.raises(ValueError, match="either json or data"):
        client.predict(json={}, data=b"x")


def test_client_raises_predict_error_with_status_body_and_request_id(client, fake):
    with pytest.raises(PredictError) as info:
        client.predict(json={}, params={"status": "418", "message": "no coffee"})

    error = info.value
    assert error.status_code == 418
    assert error.body == {"hint": "teapot", "error": "no coffee"}
    assert error.request_id == fake.request_ids[-1]
    assert str(error) == f"HTTP 418: no coffee (request id {fake.request_ids[-1]})"


def test_predict_error_carries_the_server_traceback_but_prints_only_the_message(client):
    with pytest.raises(PredictError) as info:
        client.predict(json={}, params={"fail": "1"})

    assert info.value.status_code == 500
    assert info.value.traceback is not None
    assert "RuntimeError: boom" in info.value.traceback
    assert "Traceback" not in str(info.value)
    assert "RuntimeError: boom" in str(info.value)


def test_predict_error_keeps_a_body_that_is_not_json_as_text(client):
    with pytest.raises(PredictError) as info:
        client.predict(json={}, params={"plain_error": "1"})

    assert info.value.status_code == 502
    assert info.value.body == "<h1>Bad gateway</h1>"
    assert "HTTP 502: <h1>Bad gateway</h1>" in str(info.value)


def test_stream_yields_ndjson_lines_as_dicts(client, fake):
    with client.stream(json={}, params={"chunks": "3"}) as chunks:
        assert chunks.content_type == "application/x-ndjson"
        assert chunks.request_id == fake.request_ids[-1]
        assert list(chunks) == [{"i": 0}, {"i": 1}, {"i": 2}]
    assert "application/x-ndjson" in fake.received[-1][0]["Accept"]


def test_stream_with_sse_parses_json_events_and_keeps_text_events_as_str(client, fake):
    chunks = list(client.stream(json={}, params={"kind": "mixed"}, sse=True))

    assert chunks == [{"i": 0}, "plain", "two\nlines", [1, 2]]
    assert fake.received[-1][0]["Accept"].startswith("text/event-stream")


def test_stream_of_text_yields_str_pieces(client):
    pieces = list(client.stream(json={}, params={"chunks": "3", "text": "1"}))

    assert "".join(pieces) == "piece 0 piece 1 piece 2 "
    assert all(isinstance(piece, str) for piece in pieces)


def test_stream_yields_each_chunk_before_the_server_sends_the_next(client, fake):
    # The server holds the second chunk back until the test has the first one.
    with client.stream(json={}, params={"chunks": "3", "gate": "1"}) as chunks:
        first = next(chunks)
        fake.gate.set()
        rest = list(chunks)

    assert first == {"i": 0}
    assert rest == [{"i": 1}, {"i": 2}]
    assert fake.gate_opened_in_time is True


def test_stream_raises_predict_error_at_an_sse_error_event(client, fake):
    chunks = client.stream(json={}, params={"chunks": "1", "sse_error": "1"}, sse=True)

    assert next(chunks) == {"i": 0}
    with pytest.raises(PredictError, match="generator failed") as info:
        next(chunks)
    assert info.value.request_id == fake.request_ids[-1]


def test_stream_raises_predict_error_before_iterating_when_the_status_is_an_error(client):
    with pytest.raises(PredictError) as info:
        client.stream(json={}, params={"status": "400", "message": "bad input"})

    assert info.value.status_code == 400
    assert info.value.message == "bad input"


def test_closing_a_stream_early_drops_the_connection(client, fake):
    chunks = client.stream(json={}, params={"chunks": "1", "endless": "1"})
    assert next(chunks) == {"i": 0}

    chunks.close()

    assert fake.client_left.wait(FAKE_WAIT)


def test_health_and_ready_follow_the_probes(fake):
    with Client(fake.url, timeout=FAKE_WAIT, max_retries=0) as client:
        assert client.health() is True
        assert client.ready() is True

        fake.ready = False

        assert client.ready() is False
        assert client.health() is True


def test_health_is_false_when_nothing_listens():
    with Client(f"http://127.0.0.1:{unused_port()}", timeout=FAKE_WAIT, max_retries=0) as client:
        assert client.health() is False
        assert client.ready() is False


def test_client_sends_the_api_key_as_a_bearer_token(fake):
    with Client(fake.url, timeout=FAKE_WAIT, api_key="s3cret") as client:
        client.predict(json={})

    assert fake.received[-1][0]["Authorization"] == "Bearer s3cret"


# ---- deadlines and retries ----------------------------------------------------------------


def test_predict_and_stream_send_their_deadline_as_x_request_timeout(fake):
    def sent() -> float:
        return float(fake.received[-1][0]["X-Request-Timeout"])

    with Client(fake.url, timeout=2.5) as client:
        client.predict(json={})
        assert 2.0 < sent() <= 2.5  # the time left when the request went out
        client.predict(json={}, timeout=0.75)
        assert 0.25 < sent() <= 0.75
        list(client.stream(json={}, params={"chunks": "1"}, timeout=(1, 4)))
        assert 3.5 < sent() <= 4
        client.predict(json={}, headers={"X-Request-Timeout": "9"})  # the caller's header wins
        assert sent() == 9
    with Client(fake.url, timeout=None) as client:
        client.predict(json={})
        assert "X-Request-Timeout" not in fake.received[-1][0]


def test_a_503_is_sent_again_after_its_retry_after_with_the_time_left(client, fake):
    answer = client.predict(json={"n": 1}, params={"busy": "1", "retry_after": "1"})

    assert answer == {"payload": {"n": 1}, "params": {"busy": "1", "retry_after": "1"}}
    assert len(fake.received) == 2
    assert fake.arrivals[1] - fake.arrivals[0] >= 1.0  # Retry-After honoured
    first, second = (float(headers["X-Request-Timeout"]) for headers, _ in fake.received)
    assert FAKE_WAIT - 0.5 < first <= FAKE_WAIT
    assert second <= first - 1.0  # the second attempt is told what is left after the wait
    assert fake.received[1][1] == fake.received[0][1]  # the same body


def test_503_retries_stop_after_max_retries_and_the_last_503_is_raised(fake):
    with Client(fake.url, timeout=FAKE_WAIT, max_retries=1) as client:
        with pytest.raises(PredictError) as info:
            client.predict(json={}, params={"busy": "5"})

    assert info.value.status_code == 503
    assert info.value.message == "queue full"
    assert len(fake.received) == 2  # the call and one retry


def test_no_retry_starts_when_its_wait_would_pass_the_deadline(fake):
    started = time.monotonic()
    with Client(fake.url, timeout=2) as client:
        with pytest.raises(PredictError) as info:
            client.predict(json={}, params={"busy": "1", "retry_after": "3"})

    assert info.value.status_code == 503
    assert len(fake.received) == 1
    assert time.monotonic() - started < 1.5  # answered at once, not after the 3 s wait


def test_a_stream_is_retried_on_503_like_predict(client, fake):
    chunks = list(client.stream(json={}, params={"busy": "1", "chunks": "2"}))

    assert chunks == [{"i": 0}, {"i": 1}]
    assert len(fake.received) == 2


@pytest.mark.parametrize(
    "params", [{"status": "500", "message": "boom"}, {"status": "504", "message": "late"}]
)
def test_a_predict_that_may_have_run_is_not_retried(client, fake, params):
    with pytest.raises(PredictError):
        client.predict(json={}, params=params)

    assert len(fake.received) == 1


def test_a_connection_lost_after_sending_is_not_retried(client, fake):
    with pytest.raises(requests.ConnectionError):
        client.predict(json={}, params={"drop": "1"})

    assert len(fake.received) == 1  # the server got it once: it may have run


def test_refused_connections_are_retried_until_the_deadline_then_raised():
    url = f"http://127.0.0.1:{unused_port()}"
    started = time.monotonic()
    with Client(url, timeout=1.5, max_retries=5) as client:
        with pytest.raises(requests.ConnectionError):
            client.predict(json={})
    took = time.monotonic() - started

    # Backoff 0 s then 1 s fit in the 1.5 s deadline; the next (2 s) does not.
    assert 0.9 <= took < 1.5 + 0.5


def test_ready_waits_out_a_503_and_a_server_that_is_not_up_yet(fake):
    fake.ready = False
    threading.Timer(0.3, lambda: setattr(fake, "ready", True)).start()
    with Client(fake.url, timeout=FAKE_WAIT) as client:  # 503 with Retry-After: 1
        assert client.ready() is True


def test_max_retries_must_not_be_negative():
    with pytest.raises(ValueError, match="max_retries"):
        Client("http://127.0.0.1:1", max_retries=-1)


def test_client_as_context_manager_closes_its_session(fake, monkeypatch):
    closed: list[requests.Session] = []
    original = requests.Session.close

    def close(session: requests.Session) -> None:
        closed.append(session)
        original(session)

    monkeypatch.setattr(requests.Session, "close", close)
    with Client(fake.url, timeout=FAKE_WAIT) as client:
        client.predict(json={})

    assert closed == [client.session]


# ---- against the real runtime ------------------------------------------------------------


def test_client_against_the_runtime_json_msgpack_stream_and_errors(shared_server):
    import openbayes_serving

    with openbayes_serving.Client(shared_server("echo_json")) as client:
        assert client.ready()
        assert client.predict(json={"a": [1, 2], "t": "中"}) == {"a": [1, 2], "t": "中"}
        assert client.predict(json={"b": b"\x00\x01"}, msgpack=True) == {"b": b"\x00\x01"}
        with pytest.raises(openbayes_serving.PredictError) as info:
            client.predict(data=b"{", content_type="application/json")
        assert info.value.status_code == 400
        assert "not valid JSON" in info.value.message
        assert info.value.request_id
    with openbayes_serving.Client(shared_server("streams")) as client:
        chunks = list(client.stream(json={"count": 3, "dicts": True, "delay": 0}))
        assert chunks == [{"index": 0}, {"index": 1}, {"index": 2}]
        sse = list(client.stream(json={"count": 2, "dicts": True, "delay": 0}, sse=True))
        assert sse == [{"index": 0}, {"index": 1}]


def test_the_client_waits_out_an_overloaded_runtime_and_its_refusals_never_ran(serve):
    server = serve("sleeper", "--predict-concurrency", "1", "--max-queue", "0")
    busy = post_in_background(server.url, {"id": "first", "sleep": 1.5}, timeout=10)
    wait_for_load(server.url, running=1)  # the first request holds the only slot; no queue

    with Client(server.url, timeout=10, max_retries=0) as once:
        with pytest.raises(PredictError) as info:
            once.predict(json={"id": "refused"})
    with Client(server.url, timeout=10) as client:  # 503 + Retry-After: 1, until the slot frees
        answer = client.predict(json={"id": "second"})
    busy.join(10)

    assert info.value.status_code == 503
    assert answer == {"id": "second"}
    ran = requests.post(server.url, json={"ran": True}, timeout=10).json()["ran"]
    assert ran == ["first", "second"]  # no attempt the server refused ever ran


def test_a_predict_sent_while_the_server_starts_gets_its_answer(tmp_path):
    # The port opens about a second after the process starts: the first attempts are
    # refused, and the client retries them.
    server = launch(PREDICTORS / "echo_json.py", (), tmp_path, {})
    try:
        with Client(server.url, timeout=30, max_retries=6) as client:
            assert client.predict(json={"a": 1}) == {"a": 1}
    finally:
        server.stop()


def test_a_client_deadline_shorter_than_the_queue_wait_is_answered_504_and_never_runs(serve):
    server = serve("sleeper", "--predict-concurrency", "1")
    busy = post_in_background(server.url, {"id": "first", "sleep": 2}, timeout=10)
    wait_for_load(server.url, running=1)  # the first request holds the only slot: the next queues

    started = time.monotonic()
    with Client(server.url, timeout=0.5) as client:
        with pytest.raises(PredictError) as info:
            client.predict(json={"id": "late"})
    took = time.monotonic() - started
    busy.join(10)

    assert info.value.status_code == 504
    assert took < 1.4  # the server's 504 at 0.5 s, not the client's own 1.5 s read timeout
    assert "X-Request-Timeout" in info.value.message  # which deadline applied
    ran = requests.post(server.url, json={"ran": True}, timeout=10).json()["ran"]
    assert ran == ["first"]  # the late request never ran
