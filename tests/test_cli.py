"""The command line: init / run / predict, through subprocesses and through main(argv)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
from conftest import ROOT, clean_env, free_port, stop, wait_ready

from openbayes_serving import cli
from openbayes_serving.predictor import find_predictor_class
from openbayes_serving.testing import LocalClient


@pytest.mark.parametrize(
    "command",
    [
        [sys.executable, "-m", "openbayes_serving", "--help"],
        [str(Path(sys.executable).parent / "openbayes-serving"), "--help"],
        [str(Path(sys.executable).parent / "serving"), "--help"],
        [sys.executable, "-m", "openbayes_serving", "run", "--help"],
        [sys.executable, "-m", "openbayes_serving", "init", "--help"],
        [sys.executable, "-m", "openbayes_serving", "predict", "--help"],
    ],
    ids=["module", "openbayes-serving", "serving", "run", "init", "predict"],
)
def test_entry_points_answer_help(command):
    result = subprocess.run(command, capture_output=True, text=True, env=clean_env(), timeout=60)
    assert result.returncode == 0
    assert "usage:" in result.stdout


def test_init_writes_a_runnable_basic_predictor(tmp_path, capsys):
    assert cli.main(["init", str(tmp_path / "app")]) == 0
    assert "predictor.py" in capsys.readouterr().out
    cls = find_predictor_class(tmp_path / "app" / "predictor.py")
    with LocalClient(cls) as client:
        assert client.post(json={"a": 1}).json() == {"greeting": "hello", "echo": {"a": 1}}


def test_init_refuses_to_overwrite_without_force(tmp_path, capsys):
    (tmp_path / "predictor.py").write_text("mine")
    assert cli.main(["init", str(tmp_path)]) == 2
    assert "already has predictor.py; pass --force" in capsys.readouterr().err
    assert (tmp_path / "predictor.py").read_text() == "mine"
    assert cli.main(["init", str(tmp_path), "--force"]) == 0


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "openbayes_serving", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=clean_env(),
        timeout=120,
    )


def test_onnx_template_runs_as_written(tmp_path):
    assert run_cli("init", "app", "--template", "onnx", cwd=tmp_path).returncode == 0
    made = subprocess.run(
        [sys.executable, "make_model.py"], cwd=tmp_path / "app", capture_output=True
    )
    assert made.returncode == 0
    result = run_cli(
        "predict", "app", "--json", '{"inputs": [[1, 2, 3, 4], [0, 0, 0, 0]]}', cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout)
    assert len(answer["outputs"]) == 2
    assert answer["outputs"][1] == pytest.approx([1 / 3] * 3, abs=1e-6)
    bad = run_cli("predict", "app", "--json", '{"inputs": [1]}', cwd=tmp_path)
    assert bad.returncode == 1
    assert "rows of 4 numbers" in bad.stdout


def test_pytorch_template_runs_as_written(tmp_path):
    pytest.importorskip("torch", reason="the torch extra is installed by `make test`")
    cli.main(["init", str(tmp_path), "--template", "pytorch"])
    with LocalClient(find_predictor_class(tmp_path / "predictor.py")) as client:
        probabilities = client.post(json={"inputs": [[1, 2, 3, 4]]}).json()["probabilities"]
    assert len(probabilities[0]) == 3
    assert sum(probabilities[0]) == pytest.approx(1.0, abs=1e-5)


def test_batch_template_runs_as_written(tmp_path):
    cli.main(["init", str(tmp_path), "--template", "batch"])
    with LocalClient(find_predictor_class(tmp_path / "predictor.py")) as client:
        answer = client.post(json={"x": [1, 0, 0, 0]}).json()
        assert answer["batch_size"] == 1
        assert len(answer["y"]) == 2
        assert client.post(json={"x": [1]}).status_code == 422


def test_stream_template_runs_as_written(tmp_path):
    cli.main(["init", str(tmp_path), "--template", "stream"])
    with LocalClient(find_predictor_class(tmp_path / "predictor.py")) as client:
        rv = client.post(json={"text": "a b c", "delay": 0})
    assert rv.content_type == "application/x-ndjson"
    assert [json.loads(line) for line in rv.text.splitlines()] == [{"token": t} for t in "abc"]


def test_predict_sends_a_file_as_the_raw_body(tmp_path):
    (tmp_path / "predictor.py").write_text(
        "class PythonPredictor:\n"
        "    def predict(self, data, params):\n"
        "        return {'size': len(data), 'tag': params.get('tag')}\n"
    )
    (tmp_path / "blob.bin").write_bytes(b"x" * 10)
    result = run_cli("predict", ".", "--file", "blob.bin", "--param", "tag=t1", cwd=tmp_path)
    assert json.loads(result.stdout) == {"size": 10, "tag": "t1"}


def test_run_serves_predictor_py_with_the_directory_as_working_directory(tmp_path):
    app = tmp_path / "app"
    app.mkdir()
    (app / "labels.txt").write_text("cat")
    (app / "predictor.py").write_text(
        "import openbayes_serving as serv\n"
        "class Predictor:\n"
        "    def __init__(self):\n"
        "        self.label = open('labels.txt').read()\n"
        "    def predict(self, json):\n"
        "        return {'label': self.label}\n"
        "if __name__ == '__main__':\n"
        "    serv.run(Predictor)\n"
    )
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "openbayes_serving",
            "run",
            str(app),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        env=clean_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_ready(f"http://127.0.0.1:{port}", proc)
        assert requests.post(f"http://127.0.0.1:{port}", json={}, timeout=5).json() == {
            "label": "cat"
        }
    finally:
        assert stop(proc) == 0


def test_run_prefers_start_sh_and_gives_it_the_port(tmp_path):
    (tmp_path / "predictor.py").write_text("raise SystemExit('predictor.py must not run')\n")
    (tmp_path / "start.sh").write_text((ROOT / "start.sh.example").read_text())
    (tmp_path / "hello.txt").write_text("from start.sh")
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "openbayes_serving", "run", str(tmp_path), "--port", str(port)],
        env=clean_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                rv = requests.get(f"http://127.0.0.1:{port}/hello.txt", timeout=1)
                break
            except requests.ConnectionError:
                time.sleep(0.1)
        assert rv.text == "from start.sh"
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=10)


def test_start_sh_gets_port_80_in_production_and_the_port_flag_otherwise(tmp_path, monkeypatch):
    from openbayes_serving.launcher import command_for

    (tmp_path / "start.sh").write_text("exit 0\n")
    monkeypatch.setenv("OPENBAYES_SERVING_PRODUCTION", "1")
    command, env = command_for(tmp_path, [])
    assert command == ["bash", str((tmp_path / "start.sh").resolve())]
    assert env["PORT"] == env["OPENBAYES_SERVING_PORT"] == "80"
    _, env = command_for(tmp_path, ["--port", "8123", "--workers", "2"])
    assert env["PORT"] == "8123"


def test_run_of_a_directory_without_predictor_exits_2(tmp_path):
    result = run_cli("run", str(tmp_path), cwd=tmp_path)
    assert result.returncode == 2
    assert "has neither start.sh nor predictor.py" in result.stderr


def test_init_works_from_a_non_editable_install(tmp_path):
    target = tmp_path / "site"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "--target",
            str(target),
            str(ROOT),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    env = clean_env(PYTHONPATH=str(target))
    result = subprocess.run(
        [sys.executable, "-m", "openbayes_serving", "init", "out", "--template", "onnx"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "out" / "predictor.py").read_text() == (
        ROOT / "templates" / "onnx" / "predictor.py"
    ).read_text()
    assert (tmp_path / "out" / "make_model.py").exists()
