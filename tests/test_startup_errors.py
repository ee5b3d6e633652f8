"""A model that fails to build: the line that says where, the traceback, the torch hint."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import requests
from conftest import PREDICTORS, clean_env, free_port

from openbayes_serving.instances import WEIGHTS_ONLY_HINT, describe_exception


def run_to_exit(script: Path, cwd: Path | None = None, **env: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, str(script), "--host", "127.0.0.1", "--port", str(free_port())]
    return subprocess.run(
        cmd, cwd=cwd, capture_output=True, text=True, timeout=120, env=clean_env(**env)
    )


def _line_of(path: Path, text: str) -> int:
    return next(i for i, line in enumerate(path.read_text().splitlines(), 1) if text in line)


def test_library_failure_names_the_predictor_line_and_the_library_line():
    script = PREDICTORS / "init_raises_in_library.py"
    result = run_to_exit(script)
    assert result.returncode == 3
    mine = _line_of(script, "json.loads(")
    (line,) = [x for x in result.stderr.splitlines() if "Predictor.__init__() raised" in x]
    assert (
        "Predictor.__init__() raised JSONDecodeError: Expecting property name enclosed in "
        f"double quotes: line 1 column 2 (char 1) (init_raises_in_library.py:{mine}, "
        "raised in json/decoder.py:"
    ) in line
    # local mode: the whole traceback follows, from the predictor's frame inward
    traceback = result.stderr.split(line, 1)[1]
    assert "Traceback (most recent call last):" in traceback
    frames = [x for x in traceback.splitlines() if x.strip().startswith('File "')]
    assert "init_raises_in_library.py" in frames[0]
    assert "json/decoder.py" in frames[-1]
    assert "openbayes_serving" not in traceback


def test_production_prints_the_line_without_a_traceback():
    result = run_to_exit(PREDICTORS / "init_raises_in_library.py", OPENBAYES_SERVING_PRODUCTION="1")
    assert result.returncode == 3
    assert "raised in json/decoder.py:" in result.stderr
    assert "Traceback" not in result.stderr


def test_an_exception_raised_in_predictor_py_names_its_line_only():
    def fails() -> None:
        raise RuntimeError("weights\x1b[1m file\x1b[0m\n\tis corrupt")

    try:
        fails()
    except RuntimeError as exc:
        text = describe_exception(exc, Path(__file__).resolve())
    line = _line_of(Path(__file__), 'raise RuntimeError("weights')
    # one line: whitespace collapsed, terminal colours dropped
    assert text == f"RuntimeError: weights file is corrupt (test_startup_errors.py:{line})"


CHECKPOINT_PREDICTOR = """
import torch

import openbayes_serving as serv


class Predictor:
    def __init__(self):
        self.model = torch.load("model.pt")["model"]

    def predict(self, json):
        x = torch.tensor(json["x"], dtype=torch.float32)
        return {"y": self.model(x).tolist()}


if __name__ == "__main__":
    serv.run(Predictor)
"""


@pytest.fixture
def pickled_checkpoint(tmp_path: Path) -> Path:
    """A predictor beside a whole pickled module, as yolov5's checkpoints are saved."""
    import torch

    app = tmp_path / "app"
    app.mkdir()
    (app / "predictor.py").write_text(CHECKPOINT_PREDICTOR)
    model = torch.nn.Linear(2, 1)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[1.0, 2.0]]))
        model.bias.zero_()
    torch.save({"model": model}, app / "model.pt")
    return app


def test_a_torch_weights_only_refusal_says_how_to_load_a_trusted_checkpoint(pickled_checkpoint):
    result = run_to_exit(
        pickled_checkpoint / "predictor.py",
        cwd=pickled_checkpoint,
        OPENBAYES_SERVING_PRODUCTION="1",
    )
    assert result.returncode == 3
    lines = result.stderr.splitlines()
    (at,) = [i for i, x in enumerate(lines) if "Predictor.__init__() raised UnpicklingError" in x]
    mine = _line_of(pickled_checkpoint / "predictor.py", "torch.load(")
    assert f"(predictor.py:{mine}, raised in torch/serialization.py:" in lines[at]
    assert lines[at + 1] == WEIGHTS_ONLY_HINT


def test_the_hints_env_file_loads_the_trusted_checkpoint_unchanged(serve, pickled_checkpoint):
    (pickled_checkpoint / ".env").write_text("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1\n")
    server = serve(pickled_checkpoint / "predictor.py", cwd=pickled_checkpoint, timeout=120)
    rv = requests.post(server.url, json={"x": [3, 4]}, timeout=30)
    assert rv.status_code == 200
    assert json.loads(rv.text) == {"y": [11.0]}
