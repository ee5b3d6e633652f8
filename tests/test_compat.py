"""Predictors written for the platform run unchanged.

Three parts:

- the shapes the platform's own predictors have (its docs' second example, the published
  yolov5 predictor, 0.1.x's ``config.limit_concurrency``), as fixture predictors served
  over HTTP;
- the pipeline-detection rule, class by class, and every pipeline this repository ships
  (templates, examples, fixture predictors), which must stay pipelines;
- the published predictors of ``signcl/openbayes-serving-examples`` themselves, run
  unchanged from a checkout named by ``SERVING_EXAMPLES_DIR`` (their code is not copied
  into this repository), each with weight files of the same names and architectures made
  by the test (untrained; nothing is downloaded). They import what this project does not
  install (opencv-python, scipy; yolov5 also matplotlib and tqdm): without those, or
  without the checkout, these tests skip and say which. Not run at all: real-cugan and
  yolov5-rtsp-serving need a CUDA GPU (and an RTSP camera, or bilibili/ailab's weights);
  fake-llm-openai's start.sh sources conda from the platform's image.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import shutil
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import pytest
import requests
from conftest import ROOT, clean_env, free_port
from test_inject import image_server  # noqa: F401  (a fixture: a loopback image server)

from openbayes_serving.errors import PredictorError
from openbayes_serving.predictor import inspect_predictor
from openbayes_serving.settings import resolve_settings

# -- the shapes, over HTTP ---------------------------------------------------------------


def test_docs_shape_helper_methods_are_called_by_predict_only(serve):
    server = serve("helper_methods")
    rv = requests.post(server.url, json={"values": [1, 2, 3]}, timeout=10)
    assert rv.status_code == 200
    assert rv.json() == {"total": 60.0, "scale": 10}  # postprocess ran once, by predict
    assert (
        "Predictor: preprocess(), postprocess() are the predictor's own methods, never called "
        "by the server (predict() calls them itself)" in server.log()
    )


def test_yolov5_shape_with_limit_concurrency_and_io_in_predict_is_served(serve, image_server):  # noqa: F811
    server = serve("helper_methods_detector")
    url = f"{image_server}/blue.png"
    rv = requests.post(server.url, json={"url": url, "threshold": "0.2"}, timeout=10)
    assert rv.status_code == 200
    assert rv.json() == [[[[0, 0], [16, 16]]], ["dark"]]
    rv = requests.post(server.url, json={"url": url, "threshold": "2"}, timeout=10)
    assert rv.json() == [[], []]
    assert "config.limit_concurrency(2)" in server.log()


def test_postprocess_that_predict_calls_itself_is_applied_once(serve):
    server = serve("postprocess_helper")
    rv = requests.post(server.url, json={"x": 4}, timeout=10)
    assert rv.json() == {"doubled": 8}


# -- the rule, class by class ------------------------------------------------------------


class DocsShape:
    def preprocess(self, v):
        return v

    def postprocess(self, v):
        return v

    def predict(self, json):
        return self.postprocess(self.preprocess(json))


class YoloShape:
    def preprocess(self, img0):
        return img0

    def postprocess(self, output, threshold, img0, img):
        return output

    def predict(self, json):
        return json


class Stages:
    def preprocess(self, json, params):
        return json

    def predict(self, x):
        return x

    def postprocess(self, y):
        return y


class SameNameHelper:  # predict asks for the request itself: preprocess is a helper
    def preprocess(self, json):
        return json

    def predict(self, json):
        return self.preprocess(json)


class PostprocessStageOnly:
    def predict(self, json):
        return json

    def postprocess(self, y):
        return {"y": y}


class PostprocessHelperOnly:
    def predict(self, json):
        return self.postprocess(json)

    def postprocess(self, y):
        return {"y": y}


class PostprocessManyArguments:
    def predict(self, json):
        return json

    def postprocess(self, y, extra):
        return y


class PredictNamesTheRequestByAnnotation:
    def preprocess(self, json):
        return json

    def predict(self, x: json):  # type: ignore[valid-type]  # the string "json"
        return x


@pytest.mark.parametrize(
    ("cls", "stages"),
    [
        pytest.param(DocsShape, (False, False), id="docs-example-2"),
        pytest.param(YoloShape, (False, False), id="yolov5"),
        pytest.param(Stages, (True, True), id="pipeline"),
        pytest.param(SameNameHelper, (False, False), id="predict-asks-json"),
        pytest.param(PostprocessStageOnly, (False, True), id="postprocess-stage"),
        pytest.param(PostprocessHelperOnly, (False, False), id="postprocess-called-by-predict"),
        pytest.param(PostprocessManyArguments, (False, False), id="postprocess-many-args"),
        pytest.param(PredictNamesTheRequestByAnnotation, (False, False), id="annotated-request"),
    ],
)
def test_preprocess_and_postprocess_are_stages_only_when_signatures_fit(cls, stages):
    spec = inspect_predictor(cls, resolve_settings({}, [], {}))
    assert (spec.has_preprocess, spec.has_postprocess) == stages


def test_the_reading_taken_is_logged_once_at_start_up(caplog):
    settings = resolve_settings({}, [], {})
    with caplog.at_level(logging.INFO, logger="openbayes_serving.predictor"):
        inspect_predictor(YoloShape, settings)
        inspect_predictor(Stages, settings)
    lines = [r.getMessage() for r in caplog.records]
    assert lines == [
        "YoloShape: preprocess(), postprocess() are the predictor's own methods, never called "
        "by the server (predict() does not take a single preprocess result)",
        "Stages: preprocess(), postprocess() run as pipeline stages around predict()",
    ]


class PipelineWithBadPostprocess:
    def preprocess(self, json):
        return json

    def predict(self, x):
        return x

    def postprocess(self, y, extra):
        return y


class PipelineWithBadPreprocess:
    def preprocess(self, img0):
        return img0

    def predict(self, x):
        return x


@pytest.mark.parametrize(
    ("cls", "message"),
    [
        pytest.param(
            PipelineWithBadPostprocess,
            "PipelineWithBadPostprocess.postprocess() must take exactly one argument",
            id="postprocess",
        ),
        pytest.param(
            PipelineWithBadPreprocess,
            "PipelineWithBadPreprocess.preprocess() asks for 'img0', which cannot be injected",
            id="preprocess",
        ),
    ],
)
def test_a_pipeline_whose_stage_cannot_work_is_still_a_start_up_error(cls, message):
    with pytest.raises(PredictorError, match=message.replace("(", r"\(").replace(")", r"\)")):
        inspect_predictor(cls, resolve_settings({}, [], {}))


def _pipeline_files() -> list[Any]:
    files = [ROOT / "tests" / "predictors" / f"{n}.py" for n in ("async_steps", "pipeline_timing")]
    files.append(ROOT / "tests" / "predictors" / "batch_preprocessed.py")
    files += sorted(ROOT.glob("templates/*/predictor.py"))
    files += sorted(ROOT.glob("examples/*/predictor.py"))
    return [
        pytest.param(path, id=str(path.relative_to(ROOT)))
        for path in files
        if "def preprocess" in path.read_text() or "def postprocess" in path.read_text()
    ]


@pytest.mark.parametrize("path", _pipeline_files())
def test_every_shipped_pipeline_stays_a_pipeline(path, tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(path.parent))  # examples import their own modules
    module_spec = importlib.util.spec_from_file_location(f"shipped_{path.parent.name}", path)
    assert module_spec is not None
    assert module_spec.loader is not None
    module = importlib.util.module_from_spec(module_spec)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        module_spec.loader.exec_module(module)
    cls = module.Predictor
    (tmp_path / "model.onnx").write_bytes(b"")  # found, never opened: only inspected
    spec = inspect_predictor(cls, resolve_settings({"model_path": str(tmp_path)}, [], {}))
    assert spec.has_preprocess == hasattr(cls, "preprocess")
    assert spec.has_postprocess == hasattr(cls, "postprocess")


# -- the published predictors, unchanged -------------------------------------------------

EXAMPLES = os.environ.get("SERVING_EXAMPLES_DIR")
NEEDS = "SERVING_EXAMPLES_DIR names no checkout of signcl/openbayes-serving-examples"


def _published(name: str, *modules: str) -> Path:
    """A copy of a published predictor's folder, or a skip saying what is missing."""
    if not EXAMPLES or not (Path(EXAMPLES) / name / "predictor.py").is_file():
        pytest.skip(f"{NEEDS} (needed: {name}/predictor.py)")
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        pytest.skip(f"{name} imports {', '.join(missing)}, which is not installed")
    return Path(EXAMPLES) / name


def _copy(source: Path, tmp_path: Path) -> Path:
    target = tmp_path / source.name
    shutil.copytree(source, target)
    return target


def _export_mobilenet_v2(path: Path, input_name: str) -> None:
    import torch
    import torchvision  # type: ignore[import-untyped]

    model = torchvision.models.mobilenet_v2(weights=None).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            (torch.randn(1, 3, 224, 224),),
            str(path),
            input_names=[input_name],
            opset_version=17,
            dynamo=False,
        )


def _labels(path: Path) -> list[str]:
    return [label for _, label in json.loads(path.read_text()).values()]


@pytest.fixture
def image_url(image_server):  # noqa: F811
    return f"{image_server}/blue.png"


def test_published_mobilenetv2_onnx_with_limit_concurrency(serve, tmp_path, image_url):
    app = _copy(_published("onnx/image-classifier-mobilenetv2", "cv2", "scipy"), tmp_path)
    _export_mobilenet_v2(app / "mobilenetv2-7.onnx", "data")  # fetch_models.sh's name
    server = serve(app / "predictor.py", cwd=app, timeout=300)
    rv = requests.post(server.url, json={"url": image_url}, timeout=60)
    assert rv.status_code == 200, rv.text
    assert rv.json()["label"] in _labels(app / "imagenet_class_index.json")


@pytest.mark.parametrize(
    ("name", "send"),
    [
        pytest.param("pytorch/image-classifier-resnet50", "url", id="url"),
        pytest.param("pytorch/image-classifier-resnet50-for-uploadfile", "bytes", id="upload"),
    ],
)
def test_published_resnet50_classifiers(serve, tmp_path, image_url, name, send):
    import torch
    import torchvision

    app = _copy(_published(name, "cv2"), tmp_path)
    torch.save(torchvision.models.resnet50(weights=None).state_dict(), app / "resnet50.pt")
    server = serve(app / "predictor.py", cwd=app, timeout=300)
    if send == "url":
        rv = requests.post(server.url, json={"url": image_url}, timeout=120)
    else:
        image = requests.get(image_url, timeout=10).content
        headers = {"Content-Type": "application/octet-stream"}
        rv = requests.post(server.url, data=image, headers=headers, timeout=120)
    assert rv.status_code == 200, rv.text
    top5 = rv.json()
    assert len(top5) == 5
    assert set(top5) <= set(_labels(app / "classes.json"))


def test_published_object_detector_with_limit_concurrency(serve, tmp_path, image_url):
    import torch
    import torchvision

    app = _copy(_published("pytorch/object-detector"), tmp_path)
    model = torchvision.models.detection.fasterrcnn_resnet50_fpn(
        weights=None, weights_backbone=None
    )
    torch.save(model.state_dict(), app / "fasterrcnn_resnet50_fpn_coco-258fb6c6.pth")
    server = serve(app / "predictor.py", cwd=app, timeout=300)
    rv = requests.post(server.url, json={"url": image_url, "threshold": "0.0"}, timeout=300)
    assert rv.status_code == 200, rv.text
    boxes, classes = rv.json()
    assert len(boxes) == len(classes)
    labels = (app / "coco_labels.txt").read_text().splitlines()
    assert set(classes) <= set(labels)


def _make_yolov5_weights(app: Path) -> None:
    """yolov5s.pt as the predictor's attempt_load reads it: {"model": Model} (pickled)."""
    script = (
        "import torch\n"
        "from models.yolo import Model\n"
        "with torch.no_grad():\n"  # its bias set-up writes in place (refused under autograd)
        "    model = Model('models/yolov5s.yaml', nc=80)\n"
        "model.names = [f'class{i}' for i in range(80)]\n"
        "torch.save({'model': model}, 'yolov5s.pt')\n"
    )
    subprocess.run(
        [sys.executable, "-c", script], cwd=app, env=clean_env(), check=True, timeout=300
    )
    assert (app / "yolov5s.pt").is_file()  # present: attempt_load never downloads


def test_published_yolov5_needs_a_trusted_checkpoint_then_serves(serve, tmp_path, image_url):
    modules = ("cv2", "scipy", "matplotlib", "tqdm", "yaml")
    app = _copy(_published("pytorch/yolov5", *modules), tmp_path)
    _make_yolov5_weights(app)
    port = str(free_port())
    refused = subprocess.run(
        [sys.executable, "predictor.py", "--host", "127.0.0.1", "--port", port],
        cwd=app,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert refused.returncode == 3
    assert "Predictor.__init__() raised UnpicklingError: Weights only load failed" in (
        refused.stderr
    )
    assert "(predictor.py:43, raised in torch/serialization.py:" in refused.stderr
    assert "set TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1" in refused.stderr

    (app / ".env").write_text("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1\n")
    server = serve(app / "predictor.py", cwd=app, timeout=300)
    rv = requests.post(server.url, json={"url": image_url, "threshold": "0.2"}, timeout=300)
    assert rv.status_code == 200, rv.text
    boxes, classes = rv.json()
    assert len(boxes) == len(classes)
    assert "preprocess(), postprocess() are the predictor's own methods" in server.log()
