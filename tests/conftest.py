"""Fixtures shared by the test suite: free ports, real server processes, tiny models."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import uuid
import zlib
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable

import pytest
import requests

ROOT = Path(__file__).resolve().parent.parent
PREDICTORS = Path(__file__).resolve().parent / "predictors"


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_ready(url: str, proc: subprocess.Popen, timeout: float = 60.0) -> None:
    """Poll ``url/readyz`` until it answers 200; fail early if ``proc`` exits."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode} before it was ready")
        try:
            if requests.get(f"{url}/readyz", timeout=1).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"server at {url} not ready after {timeout}s")


def stop(proc: subprocess.Popen, timeout: float = 20.0) -> int:
    """Stop a server by pid: SIGTERM, wait, then SIGKILL. Returns the exit code."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return int(proc.returncode)


def clean_env(**extra: str) -> dict[str, str]:
    """The current environment without OPENBAYES_* variables, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENBAYES_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env.update(extra)
    return env


class Server:
    """A server process started by the ``serve`` or ``shared_server`` fixture."""

    def __init__(self, proc: subprocess.Popen, url: str, port: int, log: Path) -> None:
        self.proc = proc
        self.url = url
        self.port = port
        self.log_path = log

    def log(self) -> str:
        """Everything the server wrote to stdout and stderr so far."""
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def stop(self, timeout: float = 20.0) -> int:
        return stop(self.proc, timeout)


@pytest.fixture(autouse=True)
def _no_openbayes_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(os.environ):
        if key.startswith("OPENBAYES_"):
            monkeypatch.delenv(key)


def launch(script: Path, args: tuple[str, ...], cwd: Path, env: dict[str, str]) -> Server:
    """Start ``python <script> --host 127.0.0.1 --port P [args]``; output goes to a log file."""
    port = free_port()
    cmd = [sys.executable, str(script), "--host", "127.0.0.1", "--port", str(port), *args]
    log = cwd / f"server-{port}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            cmd, cwd=cwd, env=clean_env(**env), stdout=out, stderr=subprocess.STDOUT
        )
    return Server(proc, f"http://127.0.0.1:{port}", port, log)


@pytest.fixture(scope="session")
def shared_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., str]]:
    """One server per (predictor, args) for the whole session, for tests that only read.

    Returns the base URL. Tests that stop, kill or overload a server use ``serve``.
    """
    servers: dict[tuple[str, ...], Server] = {}

    def start(name: str, *args: str, **env: str) -> str:
        key = (name, *args, *sorted(f"{k}={v}" for k, v in env.items()))
        if key not in servers:
            server = launch(PREDICTORS / f"{name}.py", args, tmp_path_factory.mktemp(name), env)
            servers[key] = server
            wait_ready(server.url, server.proc)
        return servers[key].url

    yield start
    for server in servers.values():
        server.stop()


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Callable[..., Server]]:
    """Start a predictor server and wait until ready; stops every server by pid.

    ``script`` is a name in tests/predictors/ or a path.
    """
    servers: list[Server] = []

    def start(
        script: str | Path,
        *args: str,
        cwd: Path | None = None,
        env: dict[str, str] | None = None,
        ready: bool = True,
        timeout: float = 60.0,
    ) -> Server:
        path = Path(script) if os.sep in str(script) else PREDICTORS / f"{script}.py"
        server = launch(path, args, cwd or tmp_path, env or {})
        servers.append(server)
        if ready:
            wait_ready(server.url, server.proc, timeout)
        return server

    yield start
    for server in servers:
        server.stop()


FAKE_WAIT = 5.0  # seconds any handshake between a test and a fake server may take


class FakeServer(ThreadingHTTPServer):
    """A stdlib HTTP server on 127.0.0.1 standing in for a peer; keeps handler errors.

    ``gate`` holds a stream open after its first chunk until the test sets it;
    ``gate_opened_in_time`` says whether it was set within ``FAKE_WAIT``.
    """

    daemon_threads = True

    def __init__(self, handler: type[BaseHTTPRequestHandler]) -> None:
        super().__init__(("127.0.0.1", 0), handler)
        self.errors: list[BaseException] = []
        self.gate = threading.Event()
        self.gate_opened_in_time: bool | None = None

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Keep what a handler raised, for the fixture to report; a client that left is fine."""
        error = sys.exc_info()[1]
        if error is not None and not isinstance(error, ConnectionError):
            self.errors.append(error)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host!s}:{port}"


def post_in_background(url: str, body: Any, timeout: float = 30) -> threading.Thread:
    """POST ``body`` as JSON from a started thread: a request in flight while a test acts."""
    thread = threading.Thread(
        target=requests.post, args=(url,), kwargs={"json": body, "timeout": timeout}
    )
    thread.start()
    return thread


@contextlib.contextmanager
def running(server: FakeServer) -> Iterator[FakeServer]:
    """Serve ``server`` on a thread; stop it after, and fail on what its handlers raised."""
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield server
    finally:
        server.gate.set()
        server.shutdown()
        server.server_close()
        thread.join(FAKE_WAIT)
    assert server.errors == []


class FakeHandler(BaseHTTPRequestHandler):
    """Base of the fake servers' handlers: keep-alive HTTP/1.1, quiet, answer helpers."""

    protocol_version = "HTTP/1.1"
    timeout = 10  # an idle keep-alive connection closes by itself

    def log_message(self, fmt: str, *args: Any) -> None:
        """Keep test output quiet."""

    def new_request_id(self) -> str:
        """The X-Request-Id of the next answer."""
        return uuid.uuid4().hex

    def start_answer(self, status: int, kind: str, extra: dict[str, str]) -> None:
        """Status line and headers, with a request id as the runtime sends."""
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("X-Request-Id", self.new_request_id())
        for name, value in extra.items():
            self.send_header(name, value)
        self.end_headers()

    def answer(
        self, status: int, kind: str, body: bytes, extra: dict[str, str] | None = None
    ) -> None:
        """A whole answer with a Content-Length."""
        self.start_answer(status, kind, {"Content-Length": str(len(body)), **(extra or {})})
        self.wfile.write(body)

    def send_chunk(self, data: bytes) -> None:
        """One chunk of a chunked answer, sent at once."""
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()


def png_bytes(width: int = 3, height: int = 2) -> bytes:
    """A valid RGB PNG, built without Pillow."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    rows = b"".join(b"\x00" + b"\x20\x90\xff" * width for _ in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )
