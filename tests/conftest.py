"""Fixtures shared by the test suite: free ports, real server processes, tiny models."""

from __future__ import annotations

import functools
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Iterator
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
    return stop_all([proc], timeout)[0]


def stop_all(procs: Iterable[subprocess.Popen], timeout: float = 20.0) -> list[int]:
    """Stop servers by pid together: SIGTERM to each, then wait for all (SIGKILL at the
    timeout). Returns their exit codes."""
    procs = _terminate(procs)
    return _reap(procs, time.monotonic() + timeout)


def _terminate(procs: Iterable[subprocess.Popen]) -> list[subprocess.Popen]:
    """SIGTERM, once, to each process still running (a second one could kill it mid-exit)."""
    procs = list(procs)
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    return procs


def _reap(procs: list[subprocess.Popen], deadline: float) -> list[int]:
    """Wait for each process until ``deadline``, SIGKILL what is left; the exit codes."""
    for proc in procs:
        try:
            proc.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return [int(proc.returncode) for proc in procs]


_STOPPING: list[threading.Thread] = []


def stop_later(procs: Iterable[subprocess.Popen], timeout: float = 20.0) -> None:
    """SIGTERM now; wait for the exits (SIGKILL at the timeout) on a thread, so the next test
    starts while these drain. The session waits for all of them before it ends."""
    args = (_terminate(procs), time.monotonic() + timeout)
    thread = threading.Thread(target=_reap, args=args, daemon=True)
    thread.start()
    _STOPPING.append(thread)


