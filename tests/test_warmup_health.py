"""Warm-up and health that gate readiness: ``warmup(self)`` before ``/readyz`` turns 200,
``health(self)`` asked by ``/readyz`` at most once a second, on a thread, with a timeout;
over HTTP and in-process."""

from __future__ import annotations

import logging
import re
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import requests
from conftest import PREDICTORS, clean_env, free_port, metric

from openbayes_serving.errors import StartupError
from openbayes_serving.instances import HEALTH_TIMEOUT
from openbayes_serving.lifecycle import EXIT_LOAD_FAILED, Health, Lifecycle
from openbayes_serving.metrics import Metrics
from openbayes_serving.predictor import inspect_predictor
from openbayes_serving.settings import resolve_settings
from openbayes_serving.testing import LocalClient


def wait_alive(url: str, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if requests.get(f"{url}/healthz", timeout=1).status_code == 200:
                return
        except requests.ConnectionError:
            pass
        time.sleep(0.02)
    raise AssertionError(f"{url} did not answer /healthz within {seconds}s")


def test_warmup_runs_before_readyz_turns_200_and_requests_wait_for_it(serve):
    server = serve("warmup_health", ready=False, env={"WARMUP_SECONDS": "1.5"})
    wait_alive(server.url)
    ready = requests.get(f"{server.url}/readyz", timeout=5)
    assert ready.status_code == 503
    assert ready.json() == {"status": "starting"}
    early = requests.post(server.url, json={}, timeout=20)  # sent during the warm-up
    assert early.status_code == 200
    assert early.json()["warm"] is True
    assert requests.get(f"{server.url}/readyz", timeout=5).status_code == 200
    text = requests.get(f"{server.url}/metrics", timeout=10).text
    assert metric(text, "openbayes_serving_warmup_seconds") >= 1.5


def test_a_warmup_that_raises_is_a_load_failure_with_one_line(tmp_path):
    script = PREDICTORS / "warmup_raises.py"
    cmd = [sys.executable, str(script), "--host", "127.0.0.1", "--port", str(free_port())]
    for env, traceback in (({}, True), ({"OPENBAYES_SERVING_PRODUCTION": "1"}, False)):
        result = subprocess.run(
            cmd, capture_output=True, text=True, timeout=120, env=clean_env(**env)
        )
        assert result.returncode == 3
        (line,) = [x for x in result.stderr.splitlines() if "Predictor.warmup() raised" in x]
        assert line.endswith(
            "Predictor.warmup() raised ValueError: the warm-up batch does not fit the model "
            "(warmup_raises.py:6)"
        )
        assert ("Traceback (most recent call last)" in result.stderr) is traceback


def readyz(url: str) -> tuple[int, dict[str, Any]]:
    answer = requests.get(f"{url}/readyz", timeout=10)
    return answer.status_code, answer.json()


def set_health(url: str, mode: str) -> None:
    requests.post(url, json={"health": mode}, timeout=10).raise_for_status()
    time.sleep(1.1)  # the last verdict is kept for a second


def test_health_false_or_raising_answers_503_with_the_reason_and_changes_are_logged(serve):
    server = serve("warmup_health", env={"WARMUP_SECONDS": "0"})
    assert readyz(server.url) == (200, {"status": "ready"})
    set_health(server.url, "false")
    assert readyz(server.url) == (503, {"status": "unhealthy", "reason": "health() returned False"})
    assert readyz(server.url)[0] == 503
    set_health(server.url, "raise")
    status, body = readyz(server.url)
    assert status == 503
    assert body["reason"].startswith("health() raised RuntimeError: the device is gone")
    set_health(server.url, "ok")
    assert readyz(server.url) == (200, {"status": "ready"})
    log = server.log()
    assert log.count("health() failed") == 1  # once per change, not once per probe
    assert log.count("health() passes again") == 1


def test_health_that_hangs_answers_503_after_its_timeout(serve):
    server = serve("warmup_health", env={"WARMUP_SECONDS": "0"})
    set_health(server.url, "hang")
    started = time.monotonic()
    status, body = readyz(server.url)
    took = time.monotonic() - started
    assert status == 503
    assert body["reason"] == f"health() did not answer within {HEALTH_TIMEOUT:g}s"
    assert HEALTH_TIMEOUT - 0.1 < took < HEALTH_TIMEOUT + 0.9
    # the event loop was never blocked: other routes answer while health() hangs
    assert requests.get(f"{server.url}/healthz", timeout=1).status_code == 200


def test_health_is_called_at_most_once_a_second(serve):
    server = serve("warmup_health", env={"WARMUP_SECONDS": "0"})
    before = requests.post(server.url, json={}, timeout=10).json()["health_calls"]
    started = time.monotonic()
    while time.monotonic() - started < 1.5:
        assert readyz(server.url)[0] == 200
    after = requests.post(server.url, json={}, timeout=10).json()["health_calls"]
    assert 1 <= after - before <= 2


# ---- in-process ---------------------------------------------------------------------------


class Warm:
    order: list[str] = []

    def __init__(self, device):
        self.device = device
        Warm.order.append(f"init {device}")

    def warmup(self):
        time.sleep(0.05)
        Warm.order.append(f"warmup {self.device}")

    def predict(self, json):
        Warm.order.append("predict")
        return json


def test_in_process_warmup_runs_on_each_instance_after_init_before_ready():
    Warm.order = []
    with LocalClient(Warm, devices="cpu,cpu") as client:
        assert Warm.order == ["init cpu", "warmup cpu", "init cpu", "warmup cpu"]
        assert client.get("/readyz").status_code == 200
        assert client.post(json={"a": 1}).json() == {"a": 1}
        assert "openbayes_serving_warmup_seconds 0.1" in client.get("/metrics").text


class WarmRaises:
    def warmup(self):
        raise RuntimeError("no GPU memory left")

    def predict(self, json):
        return json


def test_in_process_a_warmup_that_raises_fails_the_load_with_exit_3():
    settings = resolve_settings({}, [], {})
    calls: list[tuple[int, bool]] = []
    life = Lifecycle(
        inspect_predictor(WarmRaises, settings),
        settings,
        Metrics(None, frozenset()),
        lambda code, drain: calls.append((code, drain)),
    )
    life.load()
    assert life.health is Health.FAILED
    assert calls == [(EXIT_LOAD_FAILED, False)]
    assert str(life.load_error).startswith(
        "WarmRaises.warmup() raised RuntimeError: no GPU memory left (test_warmup_health.py:"
    )
    with pytest.raises(StartupError, match=r"WarmRaises\.warmup\(\) raised"):
        LocalClient(WarmRaises)


class Checked:
    healthy: Any = True
    calls = 0

    def health(self):
        Checked.calls += 1
        if isinstance(Checked.healthy, Exception):
            raise Checked.healthy
        return Checked.healthy

    def predict(self, json):
        return json


def test_in_process_health_gates_readyz_and_logs_each_change(caplog):
    caplog.set_level(logging.INFO, logger="openbayes_serving.instances")
    Checked.healthy, Checked.calls = True, 0
    with LocalClient(Checked) as client:
        probe = client.app.lifecycle.health_probe
        assert probe is not None
        assert client.get("/readyz").json() == {"status": "ready"}
        assert client.get("/readyz").status_code == 200
        assert Checked.calls == 1  # the second answer reused the first's verdict
        Checked.healthy = False
        probe.expire()
        answer = client.get("/readyz")
        assert answer.status_code == 503
        assert answer.json() == {"status": "unhealthy", "reason": "health() returned False"}
        probe.expire()
        assert client.get("/readyz").status_code == 503
        Checked.healthy = ValueError("sensor offline")
        probe.expire()
        assert (
            client.get("/readyz")
            .json()["reason"]
            .startswith("health() raised ValueError: sensor offline (test_warmup_health.py:")
        )
        Checked.healthy = True
        probe.expire()
        assert client.get("/readyz").status_code == 200
        assert client.post(json={"a": 1}).status_code == 200  # predictions never stopped
    messages = [r.getMessage() for r in caplog.records]
    assert sum("health() failed" in m for m in messages) == 1
    assert sum("health() passes again" in m for m in messages) == 1


class Hangs:
    release = threading.Event()

    def health(self):
        Hangs.release.wait(10)
        return True

    def predict(self, json):
        return json


def test_in_process_a_health_that_hangs_is_a_timeout_and_starts_no_second_thread():
    Hangs.release.clear()
    with LocalClient(Hangs) as client:
        probe = client.app.lifecycle.health_probe
        assert probe is not None
        started = time.monotonic()
        answer = client.get("/readyz")
        assert time.monotonic() - started >= HEALTH_TIMEOUT - 0.1
        assert answer.json()["reason"] == f"health() did not answer within {HEALTH_TIMEOUT:g}s"
        probe.expire()
        checks = [t for t in threading.enumerate() if t.name == "health-check"]
        again = time.monotonic()
        assert client.get("/readyz").status_code == 503  # still hanging: no wait, no thread
        assert time.monotonic() - again < 0.5
        assert [t for t in threading.enumerate() if t.name == "health-check"] == checks
        Hangs.release.set()
        checks[0].join(5)
        probe.expire()
        assert client.get("/readyz").status_code == 200


class OwnMethods:
    """``warmup``/``health`` that take arguments are the predictor's own methods."""

    def warmup(self, batch):
        raise AssertionError("never called by the server")

    def health(self, detail):
        raise AssertionError("never called by the server")

    def preprocess(self, json):
        return json["x"]

    def predict(self, x):
        return {"y": x + 1}


def test_warmup_and_health_with_arguments_are_left_alone_and_change_no_stage():
    spec = inspect_predictor(OwnMethods, resolve_settings({}, [], {}))
    assert not spec.has_warmup
    assert not spec.has_health
    assert spec.has_preprocess
    assert not spec.has_run
    with LocalClient(OwnMethods) as client:
        assert client.get("/readyz").status_code == 200
        assert client.post(json={"x": 1}).json() == {"y": 2}


def test_the_readme_metrics_table_lists_what_metrics_exports():
    with LocalClient(Warm) as client:
        text = client.get("/metrics").text
    exported = {
        line.split()[2]
        for line in text.splitlines()
        if line.startswith("# TYPE ") and not line.split()[2].endswith("_created")
    }
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")
    section = readme.split("`/metrics` exports (", 1)[1].split("\n\n", 2)[1]
    listed = set(re.findall(r"^\| `(openbayes_serving_\w+)", section, re.M))
    assert listed == exported
