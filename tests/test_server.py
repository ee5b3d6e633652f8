"""Real server processes: start-up errors, exit codes, SIGTERM drain, unrecoverable errors."""

from __future__ import annotations

import collections
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest
import requests
from conftest import PREDICTORS, clean_env, free_port, post_in_background, wait_for_load

from openbayes_serving.lifecycle import EXIT_DRAIN_TIMEOUT

STARTUP_FATAL = [
    pytest.param(
        "unknown_init_param",
        ["Predictor.__init__() asks for 'modle'", "Names it can ask for: onnx, config, device."],
        id="unknown-init-param",
    ),
    pytest.param(
        "unknown_predict_param",
        [
            "Predictor.predict() asks for 'jsn'",
            "Names it can ask for: json, payload, data, params, args, headers, request, cancelled.",
        ],
        id="unknown-predict-param",
    ),
    pytest.param("no_predict", ["Predictor has no predict() method"], id="no-predict"),
    pytest.param("asks_onnx", ["asks for 'onnx' but no .onnx file was found"], id="no-model"),
    pytest.param(
        "stream_with_postprocess",
        ["Predictor.predict() is a generator (it streams), so Predictor.postprocess() cannot run"],
        id="stream-with-postprocess",
    ),
]


def run_to_exit(
    name: str, *args: str, timeout: float = 30, **env: str
) -> subprocess.CompletedProcess:
    cmd = [
        sys.executable,
        str(PREDICTORS / f"{name}.py"),
        "--host",
        "127.0.0.1",
        "--port",
        str(free_port()),
        *args,
    ]
    return subprocess.run(
        cmd, capture_output=True, text=True, timeout=timeout, env=clean_env(**env)
    )


@pytest.mark.parametrize(("name", "expected"), STARTUP_FATAL)
def test_predictor_that_breaks_the_convention_exits_2_with_one_line(name, expected, tmp_path):
    result = run_to_exit(name)
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if "error:" in line]
    assert len(lines) == 1
    for text in expected:
        assert text in lines[0]
    assert "Traceback" not in result.stderr


def test_bad_setting_exits_2_naming_the_setting():
    result = run_to_exit("echo_json", OPENBAYES_SERVING_MAX_QUEUE="-1")
    assert result.returncode == 2
    assert (
        "max_queue must be zero or a positive integer "
        "(got '-1' from OPENBAYES_SERVING_MAX_QUEUE)" in result.stderr
    )


@pytest.mark.parametrize(
    ("args", "env", "source"),
    [
        pytest.param([], {"OPENBAYES_SERVING_API_KEY": ""}, "OPENBAYES_SERVING_API_KEY", id="env"),
        pytest.param(["--api-key", ""], {}, "--api-key", id="flag"),
        pytest.param(["--api-key", "  "], {}, "--api-key", id="blank"),
    ],
)
def test_an_empty_api_key_is_a_start_up_error_not_auth_turned_off(args, env, source):
    result = run_to_exit("echo_json", *args, **env)
    assert result.returncode == 2
    assert "api_key must not be empty: leave it unset to serve without a key" in result.stderr
    assert f"from {source})" in result.stderr


def test_init_that_raises_exits_non_zero_once_without_respawn_loop():
    started = time.monotonic()
    result = run_to_exit("init_raises")
    assert result.returncode == 3
    assert time.monotonic() - started < 20
    assert (
        "Predictor.__init__() raised RuntimeError: weights file is corrupt (init_raises.py:6)"
        in result.stderr
    )
    assert result.stderr.count("Booting worker") == 1
    # local mode: the traceback follows the line, from the predictor's own frame
    traceback = result.stderr.split("(init_raises.py:6)", 1)[1]
    assert traceback.lstrip().startswith("Traceback (most recent call last):")
    assert "openbayes_serving" not in traceback


def test_sigterm_under_load_answers_every_accepted_request_and_exits_0(serve):
    server = serve("sleeper", "--graceful-timeout", "20")
    answers: list[int] = []

    def call(i: int) -> None:
        rv = requests.post(server.url, json={"sleep": 0.3, "id": i}, timeout=30)
        answers.append(rv.status_code)

    threads = [threading.Thread(target=call, args=(i,)) for i in range(6)]
    for thread in threads:
        thread.start()
    time.sleep(0.5)  # every request is accepted: one runs, the rest wait in the queue
    server.proc.send_signal(signal.SIGTERM)
    for thread in threads:
        thread.join(30)
    assert server.proc.wait(timeout=30) == 0
    assert answers == [200] * 6
    assert "Error" not in server.log()  # a clean stop logs no errors


def test_readyz_turns_503_while_draining(serve):
    server = serve("sleeper", "--graceful-timeout", "20")
    slow = post_in_background(server.url, {"sleep": 1.5})
    wait_for_load(server.url, running=1)
    session = requests.Session()
    assert session.get(server.url + "/readyz", timeout=5).status_code == 200
    server.proc.send_signal(signal.SIGTERM)
    time.sleep(0.3)
    try:
        status = session.get(server.url + "/readyz", timeout=5).status_code
    except requests.ConnectionError:
        status = None  # the listener is closed: new connections are refused, as they should be
    assert status in (503, None)
    slow.join(30)
    assert server.proc.wait(timeout=30) == 0


