"""The runtimes under test (a virtualenv each) and their servers: start, wait, stop by pid."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from openbayes_serving.testing import free_port

from .bodies import Body, post
from .constants import HOST, LIT, LOGS, WORK
from .proc import spawn, stop

# What each runtime reports about itself: the packages to name and the module to import.
_PACKAGES = {
    LIT: ("litserve", "fastapi", "uvicorn", "onnxruntime", "numpy"),
}
_DEFAULT_PACKAGES = ("openbayes-serving", "onnxruntime", "numpy", "gunicorn", "uvicorn", "flask")
_MODULES = {LIT: "litserve"}
_PATHS = {LIT: "/predict"}  # LitServe's default endpoint; the others answer POST /

_VERSIONS_SCRIPT = """
import importlib, importlib.metadata as m, json, sys
packages, module = json.loads(sys.argv[1]), sys.argv[2]
out = {"python": sys.version.split()[0]}
for name in packages:
    try:
        out[name] = m.version(name)
    except m.PackageNotFoundError:
        pass
try:
    importlib.import_module(module)
    out["import"] = "ok"
except Exception as exc:
    out["import"] = "%s: %s" % (type(exc).__name__, exc)
print(json.dumps(out))
"""


@dataclass
class Runtime:
    """One server runtime under test: its interpreter, environment and endpoint."""

    name: str
    python: Path
    env: dict[str, str]
    versions: dict[str, str] = field(default_factory=dict)
    extra_args: list[str] = field(default_factory=list)
    path: str = "/"


def base_env() -> dict[str, str]:
    """The servers' environment: production mode, no OPENBAYES_* or PYTHONPATH from outside."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENBAYES_")}
    env.update(OPENBAYES_SERVING_PRODUCTION="1", PYTHONUNBUFFERED="1")
    env.pop("PYTHONPATH", None)
    return env


def load_runtime(name: str, venv: Path) -> Runtime:
    """Describe the runtime installed in ``venv`` (an import failure is reported, not hidden)."""
    python = venv / "bin" / "python"
    env = base_env()
    packages = json.dumps(_PACKAGES.get(name, _DEFAULT_PACKAGES))
    module = _MODULES.get(name, "openbayes_serving")
    done = subprocess.run(
        [str(python), "-c", _VERSIONS_SCRIPT, packages, module],
        cwd=WORK,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    found = dict(json.loads(done.stdout)) if done.returncode == 0 else {"import": done.stderr}
    return Runtime(name, python, env, found, path=_PATHS.get(name, "/"))


@dataclass
class Server:
    """A running server process, the port it listens on and the path it answers."""

    proc: subprocess.Popen[bytes]
    port: int
    path: str
    log: Path
    started: float


def start_server(
    runtime: Runtime,
    predictor: Path,
    tag: str,
    args: list[str] | None = None,
    extra_env: dict[str, str] | None = None,
) -> Server:
    """Start ``predictor`` under ``runtime`` on a free loopback port (not yet ready)."""
    port = free_port()
    cmd = [str(runtime.python), predictor.name, "--host", HOST, "--port", str(port)]
    env = {**runtime.env, **(extra_env or {})}
    log_name = f"{tag}-{runtime.name}.log"
    started = time.perf_counter()
    proc = spawn(cmd + list(args or []) + runtime.extra_args, predictor.parent, env, log_name)
    return Server(proc, port, runtime.path, LOGS / log_name, started)


def wait_first_200(server: Server, body: Body, timeout: float = 120.0) -> float:
    """Poll POST until it answers 200; return seconds since the process started."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            tail = server.log.read_text(errors="replace")[-1500:]
            raise RuntimeError(f"server exited with {server.proc.returncode}:\n{tail}")
        try:
            status, answer = post(server.port, body, server.path, timeout=30.0)
        except (OSError, http.client.HTTPException):
            status, answer = 0, b""
        if status == 200:
            return time.perf_counter() - server.started
        if 400 <= status < 500 and status != 404:  # up, and refusing what it is sent
            raise RuntimeError(f"answered {status}: {answer[:300]!r}, see {server.log}")
        time.sleep(0.005)
    raise RuntimeError(f"no 200 on port {server.port} within {timeout:.0f} s, see {server.log}")


@contextlib.contextmanager
def serving(
    runtime: Runtime,
    predictor: Path,
    tag: str,
    body: Body,
    args: list[str] | None = None,
    extra_env: dict[str, str] | None = None,
) -> Iterator[Server]:
    """A ready server for the duration of the block, stopped by pid afterwards."""
    server = start_server(runtime, predictor, tag, args, extra_env)
    try:
        wait_first_200(server, body)
        yield server
    finally:
        stop(server.proc)
