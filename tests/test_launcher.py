"""Launching a deployment: its .env file, and start.sh's port (the platform's rule)."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import requests
from conftest import ROOT, clean_env, free_port, stop, wait_ready

from openbayes_serving.launcher import command_for, read_dotenv

DOTENV = """\
# settings for this deployment
GREETING=hello
export SPACED = two words   # a comment after a value
QUOTED="line one\\nline two"
LITERAL='$HOME stays \\n as written'
EMPTY=
ALREADY=from-dotenv
not a line
"""

ENV_PREDICTOR = """
import os

import openbayes_serving as serv


class Predictor:
    def predict(self, json):
        return {name: os.environ.get(name) for name in json["names"]}


if __name__ == "__main__":
    serv.run(Predictor)
"""


def test_dotenv_lines_parse_as_the_platform_writes_them(tmp_path, caplog):
    (tmp_path / ".env").write_text(DOTENV)
    assert read_dotenv(tmp_path / ".env") == {
        "GREETING": "hello",
        "SPACED": "two words",
        "QUOTED": "line one\nline two",
        "LITERAL": "$HOME stays \\n as written",
        "EMPTY": "",
        "ALREADY": "from-dotenv",
    }
    assert f"{tmp_path / '.env'}:8 is not NAME=VALUE; skipped" in caplog.text
    assert read_dotenv(tmp_path / "missing.env") == {}


def test_run_dir_adds_dotenv_variables_without_overriding_the_environment(tmp_path, monkeypatch):
    (tmp_path / ".env").write_text(DOTENV)
    (tmp_path / "start.sh").write_text("exit 0\n")
    monkeypatch.setenv("ALREADY", "from-environment")
    _, env = command_for(tmp_path, [])
    assert env["GREETING"] == "hello"
    assert env["ALREADY"] == "from-environment"


def test_a_dotenv_that_turns_on_production_moves_start_sh_to_port_80(tmp_path):
    (tmp_path / ".env").write_text("OPENBAYES_SERVING_PRODUCTION=1\n")
    (tmp_path / "start.sh").write_text("exit 0\n")
    _, env = command_for(tmp_path, [])
    assert env["PORT"] == "80"


@pytest.fixture
def app(tmp_path: Path) -> Path:
    directory = tmp_path / "app"
    directory.mkdir()
    (directory / "predictor.py").write_text(ENV_PREDICTOR)
    (directory / ".env").write_text(DOTENV)
    return directory


NAMES = {"names": ["GREETING", "SPACED", "QUOTED", "ALREADY"]}
EXPECTED = {
    "GREETING": "hello",
    "SPACED": "two words",
    "QUOTED": "line one\nline two",
    "ALREADY": "from-environment",
}


def test_python_predictor_py_loads_the_dotenv_beside_it(serve, app, tmp_path):
    # started from another directory: the .env beside predictor.py is the one read
    server = serve(app / "predictor.py", cwd=tmp_path, env={"ALREADY": "from-environment"})
    assert requests.post(server.url, json=NAMES, timeout=10).json() == EXPECTED
    assert "set from" in server.log()
    assert "GREETING, SPACED, QUOTED, LITERAL, EMPTY" in server.log()


def test_openbayes_serving_run_dir_loads_its_dotenv(app, tmp_path):
    port = free_port()
    cmd = [sys.executable, "-m", "openbayes_serving", "run", str(app), "--host", "127.0.0.1"]
    proc = subprocess.Popen(
        [*cmd, "--port", str(port)],
        cwd=tmp_path,
        env=clean_env(ALREADY="from-environment"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_ready(f"http://127.0.0.1:{port}", proc)
        rv = requests.post(f"http://127.0.0.1:{port}", json=NAMES, timeout=10)
        assert rv.json() == EXPECTED
    finally:
        assert stop(proc) == 0


# start.sh.example, run by bash as the platform runs it, with a python3 that only says
# which port it was asked to listen on (nothing binds port 80 here).
FAKE_PYTHON = '#!/bin/sh\necho "$@"\n'


@pytest.mark.parametrize(
    ("env", "port"),
    [
        pytest.param({}, "8080", id="outside-production"),
        pytest.param({"OPENBAYES_SERVING_PRODUCTION": "1"}, "80", id="production"),
        pytest.param({"PORT": "9100"}, "9100", id="port-given"),
        pytest.param(
            {"OPENBAYES_SERVING_PRODUCTION": "1", "OPENBAYES_SERVING_PORT": "9200"},
            "9200",
            id="openbayes-port-given",
        ),
    ],
)
def test_start_sh_example_listens_on_the_platforms_port(tmp_path, env, port):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "python3"
    fake.write_text(FAKE_PYTHON)
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    base = {k: v for k, v in os.environ.items() if not k.startswith("OPENBAYES_")}
    base.pop("PORT", None)
    base["PATH"] = f"{bin_dir}{os.pathsep}{base['PATH']}"
    result = subprocess.run(
        ["bash", str(ROOT / "start.sh.example")],
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    assert result.stdout.split() == ["-m", "http.server", port, "--bind", "0.0.0.0"]