def test_unrecoverable_error_answers_500_drains_in_flight_and_exits_non_zero(serve):
    server = serve("unrecoverable", "--predict-concurrency", "2")
    in_flight: list[int] = []
    slow = threading.Thread(
        target=lambda: in_flight.append(
            requests.post(server.url, json={"sleep": 1.0}, timeout=30).status_code
        )
    )
    slow.start()
    time.sleep(0.3)
    rv = requests.post(server.url, json={"fail": True}, timeout=10)
    assert rv.status_code == 500
    assert "unrecoverable" in rv.json()["error"]
    slow.join(30)
    assert in_flight == [200]
    assert server.proc.wait(timeout=30) == 4


def test_model_loads_after_the_fork_and_healthz_answers(shared_server):
    url = shared_server("echo_json")
    assert requests.get(url + "/healthz", timeout=5).json() == {"status": "ready"}


def test_model_file_that_onnxruntime_refuses_exits_3_with_one_line(tmp_path):
    (tmp_path / "predictor.py").write_text((PREDICTORS / "asks_onnx.py").read_text())
    (tmp_path / "model.onnx").write_bytes(b"not a model")
    cmd = [
        sys.executable,
        str(tmp_path / "predictor.py"),
        "--host",
        "127.0.0.1",
        "--port",
        str(free_port()),
    ]
    # production: the one line only (local mode adds the traceback after it)
    env = clean_env(OPENBAYES_SERVING_PRODUCTION="1")
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=60, env=env)
    assert result.returncode == 3
    assert "Predictor.__init__() asks for 'onnx', which could not be made:" in result.stderr
    assert "Traceback" not in result.stderr


def test_unrecoverable_error_stops_accepting_at_once_as_sigterm_does(serve):
    server = serve("unrecoverable", "--predict-concurrency", "2")
    in_flight = []
    slow = threading.Thread(
        target=lambda: in_flight.append(
            requests.post(server.url, json={"sleep": 2.0}, timeout=30).status_code
        )
    )
    slow.start()
    time.sleep(0.3)
    assert requests.post(server.url, json={"fail": True}, timeout=10).status_code == 500
    outcomes: list[object] = []
    for _ in range(16):  # while the request in flight drains
        try:
            with socket.create_connection(("127.0.0.1", server.port), timeout=2) as sock:
                sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
                outcomes.append(sock.recv(100)[:12] or b"closed")
        except OSError as exc:
            outcomes.append(type(exc).__name__)
        time.sleep(0.05)
    assert outcomes == ["ConnectionRefusedError"] * 16
    slow.join(30)
    assert in_flight == [200]
    assert server.proc.wait(timeout=30) == 4


def test_requests_still_running_at_graceful_timeout_get_503_and_the_exit_code_says_so(serve):
    server = serve("sleeper", "--graceful-timeout", "1", "--predict-concurrency", "1")
    answers: dict[int, requests.Response] = {}

    def call(i: int, sleep: float) -> None:
        answers[i] = requests.post(server.url, json={"sleep": sleep, "id": i}, timeout=30)

    threads = [threading.Thread(target=call, args=(i, 8.0 if i == 0 else 0.1)) for i in range(2)]
    for waiting, thread in enumerate(threads):  # one predict runs (8 s), then one waits for it
        thread.start()
        wait_for_load(server.url, running=1, waiting=waiting)
    stopping = time.monotonic()
    server.proc.send_signal(signal.SIGTERM)
    for thread in threads:
        thread.join(30)
    assert server.proc.wait(timeout=30) == EXIT_DRAIN_TIMEOUT
    assert time.monotonic() - stopping < 5  # graceful_timeout is the bound, not + 5 s
    for rv in answers.values():  # the running one and the one waiting behind it
        assert rv.status_code == 503
        assert rv.json() == {
            "error": "the server is shutting down: the request did not finish within 1s"
        }
        assert rv.headers["retry-after"] == "1"
    assert len(answers) == 2
    assert "graceful_timeout (1s) ran out with 2 request(s) still running" in server.log()


def test_max_requests_replaces_the_worker_without_losing_a_request(serve):
    server = serve(
        "worker_pid",
        "--max-requests",
        "40",
        "--max-requests-jitter",
        "10",
        env={"LOAD_SECONDS": "1"},  # the replacement takes a while to load its model
    )
    statuses: collections.Counter[object] = collections.Counter()
    pids: list[int] = []
    stop_at = time.monotonic() + 40

    def client() -> None:
        with requests.Session() as session:
            while time.monotonic() < stop_at and len(set(pids)) < 3:
                try:
                    rv = session.post(server.url, json={"sleep": 0.01}, timeout=30)
                except requests.RequestException as exc:
                    statuses[type(exc).__name__] += 1
                    continue
                statuses[rv.status_code] += 1
                if rv.status_code == 200:
                    pids.append(rv.json()["pid"])

    threads = [threading.Thread(target=client) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert len(set(pids)) >= 3  # replaced twice
    assert set(statuses) == {200}, statuses
    # Each worker served its max_requests (and its jitter), then a little while its
    # replacement loaded: never far past, never before.
    counts = collections.Counter(pids)
    for pid in list(dict.fromkeys(pids))[:-1]:
        assert counts[pid] >= 40
    assert "served max_requests: starting its replacement" in server.log()
    assert server.stop() == 0
