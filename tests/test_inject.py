"""__init__ injection: onnx sessions, model discovery, config files, and real-world predictors."""

from __future__ import annotations

import io
import json
import os
import threading
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import onnx
import pytest
import requests
from onnx import TensorProto, helper, numpy_helper
from PIL import Image

from openbayes_serving import predictor as predictor_module
from openbayes_serving.errors import PredictorError
from openbayes_serving.inject import match_name
from openbayes_serving.sessions import find_onnx_model
from openbayes_serving.settings import resolve_settings


def write_classifier(path: Path, scale: float = 1.0) -> None:
    """A tiny image classifier: mean of each channel of a 1x3x8x8 image, times ``scale``."""
    graph = helper.make_graph(
        [
            helper.make_node("ReduceMean", ["image"], ["means"], axes=[2, 3], keepdims=0),
            helper.make_node("Mul", ["means", "scale"], ["logits"]),
        ],
        "classifier",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 3])],
        initializer=[numpy_helper.from_array(np.array([scale], dtype=np.float32), "scale")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, path)


CLASSIFIER = """
import io, json
import numpy as np
import requests
from PIL import Image
import openbayes_serving as serv


class Predictor:
    def __init__(self, onnx):
        self.session = onnx
        with open("labels.json") as f:          # relative to the working directory
            self.labels = json.load(f)

    def predict(self, json):
        image = Image.open(io.BytesIO(requests.get(json["url"], timeout=5).content)).convert("RGB")
        x = np.asarray(image.resize((8, 8)), dtype=np.float32).transpose(2, 0, 1)[None] / 255
        logits = self.session.run(None, {"image": x})[0][0]
        return {"label": self.labels[int(logits.argmax())], "logits": logits}


if __name__ == "__main__":
    serv.run(Predictor)
"""


