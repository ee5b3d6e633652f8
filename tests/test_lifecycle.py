"""The lifecycle in-process: load, fail, run() in the background, drain, and readiness."""

from __future__ import annotations

import asyncio
import threading

import pytest

from openbayes_serving.errors import OverloadedError, QueueTimeoutError, StartupError
from openbayes_serving.lifecycle import EXIT_FATAL, EXIT_LOAD_FAILED, Health, Lifecycle
from openbayes_serving.metrics import Metrics
from openbayes_serving.predictor import inspect_predictor
from openbayes_serving.readiness import Readiness
from openbayes_serving.request import Request
from openbayes_serving.settings import resolve_settings


class Good:
    def predict(self, json):
        return json


class Broken:
    def __init__(self):
        raise RuntimeError("no weights")

    def predict(self, json):
        return json


class Background:
    ran = threading.Event()

    def run(self):
        Background.ran.set()
        raise RuntimeError("the loop died")

    def predict(self, json):
        return json


def lifecycle(cls: type, environ: dict[str, str] | None = None) -> tuple[Lifecycle, list]:
    settings = resolve_settings({}, [], environ or {})
    calls: list[tuple[int, bool]] = []
    life = Lifecycle(
        inspect_predictor(cls, settings),
        settings,
        Metrics(None, frozenset()),
        lambda code, drain: calls.append((code, drain)),
    )
    return life, calls


def health(life: Lifecycle | Readiness) -> Health:
    return life.health  # read anew: mypy would narrow the attribute across calls


def test_load_builds_the_pipeline_and_turns_ready():
    life, calls = lifecycle(Good)
    assert health(life) is Health.STARTING
    life.load()
    assert health(life) is Health.READY
    assert life.pipeline is not None
    assert life.queue_depth == 0
    assert calls == []
    life.shutdown()


def test_a_model_that_fails_to_build_fails_at_once_with_exit_3():
    life, calls = lifecycle(Broken)
    life.load()
    assert life.health is Health.FAILED
    assert calls == [(EXIT_LOAD_FAILED, False)]
    assert "no weights" in str(life.load_error)
    with pytest.raises(StartupError, match="no weights"):
        lifecycle(Broken)[0].load_now()


def test_run_raising_in_production_drains_and_exits_4():
    life, calls = lifecycle(Background, {"OPENBAYES_SERVING_PRODUCTION": "1"})
    life.load()
    assert Background.ran.wait(5)
    for _ in range(100):
        if calls:
            break
        threading.Event().wait(0.02)
    assert calls == [(EXIT_FATAL, True)]
    assert life.health is Health.FAILED


def test_draining_turns_readiness_off_once():
    life, _ = lifecycle(Good)
    life.load()
    life.start_draining()
    assert health(life) is Health.DRAINING
    life.fail(EXIT_FATAL, True)
    life.start_draining()
    assert health(life) is Health.FAILED
    life.shutdown()


def request(timeout: float) -> Request:
    async def receive() -> dict:
        return {"type": "http.disconnect"}

    return Request({"type": "http", "method": "POST", "path": "/", "headers": []}, receive, timeout)


def test_requests_wait_for_the_load_and_go_on_once_it_ends():
    readiness = Readiness(max_queue=2)

    async def main() -> list[object]:
        waiting = [asyncio.ensure_future(readiness.until_loaded(request(10))) for _ in range(2)]
        await asyncio.sleep(0)
        assert readiness.waiting == 2
        with pytest.raises(OverloadedError, match="2 requests already wait"):
            await readiness.until_loaded(request(10))
        threading.Thread(target=readiness.become, args=(Health.READY,)).start()
        return await asyncio.gather(*waiting)

    assert asyncio.run(main()) == [None, None]
    assert readiness.waiting == 0
    assert readiness.serving


def test_a_request_whose_deadline_passes_during_the_load_gets_504():
    readiness = Readiness(max_queue=2)
    with pytest.raises(QueueTimeoutError, match="the model did not load within 0.05s"):
        asyncio.run(readiness.until_loaded(request(0.05)))
    assert readiness.waiting == 0


def test_a_stuck_predict_turns_readiness_off_and_back_but_never_revives_a_failure():
    readiness = Readiness(max_queue=1)
    readiness.become(Health.READY)
    readiness.stuck(True)
    assert health(readiness) is Health.STUCK
    assert readiness.serving
    readiness.stuck(False)
    assert health(readiness) is Health.READY
    readiness.become(Health.FAILED)
    readiness.stuck(False)
    assert health(readiness) is Health.FAILED
