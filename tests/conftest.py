"""Fixtures shared by the test suite: free ports, real server processes, tiny models."""

from __future__ import annotations

import functools
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable

import pytest
import requests

from openbayes_serving.testing import free_port

ROOT = Path(__file__).resolve().parent.parent
PREDICTORS = Path(__file__).resolve().parent / "predictors"


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


def post_in_background(url: str, body: Any, timeout: float = 30) -> threading.Thread:
    """POST ``body`` as JSON from a started thread: a request in flight while a test acts."""
    thread = threading.Thread(
        target=requests.post, args=(url,), kwargs={"json": body, "timeout": timeout}
    )
    thread.start()
    return thread


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The real-server leg of a two-transport test runs only when the test is marked http."""
    kept: list[pytest.Item] = []
    dropped: list[pytest.Item] = []
    for item in items:
        callspec = getattr(item, "callspec", None)
        over_http = callspec is not None and callspec.params.get("target") == "http"
        (dropped if over_http and item.get_closest_marker("http") is None else kept).append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = kept


class QuietFileHandler(SimpleHTTPRequestHandler):
    """Serves files without logging each request."""

    def log_message(self, format: str, *args: object) -> None:
        """Keep test output quiet."""


@pytest.fixture
def file_server(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """A static file server on 127.0.0.1 in a thread: (its root directory, its URL)."""
    root = tmp_path / "www"
    root.mkdir()
    handler = functools.partial(QuietFileHandler, directory=str(root))
    with ThreadingHTTPServer(("127.0.0.1", 0), handler) as httpd:
        thread = threading.Thread(target=httpd.serve_forever, daemon=True)
        thread.start()
        yield root, f"http://127.0.0.1:{httpd.server_address[1]}"
        httpd.shutdown()
        thread.join(timeout=10)