@pytest.fixture
def image_server(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    Image.new("RGB", (16, 16), (0, 0, 255)).save(images / "blue.png")
    handler = partial(SimpleHTTPRequestHandler, directory=str(images))
    handler.log_message = lambda *args: None  # type: ignore[attr-defined]
    with ThreadingHTTPServer(("127.0.0.1", 0), handler) as httpd:
        thread = threading.Thread(target=httpd.serve_forever, daemon=True)
        thread.start()
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
        httpd.shutdown()


def classifier_app(tmp_path: Path, labels: list[str], *models: tuple[str, float]) -> Path:
    """tmp_path/app with CLASSIFIER as predictor.py, its labels, and models (name, scale)."""
    app = tmp_path / "app"
    app.mkdir()
    (app / "predictor.py").write_text(CLASSIFIER)
    (app / "labels.json").write_text(json.dumps(labels))
    for name, scale in models:
        write_classifier(app / name, scale=scale)
    return app


def test_onnx_classifier_reads_labels_by_relative_path_and_fetches_an_image_url(
    serve, tmp_path, image_server
):
    app = classifier_app(tmp_path, ["red", "green", "blue"], ("model.onnx", 1.0))
    server = serve(app / "predictor.py", cwd=app)
    rv = requests.post(server.url, json={"url": f"{image_server}/blue.png"}, timeout=10)
    assert rv.status_code == 200
    assert rv.json()["label"] == "blue"
    assert rv.json()["logits"] == pytest.approx([0.0, 0.0, 1.0])


def test_onnx_model_is_found_beside_predictor_py_from_another_working_directory(
    serve, tmp_path, image_server
):
    app = tmp_path / "app"
    app.mkdir()
    (app / "predictor.py").write_text(
        CLASSIFIER.replace(
            'open("labels.json")', 'open(__file__.rsplit("/", 1)[0] + "/labels.json")'
        )
    )
    (app / "labels.json").write_text(json.dumps(["r", "g", "b"]))
    write_classifier(app / "model.onnx")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    server = serve(app / "predictor.py", cwd=elsewhere)
    assert (
        requests.post(server.url, json={"url": f"{image_server}/blue.png"}, timeout=10).json()[
            "label"
        ]
        == "b"
    )


def test_several_onnx_files_load_the_first_by_name_and_log_the_choice(
    serve, tmp_path, image_server
):
    app = classifier_app(tmp_path, ["r", "g", "b"], ("b.onnx", 2.0), ("a.onnx", 3.0))
    server = serve(app / "predictor.py", cwd=app)
    logits = requests.post(server.url, json={"url": f"{image_server}/blue.png"}, timeout=10).json()[
        "logits"
    ]
    assert logits == pytest.approx([0.0, 0.0, 3.0])
    assert "found 2 .onnx files" in server.log()
    assert "loading a.onnx" in server.log()
    half = max(1, len(os.sched_getaffinity(0)) // 2)  # auto: a call gets half the cores
    assert (
        f"providers: CPUExecutionProvider; intra-op threads: {half}; spinning: off" in server.log()
    )


def test_one_predict_at_a_time_gives_the_session_every_core(serve, tmp_path, image_server):
    app = classifier_app(tmp_path, ["r", "g", "b"], ("a.onnx", 3.0))
    server = serve(app / "predictor.py", "--predict-concurrency", "1", cwd=app)
    assert requests.post(server.url, json={"url": f"{image_server}/blue.png"}, timeout=10).ok
    cores = len(os.sched_getaffinity(0))
    assert f"intra-op threads: {cores};" in server.log()


def test_model_path_flag_chooses_a_file(serve, tmp_path, image_server):
    app = classifier_app(tmp_path, ["r", "g", "b"], ("a.onnx", 3.0))
    write_classifier(tmp_path / "chosen.onnx", scale=5.0)
    server = serve(app / "predictor.py", "--model-path", str(tmp_path / "chosen.onnx"), cwd=app)
    logits = requests.post(server.url, json={"url": f"{image_server}/blue.png"}, timeout=10).json()[
        "logits"
    ]
    assert logits == pytest.approx([0.0, 0.0, 5.0])


CONFIGURED = """
import io
from PIL import Image
import openbayes_serving as serv


class PythonPredictor:
    def __init__(self, config):
        self.config = config

    def predict(self, payload):
        image = Image.open(io.BytesIO(payload))
        get = self.config.get
        return {"size": list(image.size), "threshold": get("threshold"), "name": get("name")}


if __name__ == "__main__":
    serv.run(PythonPredictor)
"""


@pytest.mark.parametrize(
    ("filename", "text"),
    [
        ("config.json", '{"threshold": 0.5, "name": "j"}'),
        ("config.yaml", "threshold: 0.5\nname: y\n"),
    ],
)
def test_python_predictor_with_config_takes_payload_image_bytes(serve, tmp_path, filename, text):
    (tmp_path / "predictor.py").write_text(CONFIGURED)
    (tmp_path / filename).write_text(text)
    server = serve(tmp_path / "predictor.py")
    buffer = io.BytesIO()
    Image.new("RGB", (7, 5)).save(buffer, format="JPEG")
    rv = requests.post(
        server.url, data=buffer.getvalue(), headers={"Content-Type": "image/jpeg"}, timeout=10
    )
    assert rv.json() == {"size": [7, 5], "threshold": 0.5, "name": filename[7]}


def test_config_flag_beats_the_file_beside_predictor_py(serve, tmp_path):
    (tmp_path / "predictor.py").write_text(CONFIGURED)
    (tmp_path / "config.json").write_text('{"name": "beside"}')
    (tmp_path / "other.json").write_text('{"name": "flag"}')
    server = serve(tmp_path / "predictor.py", "--config", str(tmp_path / "other.json"))
    buffer = io.BytesIO()
    Image.new("RGB", (1, 1)).save(buffer, format="PNG")
    assert requests.post(server.url, data=buffer.getvalue(), timeout=10).json()["name"] == "flag"


def test_missing_onnxruntime_fails_at_start_with_the_install_line(monkeypatch, tmp_path):
    (tmp_path / "model.onnx").write_bytes(b"")

    class Predictor:
        def __init__(self, onnx):
            pass

        def predict(self, json):
            return json

    monkeypatch.setattr(predictor_module.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(PredictorError) as info:
        predictor_module.inspect_predictor(
            Predictor, resolve_settings({"model_path": str(tmp_path)}, [], {})
        )
    assert "pip install 'openbayes-serving[onnx]'" in str(info.value)


def test_no_model_error_names_the_places_searched(tmp_path):
    with pytest.raises(PredictorError) as info:
        find_onnx_model(resolve_settings({"model_path": str(tmp_path)}, [], {}), tmp_path)
    assert str(tmp_path) in str(info.value)


@pytest.mark.parametrize(
    ("name", "annotation", "expected"),
    [
        ("json", dict, "json"),
        ("json", "dict", "json"),
        ("x", "'params'", "params"),
        ("x", "params", "params"),
        ("x", int, None),
    ],
)
def test_annotations_never_break_a_known_name(name, annotation, expected):
    assert match_name(name, annotation, ("json", "params")) == expected
