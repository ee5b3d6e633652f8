"""The lifecycle in-process: load, fail, run() in the background, drain."""

from __future__ import annotations

import threading

import pytest

from openbayes_serving.errors import StartupError
from openbayes_serving.lifecycle import EXIT_FATAL, EXIT_LOAD_FAILED, Health, Lifecycle
from openbayes_serving.metrics import Metrics
from openbayes_serving.predictor import inspect_predictor
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


def health(life: Lifecycle) -> Health:
    return life.health


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
