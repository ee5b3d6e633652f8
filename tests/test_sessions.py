"""Where `onnx` finds its model: locally, in production (the platform folders), by model_path."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import requests
from conftest import PREDICTORS
from test_inject import write_classifier

from openbayes_serving import sessions
from openbayes_serving.errors import PredictorError
from openbayes_serving.settings import resolve_settings

PRODUCTION = {"OPENBAYES_SERVING_PRODUCTION": "1"}


def test_production_searches_the_predictor_folder_then_the_platforms_folders(tmp_path):
    settings = resolve_settings({}, [], PRODUCTION)
    assert sessions.model_dirs(settings, tmp_path) == [
        tmp_path,
        Path("/openbayes/home"),
        Path("/mnt/project"),
        *(Path(f"/openbayes/input/input{i}") for i in range(5)),
    ]


def test_locally_the_predictor_folder_then_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    app = tmp_path / "app"
    assert sessions.model_dirs(resolve_settings({}, [], {}), app) == [app, tmp_path]


def test_model_path_wins_everywhere(tmp_path):
    for env in ({}, PRODUCTION):
        settings = resolve_settings({"model_path": str(tmp_path / "m")}, [], env)
        assert sessions.model_dirs(settings, tmp_path) == [tmp_path / "m"]


@pytest.fixture
def platform(tmp_path, monkeypatch):
    """The production folders, made under tmp_path (the real ones need root)."""
    places = [tmp_path / name for name in ("home", "project", "input0", "input1")]
    for place in places:
        place.mkdir()
    monkeypatch.setattr(sessions, "PRODUCTION_MODEL_DIRS", tuple(str(p) for p in places))
    return places


def test_the_first_place_holding_a_model_wins_and_the_log_names_it(tmp_path, platform, caplog):
    home, project, input0, input1 = platform
    app = tmp_path / "app"
    app.mkdir()
    write_classifier(project / "b.onnx")
    write_classifier(input1 / "a.onnx")
    settings = resolve_settings({}, [], PRODUCTION)
    assert sessions.locate_onnx_model(settings, app) == (project / "b.onnx", [app, home, project])
    with caplog.at_level(logging.INFO, logger="openbayes_serving.sessions"):
        sessions.open_session(settings, app, "cpu")
    assert f"loaded {project / 'b.onnx'} (searched {app}, {home}, {project};" in caplog.text
    write_classifier(app / "c.onnx")  # the predictor's own folder comes first
    assert sessions.find_onnx_model(settings, app) == app / "c.onnx"


def test_no_model_anywhere_names_every_place_searched(tmp_path, platform):
    with pytest.raises(PredictorError) as info:
        sessions.find_onnx_model(resolve_settings({}, [], PRODUCTION), tmp_path)
    assert str(info.value).startswith(
        "__init__ asks for 'onnx' but no .onnx file was found in "
        + ", ".join(str(p) for p in [tmp_path, *platform])
    )


def test_a_production_server_loads_the_model_beside_predictor_py_and_logs_it(serve, tmp_path):
    app = tmp_path / "app"
    app.mkdir()
    (app / "predictor.py").write_text((PREDICTORS / "asks_onnx.py").read_text())
    write_classifier(app / "model.onnx")
    server = serve(app / "predictor.py", cwd=tmp_path, env=PRODUCTION)
    assert requests.post(server.url, json={"x": 1}, timeout=10).json() == {"x": 1}
    assert f"loaded {app / 'model.onnx'} (searched {app};" in server.log()


def test_a_production_server_with_model_path_loads_that_model(serve, tmp_path):
    app = tmp_path / "app"
    elsewhere = tmp_path / "models"
    app.mkdir()
    elsewhere.mkdir()
    (app / "predictor.py").write_text((PREDICTORS / "asks_onnx.py").read_text())
    write_classifier(app / "model.onnx")
    write_classifier(elsewhere / "chosen.onnx")
    server = serve(app / "predictor.py", "--model-path", str(elsewhere), cwd=app, env=PRODUCTION)
    assert requests.post(server.url, json={}, timeout=10).status_code == 200
    assert f"loaded {elsewhere / 'chosen.onnx'} (searched {elsewhere};" in server.log()


def _threads(cores: int, **options: object) -> int:
    return sessions.intra_op_threads(resolve_settings(options, [], {}), cores)


def test_one_call_at_a_time_gets_every_core():
    assert _threads(8, predict_concurrency=1) == 8
    assert _threads(2, predict_concurrency=1) == 2


def test_pinned_calls_share_the_cores():
    assert _threads(8, predict_concurrency=4) == 2
    assert _threads(8, predict_concurrency=3) == 2
    assert _threads(8, predict_concurrency=16) == 1


def test_auto_gives_a_call_half_the_cores_and_at_least_one():
    assert _threads(8) == 4
    assert _threads(2) == 1
    assert _threads(1) == 1


def test_workers_and_instances_split_the_cores_too():
    assert _threads(16, predict_concurrency=1, workers=2, devices="cpu,cpu") == 4
    assert _threads(16, workers=4) == 2


def test_onnx_threads_wins():
    assert _threads(8, onnx_threads=3) == 3
    assert _threads(1, onnx_threads=3, predict_concurrency=4) == 3
