"""Settings: precedence, parsing, port rules, and the README table."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from openbayes_serving.errors import SettingsError
from openbayes_serving.settings import (
    Mode,
    env_name,
    flag_name,
    public_fields,
    resolve_settings,
)

README = Path(__file__).resolve().parent.parent / "README.md"


def test_precedence_is_kwargs_then_flags_then_environment_then_default():
    env = {"OPENBAYES_SERVING_MAX_QUEUE": "7", "OPENBAYES_SERVING_PREDICT_CONCURRENCY": "5"}
    assert resolve_settings({}, [], {}).max_queue == 128
    assert resolve_settings({}, [], env).max_queue == 7
    assert resolve_settings({}, ["--max-queue", "9"], env).max_queue == 9
    assert resolve_settings({"max_queue": 11}, ["--max-queue", "9"], env).max_queue == 11
    assert resolve_settings({}, ["--max-queue", "9"], env).predict_concurrency == 5


def test_every_setting_has_a_flag_an_env_var_a_default_and_a_readme_row():
    readme = README.read_text(encoding="utf-8")
    for f in public_fields():
        assert f.metadata["help"]
        row = re.search(
            rf"^\| `{f.name}` \| `{flag_name(f.name)}` \| `{env_name(f.name)}` \|", readme, re.M
        )
        assert row, f"README settings table lacks {f.name}"


@pytest.mark.parametrize(
    ("kwargs", "argv", "env", "message"),
    [
        (
            {},
            [],
            {"OPENBAYES_SERVING_PREDICT_CONCURRENCY": "0"},
            "predict_concurrency must be auto or a positive integer "
            "(got '0' from OPENBAYES_SERVING_PREDICT_CONCURRENCY)",
        ),
        (
            {},
            ["--request-timeout", "soon"],
            {},
            "request_timeout has a bad value (got 'soon' from --request-timeout)",
        ),
        ({"onnx_spinning": "maybe"}, [], {}, "onnx_spinning must be true or false"),
        ({"log_format": "xml"}, [], {}, "log_format must be one of text, json"),
        ({"devices": ""}, [], {}, "devices must name at least one device"),
        ({"port": 70000}, [], {}, "port must be a port number"),
        ({"predict_concurency": 2}, [], {}, "unknown setting 'predict_concurency'"),
    ],
)
def test_bad_values_name_the_setting_in_the_spelling_used(kwargs, argv, env, message):
    with pytest.raises(SettingsError) as info:
        resolve_settings(kwargs, argv, env)
    assert message in str(info.value)


@pytest.mark.parametrize(
    ("env", "argv", "mode", "port"),
    [
        ({}, [], Mode.LOCAL, 25252),
        ({"OPENBAYES_SERVING_PORT": "9000"}, [], Mode.LOCAL, 9000),
        ({"OPENBAYES_JOB_URL": "http://job"}, [], Mode.JOB, 8080),
        ({"OPENBAYES_SERVING_PRODUCTION": "1"}, [], Mode.PRODUCTION, 80),
        (
            {"OPENBAYES_SERVING_PRODUCTION": "1", "OPENBAYES_SERVING_PORT": "9000"},
            [],
            Mode.PRODUCTION,
            80,
        ),
        ({"OPENBAYES_SERVING_PRODUCTION": "1"}, ["--port", "7000"], Mode.PRODUCTION, 7000),
        ({"OPENBAYES_JOB_URL": "x", "OPENBAYES_SERVING_PRODUCTION": "1"}, [], Mode.JOB, 8080),
    ],
)
def test_environment_decides_mode_and_port_and_port_flag_beats_all(env, argv, mode, port):
    settings = resolve_settings({}, argv, env)
    assert settings.mode is mode
    assert settings.port == port


def test_production_leaves_model_path_unset_for_the_model_search():
    # The production places (/openbayes/home, /mnt/project, ...) are searched in order by
    # sessions.model_dirs (tests/test_sessions.py); model_path is only what the user set.
    assert resolve_settings({}, [], {"OPENBAYES_SERVING_PRODUCTION": "1"}).model_path is None
    assert resolve_settings({}, [], {}).model_path is None


@pytest.mark.parametrize(
    ("text", "value"), [("true", True), ("1", True), ("yes", True), ("no", False), ("0", False)]
)
def test_bools_parse_strictly(text, value):
    assert resolve_settings({}, ["--onnx-spinning", text], {}).onnx_spinning is value


def test_lists_parse_from_commas_or_sequences():
    assert resolve_settings({}, ["--devices", "cuda:0, cuda:1"], {}).devices == ("cuda:0", "cuda:1")
    assert resolve_settings({"devices": ["cpu", "cpu"]}, [], {}).devices == ("cpu", "cpu")
    assert resolve_settings({}, ["--cors-origins", ""], {}).cors_origins == ()


def test_predict_concurrency_is_auto_by_default_and_a_number_pins_it():
    auto = resolve_settings({}, [], {})
    assert (auto.predict_concurrency, auto.concurrency_pin, auto.max_calls_per_instance) == (
        "auto",
        None,
        32,
    )
    pinned = resolve_settings({}, ["--predict-concurrency", "2"], {})
    assert (pinned.concurrency_pin, pinned.max_calls_per_instance) == (2, 2)
    wider = resolve_settings({"max_predict_concurrency": 64}, [], {})
    assert wider.max_calls_per_instance == 64
    assert (
        resolve_settings({}, [], {"OPENBAYES_SERVING_PREDICT_CONCURRENCY": "AUTO"}).concurrency_pin
        is None
    )
