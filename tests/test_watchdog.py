"""The watchdog: predicts stuck past predict_timeout, in-process and over HTTP."""

from __future__ import annotations

import contextvars
import logging
import threading
import time

from conftest import post_in_background

from openbayes_serving.lifecycle import Health
from openbayes_serving.request import REQUEST_ID
from openbayes_serving.scheduler import Scheduler
from openbayes_serving.testing import LocalClient
from openbayes_serving.watchdog import Watchdog


def test_a_predict_past_the_timeout_is_logged_with_its_request_and_stack(caplog):
    gate = threading.Event()

    def stuck_in_here(_: object) -> None:
        gate.wait(5)

    scheduler = Scheduler([stuck_in_here], concurrency=2, max_queue=10)
    scheduler.start()
    hopeless: list[bool] = []
    watchdog = Watchdog(scheduler, 0.2, lambda stuck: None, lambda: hopeless.append(True))
    context = contextvars.copy_context()
    context.run(REQUEST_ID.set, "req-42")
    context.run(scheduler.submit, None, lambda r, e: None, time.monotonic() + 10)
    time.sleep(0.05)
    assert watchdog.check() is False
    time.sleep(0.3)
    with caplog.at_level(logging.ERROR):
        assert watchdog.check() is True
        assert watchdog.check() is True  # logged once per stuck call
    logged = [r.getMessage() for r in caplog.records if "predict_timeout" in r.getMessage()]
    assert len(logged) == 1
    assert "req-42" in logged[0]
    assert "stuck_in_here" in logged[0]
    assert hopeless == [True]  # nothing else runs and nothing waits
    gate.set()
    time.sleep(0.1)
    assert watchdog.check() is False
    scheduler.close(1)


def test_stuck_while_others_still_run_only_turns_readiness_off():
    gate = threading.Event()
    scheduler = Scheduler([lambda seconds: gate.wait(seconds)], concurrency=2, max_queue=10)
    scheduler.start()
    calls: list[object] = []
    watchdog = Watchdog(scheduler, 0.5, calls.append, lambda: calls.append("exit"))
    scheduler.submit(5, lambda r, e: None, time.monotonic() + 10)  # will be stuck
    time.sleep(0.6)
    scheduler.submit(5, lambda r, e: None, time.monotonic() + 10)  # young: still working
    watchdog.interval = 0.05
    watchdog.start()
    time.sleep(0.2)
    watchdog.stop()
    gate.set()
    scheduler.close(1)
    assert calls[:1] == [True]
    assert "exit" not in calls


def test_a_stuck_server_is_not_ready_but_still_serves():
    class Echo:
        def predict(self, json):
            return json

    with LocalClient(Echo) as client:
        client.app.lifecycle.health = Health.STUCK
        assert client.get("/readyz").status_code == 503
        assert client.get("/readyz").json() == {"status": "stuck"}
        assert client.get("/healthz").status_code == 200
        assert client.post(json={"a": 1}).json() == {"a": 1}


def test_a_predict_stuck_with_nothing_else_to_do_exits_4_with_its_stack(serve):
    server = serve("sleeper", "--predict-timeout", "1", "--graceful-timeout", "2")
    post_in_background(server.url, {"id": "hung", "sleep": 60}, timeout=5)
    assert server.proc.wait(20) == 4
    log = server.log()
    assert "has run for more than 1s" in log
    assert "sleeper.py" in log  # the stuck thread's stack names the predictor's line
