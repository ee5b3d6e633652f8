"""``config``: the file's mapping as a dict, and 0.1.x's ``config.limit_concurrency(n)``."""

from __future__ import annotations

import copy
import json
import logging
import pickle

import pytest
import requests
from conftest import PREDICTORS

from openbayes_serving.config import Config, concurrency_pin, load_config, requested_concurrency
from openbayes_serving.errors import StartupError
from openbayes_serving.instances import build_instance
from openbayes_serving.predictor import inspect_predictor
from openbayes_serving.settings import Settings, resolve_settings
from openbayes_serving.testing import LocalClient


def test_config_is_a_dict_with_the_files_contents(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"threshold": 0.5, "names": ["a"]}))
    config = load_config(resolve_settings({}, [], {}), tmp_path)
    assert isinstance(config, dict)
    assert config == {"threshold": 0.5, "names": ["a"]}
    assert json.loads(json.dumps(config)) == config
    assert load_config(resolve_settings({}, [], {}), tmp_path / "nowhere") == {}


def test_limit_concurrency_is_recorded_and_survives_copies():
    config = Config({"k": 1})
    assert config.requested_concurrency() is None
    config.limit_concurrency(2)
    assert config.requested_concurrency() == 2
    assert config == {"k": 1}  # the contents are unchanged
    assert copy.deepcopy(config).requested_concurrency() == 2
    assert pickle.loads(pickle.dumps(config)).requested_concurrency() == 2


@pytest.mark.parametrize("n", [0, -1, 1.5, "2", True])
def test_limit_concurrency_refuses_what_is_not_a_positive_integer(n):
    with pytest.raises(
        ValueError, match="config.limit_concurrency\\(n\\) needs a positive integer"
    ):
        Config().limit_concurrency(n)


def test_other_attributes_say_what_config_is():
    with pytest.raises(AttributeError) as info:
        Config({"threshold": 1}).threshold  # noqa: B018
    assert "config is the dict read from config.json or config.yaml" in str(info.value)
    assert "config['threshold']" in str(info.value)
    assert "limit_concurrency(n) is kept" in str(info.value)


class LimitsConcurrency:
    def __init__(self, config):
        config.limit_concurrency(3)

    def predict(self, json):
        return json


class IgnoresConfig:
    def __init__(self, config):
        self.config = config

    def predict(self, json):
        return json


def _built(cls: type, **settings: object) -> tuple[object, Settings]:
    resolved = resolve_settings(settings, [], {})
    return build_instance(inspect_predictor(cls, resolved), resolved, "cpu"), resolved


def test_the_runtime_reads_the_limit_a_built_instance_asked_for():
    instance, settings = _built(LimitsConcurrency)
    assert requested_concurrency(instance) == 3
    assert concurrency_pin(settings, instance) == 3  # pinned: no adaptation
    plain, settings = _built(IgnoresConfig)
    assert requested_concurrency(plain) is None
    assert concurrency_pin(settings, plain) is None  # auto


def test_an_explicit_predict_concurrency_setting_beats_limit_concurrency(caplog):
    instance, settings = _built(LimitsConcurrency, predict_concurrency=5)
    with caplog.at_level(logging.INFO, logger="openbayes_serving.config"):
        assert concurrency_pin(settings, instance) == 5
    assert "predict_concurrency=5 (the setting) overrides config.limit_concurrency(3)" in (
        caplog.text
    )
    instance, settings = _built(LimitsConcurrency, predict_concurrency="auto")
    assert concurrency_pin(settings, instance) == 3  # auto is no explicit number


class BadLimit:
    def __init__(self, config):
        config.limit_concurrency(0)

    def predict(self, json):
        return json


def test_a_bad_limit_fails_the_start_with_the_reason():
    with pytest.raises(StartupError, match="needs a positive integer, got 0"):
        LocalClient(BadLimit)


def test_a_01x_predictor_calling_limit_concurrency_starts_and_answers_over_http(serve, tmp_path):
    (tmp_path / "app").mkdir()
    app = tmp_path / "app"
    (app / "predictor.py").write_text(
        (PREDICTORS / "echo_json.py")
        .read_text()
        .replace(
            "class Predictor:\n",
            "class Predictor:\n"
            "    def __init__(self, config):\n"
            "        config.limit_concurrency(2)\n"
            "        self.greeting = config.get('greeting', 'none')\n\n",
        )
    )
    (app / "config.json").write_text(json.dumps({"greeting": "hi"}))
    server = serve(app / "predictor.py", cwd=app)
    rv = requests.post(server.url, json={"x": 1}, timeout=10)
    assert rv.status_code == 200
    assert rv.json() == {"x": 1}
    assert "config.limit_concurrency(2): at most 2 predicts at once" in server.log()
