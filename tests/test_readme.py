"""The README's code runs as written: its Python examples and its settings table."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT, clean_env, free_port, stop, wait_ready

README = (ROOT / "README.md").read_text(encoding="utf-8")


def python_block(heading: str) -> str:
    """The first ```python block under a README heading."""
    section = README.split(heading, 1)[1]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match, f"no python block under {heading}"
    return match.group(1)


@pytest.fixture(scope="module")
def onnx_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``openbayes-serving init --template onnx`` and its make_model.py, once for the file."""
    app = tmp_path_factory.mktemp("readme") / "app"
    subprocess.run(
        [sys.executable, "-m", "openbayes_serving", "init", str(app), "--template", "onnx"],
        check=True,
        capture_output=True,
        env=clean_env(),
    )
    subprocess.run([sys.executable, "make_model.py"], cwd=app, check=True, capture_output=True)
    return app


def test_readme_testing_example_runs_against_the_onnx_template(onnx_template):
    app = onnx_template
    (app / "test_readme_example.py").write_text(python_block("## Testing your predictor"))
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_readme_example.py"],
        cwd=app,
        capture_output=True,
        text=True,
        env=clean_env(),
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 passed" in result.stdout


def test_readme_client_example_runs_against_a_server(onnx_template):
    app = onnx_template
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "predictor.py", "--host", "127.0.0.1", "--port", str(port)],
        cwd=app,
        env=clean_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_ready(f"http://127.0.0.1:{port}", proc)
        code = python_block("## The Python client").replace("25252", str(port))
        result = subprocess.run(
            [sys.executable, "-c", code],
            cwd=app,
            capture_output=True,
            text=True,
            env=clean_env(),
            timeout=60,
        )
        assert result.returncode == 0, result.stderr
        assert result.stdout.startswith("422 inputs must be rows of 4 numbers")
    finally:
        assert stop(proc) == 0