@pytest.fixture(scope="session", autouse=True)
def _servers_stopped_before_the_session_ends() -> Iterator[None]:
    yield
    for thread in _STOPPING:
        thread.join(30)


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
    stop_all(server.proc for server in servers.values())


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Callable[..., Server]]:
    """Start a predictor server and wait until ready; SIGTERMs every server by pid at the end
    (they drain while the next test runs: ``stop_later``).

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
    stop_later(server.proc for server in servers)


def post_in_background(url: str, body: Any, timeout: float = 30) -> threading.Thread:
    """POST ``body`` as JSON from a started thread: a request in flight while a test acts."""
    thread = threading.Thread(
        target=requests.post, args=(url,), kwargs={"json": body, "timeout": timeout}
    )
    thread.start()
    return thread


def metric(text: str, name: str, **labels: str) -> float:
    """The value of one sample in a Prometheus text exposition."""
    label_text = ",".join(f'{k}="{v}"' for k, v in labels.items())
    pattern = (
        rf"^{re.escape(name)}(?:\{{{re.escape(label_text)}\}})? ([0-9.e+-]+)$"
        if labels
        else rf"^{re.escape(name)} ([0-9.e+-]+)$"
    )
    match = re.search(pattern, text, re.M)
    assert match, f"{name} {labels} not in metrics"
    return float(match.group(1))


def wait_for_load(url: str, running: int, waiting: int = 0, seconds: float = 10) -> None:
    """Poll ``/metrics`` until ``running`` predicts run and ``waiting`` requests wait for one.

    What a test that holds the server busy waits on before it acts: a fixed sleep after
    ``post_in_background`` is too short when a loaded machine is slow to send the request.
    """
    deadline = time.monotonic() + seconds
    seen: tuple[float, float] = (-1, -1)
    while time.monotonic() < deadline:
        text = requests.get(url + "/metrics", timeout=5).text
        seen = (
            metric(text, "openbayes_serving_predicts_running"),
            metric(text, "openbayes_serving_queue_depth"),
        )
        if seen == (running, waiting):
            return
        time.sleep(0.01)
    raise AssertionError(f"(running, waiting) {seen} not {(running, waiting)} within {seconds}s")


# Tests that time what they assert (how soon an answer comes, how many calls run at once
# within a window, when a watchdog or a deadline fires). They are marked ``serial``: `make
# test` runs them in a pass of their own, after the parallel pass (``pytest -n``), so that
# other tests' servers do not take the CPU they measure. A file name marks all its tests;
# tests/test_suite_order.py checks that every entry names a test that exists.
SERIAL = (
    "test_limiter.py",
    "test_concurrency.py",
    "test_watchdog.py::test_a_predict_past_the_timeout_is_logged_with_its_request_and_stack",
    "test_watchdog.py::test_stuck_while_others_still_run_only_turns_readiness_off",
    "test_deadlines.py::test_a_request_whose_header_deadline_passes_in_the_queue_is_504_and_never_runs",
    "test_deadlines.py::test_request_timeout_applies_when_it_is_the_smaller",
    "test_deadlines.py::test_the_client_timeout_reaches_the_server_as_its_deadline",
    "test_deadlines.py::test_in_process_a_queued_request_past_its_header_deadline_is_504_and_never_runs",
    "test_admission.py",
    "test_limit_concurrency.py",
    "test_cancellation.py::test_a_running_predict_sees_its_deadline_and_frees_its_slot",
    "test_cancellation.py::test_each_item_of_a_batch_has_its_own_cancelled",
    "test_cancellation.py::test_in_process_the_deadline_sets_cancelled_and_answers_504",
    "test_client.py::test_no_retry_starts_when_its_wait_would_pass_the_deadline",
    "test_client.py::test_refused_connections_are_retried_until_the_deadline_then_raised",
    "test_client.py::test_a_client_deadline_shorter_than_the_queue_wait_is_answered_504_and_never_runs",
    "test_devices.py::test_each_instance_gets_its_own_device_and_they_predict_in_parallel",
    "test_hardening.py::test_client_that_stalls_sending_its_body_gets_408_json",
    "test_hardening.py::test_client_that_trickles_its_headers_gets_408_json_and_is_closed",
    "test_hardening.py::test_connection_that_sends_nothing_is_closed_after_keepalive",
    "test_hardening.py::test_many_stalled_clients_do_not_block_a_good_one",
    "test_operations.py::test_emit_event_with_collector_down_does_not_slow_requests",
    "test_pipeline.py::test_preprocess_overlaps_while_predict_never_runs_twice",
    "test_pipeline.py::test_lone_request_waits_at_most_max_delay",
    "test_pipeline.py::test_queue_full_answers_503_with_retry_after_at_once_and_loses_nothing",
    "test_pipeline.py::test_request_that_cannot_finish_in_time_is_504_and_never_runs_later",
    "test_pipeline.py::test_stream_sends_first_chunk_before_the_generator_finishes",
    "test_pipeline.py::test_two_instances_run_predicts_in_parallel_and_each_sees_its_device",
    "test_scheduler.py::test_batch_starts_at_once_when_full_and_after_max_delay_otherwise",
    "test_queue_wait.py::test_clients_that_wait_for_their_answers_are_never_refused_by_time",
    "test_server.py::test_requests_still_running_at_graceful_timeout_get_503_and_the_exit_code_says_so",
    "test_streams_http.py::test_an_idle_sse_stream_gets_pings_as_the_flag_sets_and_the_client_skips_them",
    "test_warmup_health.py::test_health_that_hangs_answers_503_after_its_timeout",
    "test_warmup_health.py::test_health_is_called_at_most_once_a_second",
    "test_warmup_health.py::test_in_process_a_health_that_hangs_is_a_timeout_and_starts_no_second_thread",
)


# The serial tests that measure CPU-bound concurrency (how many predicts run at once, a
# predict holding the GIL): marked ``alone`` as well, `make test` runs them in a last pass
# by themselves. The other serial tests wait on sleeps and timers, not on the CPU, and
# run two at a time (``pytest -n 2 -m "serial and not alone"``; at three, some of their
# 0.1-0.2 s margins failed on a machine loaded by other work).
ALONE = (
    "test_limiter.py",
    "test_concurrency.py",
    "test_limit_concurrency.py",
    "test_devices.py::test_each_instance_gets_its_own_device_and_they_predict_in_parallel",
    "test_pipeline.py::test_two_instances_run_predicts_in_parallel_and_each_sees_its_device",
    "test_pipeline.py::test_preprocess_overlaps_while_predict_never_runs_twice",
)


# The slowest files, slowest first: the parallel pass (``--dist loadfile
# --no-loadscope-reorder``) hands files to its workers in collection order, and a slow file
# handed out last would run on alone at the end.
SLOW_FIRST = (
    "test_gpu_bench.py",
    "test_ray.py",
    "test_examples.py",
    "test_examples_real.py",
    "test_pipeline.py",
    "test_devices.py",
    "test_server.py",
    "test_ui.py",
    "test_startup_errors.py",
    "test_cli.py",
    "test_ui_examples.py",
    "test_operations.py",
    "test_compat.py",
    "test_warmup_health.py",
    "test_client.py",
)


def is_serial(nodeid: str, names: tuple[str, ...] = SERIAL) -> bool:
    """Whether ``names`` (``SERIAL`` unless given) names this test
    (``tests/test_x.py::test_y[param]``) or its file."""
    name = nodeid.split("[")[0].rsplit("/", 1)[-1]
    return name in names or name.split("::")[0] in names


@pytest.hookimpl(tryfirst=True)  # before -m reads the markers
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Marks the ``SERIAL`` and ``ALONE`` tests, puts the ``SLOW_FIRST`` files first; the
    real-server leg of a two-transport test runs only when the test is marked http."""
    kept: list[pytest.Item] = []
    dropped: list[pytest.Item] = []
    for item in items:
        if is_serial(item.nodeid):
            item.add_marker(pytest.mark.serial)
        if is_serial(item.nodeid, ALONE):
            item.add_marker(pytest.mark.alone)
        callspec = getattr(item, "callspec", None)
        over_http = callspec is not None and callspec.params.get("target") == "http"
        (dropped if over_http and item.get_closest_marker("http") is None else kept).append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
    order = {name: rank for rank, name in enumerate(SLOW_FIRST)}
    items[:] = sorted(kept, key=lambda item: order.get(item.path.name, len(order)))


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
