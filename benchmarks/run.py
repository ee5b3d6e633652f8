"""Benchmark this project's runtime against the reference openbayes-serving 0.5.0.

Run it through the Makefile (`make -C benchmarks bench`, or `quick`), which builds the
virtualenvs, the model and wrk first. Every server binds 127.0.0.1 only, runs in its own
process group and is stopped by pid; every load loop is bounded in count and time.
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import contextlib
import datetime
import functools
import http.client
import importlib.util
import json
import logging
import math
import os
import platform
import random
import re
import shlex
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

# BLAS stays single-threaded in this process and in every server (S3/S4 compute).
for _name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_name] = "1"

HERE = Path(__file__).resolve().parent
WORK = HERE / ".work"
LOGS = WORK / "logs"
MODEL = WORK / "model" / "mlp.onnx"
PREDICTORS = HERE / "predictors"
EXAMPLE_MODEL = HERE.parent / "examples" / "mlp-batch" / "make_model.py"
HOST = "127.0.0.1"
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")
REF, NEW, MODEL_ALONE = "reference", "new", "model"
SCENARIOS = ("s1", "s2", "s3", "s4", "s5")
MLP_SIZES = (512, 2048, 2048, 10)
SLOW_DELAY_S = 0.05
COMPUTE_TARGET_S = 0.005
S4_MAX_QUEUE = 8
S4_MAX_CONNECTIONS = 512
S4_MAX_REQUESTS = 20000

logger = logging.getLogger("bench")


# ---------------------------------------------------------------------------- the model


def make_model(path: Path) -> None:
    """Write the MLP of examples/mlp-batch (512-2048-2048-10, seeded) to ``path``."""
    import onnx

    example = _load_module("mlp_model", EXAMPLE_MODEL)
    assert tuple(example.SIZES) == MLP_SIZES, "the example's MLP changed: update MLP_SIZES"
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(example.build(), str(path))
    logger.info("wrote %s (%.1f MB)", path, path.stat().st_size / 1e6)


def measure_model_alone(seconds: float) -> dict[str, float]:
    """Rows/s of onnxruntime in this process: batch 32 and 1, default and 1-thread options."""
    import numpy as np
    import onnxruntime as ort

    rates: dict[str, float] = {}
    rng = np.random.default_rng(2)
    for config in ("default", "1thread"):
        options = ort.SessionOptions()
        if config == "1thread":
            options.intra_op_num_threads = 1
            options.inter_op_num_threads = 1
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        session = ort.InferenceSession(str(MODEL), options, providers=["CPUExecutionProvider"])
        for batch in (32, 1):
            x = rng.standard_normal((batch, MLP_SIZES[0])).astype(np.float32)
            for _ in range(10):
                session.run(None, {"x": x})
            calls, start = 0, time.perf_counter()
            while time.perf_counter() - start < seconds and calls < 1_000_000:
                session.run(None, {"x": x})
                calls += 1
            rates[f"{config}.b{batch}"] = batch * calls / (time.perf_counter() - start)
        del session
    rates["b32"] = max(rates["default.b32"], rates["1thread.b32"])
    rates["b1"] = max(rates["default.b1"], rates["1thread.b1"])
    return rates


def _load_module(name: str, path: Path) -> Any:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def time_compute(reps: int, runs: int = 150) -> float:
    """Median seconds of one S3 ``compute(reps)`` call in this process."""
    work = _load_module("s3_work", PREDICTORS / "s3_io" / "work.py")
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        work.compute(reps)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def calibrate_compute() -> int:
    """The number of matmuls that makes about 5 ms of S3 compute (the quickest of 3 tries)."""
    time_compute(20, 5)
    one = min(time_compute(1, 100) for _ in range(3))
    return max(1, round(COMPUTE_TARGET_S / one))


# ------------------------------------------------------------------ processes and /proc


_LIVE: dict[int, subprocess.Popen[bytes]] = {}


def _proc_stat(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rindex(")") + 2 :].split()  # fields from "state" on


def tree_pids(root: int) -> list[int]:
    """The pid ``root`` and all its live descendants."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            fields = _proc_stat(int(entry))
            if fields is not None:
                children.setdefault(int(fields[1]), []).append(int(entry))
    pids, todo = [], [root]
    while todo:
        pid = todo.pop()
        pids.append(pid)
        todo.extend(children.get(pid, []))
    return pids


def tree_cpu_seconds(root: int) -> float:
    """User + system CPU time of the process tree under ``root``."""
    ticks = 0
    for pid in tree_pids(root):
        fields = _proc_stat(pid)
        if fields is not None:
            ticks += int(fields[11]) + int(fields[12])
    return ticks / CLK_TCK


def tree_rss_mb(root: int) -> float:
    """Sum of the resident set sizes of the process tree under ``root``, in MB."""
    pages = 0
    for pid in tree_pids(root):
        fields = _proc_stat(pid)
        if fields is not None:
            pages += int(fields[21])
    return pages * PAGE_SIZE / 1e6


def tree_pss_mb(root: int) -> float:
    """Sum of the proportional set sizes (shared pages split) of the tree under ``root``, in MB."""
    kb = 0
    for pid in tree_pids(root):
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    kb += int(line.split()[1])
    return kb / 1e3


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def spawn(cmd: list[str], cwd: Path, env: dict[str, str], log_name: str) -> subprocess.Popen[bytes]:
    """Start ``cmd`` in its own process group, output to .work/logs/``log_name``."""
    LOGS.mkdir(parents=True, exist_ok=True)
    with open(LOGS / log_name, "wb") as log:
        proc = subprocess.Popen(
            cmd, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    _LIVE[proc.pid] = proc
    return proc


def stop(proc: subprocess.Popen[bytes], grace: float = 10.0) -> None:
    """SIGTERM the process group we started, then SIGKILL it if it has not exited."""
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        if proc.poll() is not None:
            break
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=wait)
    # Children left behind in the group (a worker whose arbiter already exited).
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    _LIVE.pop(proc.pid, None)


def stop_all() -> None:
    """Stop every process this driver started and has not stopped yet."""
    for proc in list(_LIVE.values()):
        stop(proc, grace=3.0)


def _on_signal(signum: int, frame: FrameType | None) -> None:
    stop_all()
    sys.exit(128 + signum)


# ------------------------------------------------------------------------ HTTP bodies


@dataclass(frozen=True)
class Body:
    """A request body with its content type and the Accept header to send."""

    name: str
    data: bytes
    content_type: str
    accept: str = "application/json"

    def headers(self) -> dict[str, str]:
        return {"Content-Type": self.content_type, "Accept": self.accept}


def _bodies() -> dict[str, Body]:
    import msgpack

    gen = random.Random(1)
    row = {"x": [round(gen.gauss(0.0, 1.0), 4) for _ in range(MLP_SIZES[0])]}
    echo = {"model": "echo", "id": 12345, "values": [1, 2, 3], "ok": True}
    as_json = json.dumps(row, separators=(",", ":")).encode()
    return {
        "echo": Body("echo", json.dumps(echo).encode(), "application/json"),
        "row_json": Body("row_json", as_json, "application/json"),
        "row_msgpack": Body(
            "row_msgpack", msgpack.packb(row), "application/msgpack", "application/msgpack"
        ),
        "small": Body("small", json.dumps({"id": 1}).encode(), "application/json"),
    }


BODIES: dict[str, Body] = {}  # filled by main()


def post(port: int, body: Body, timeout: float = 10.0) -> tuple[int, bytes]:
    """POST ``body`` to / and return the status and the answer."""
    conn = http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        conn.request("POST", "/", body=body.data, headers=body.headers())
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


# ------------------------------------------------------------------------ runtimes


@dataclass
class Runtime:
    """One of the two servers under test: its interpreter and environment."""

    name: str
    python: Path
    env: dict[str, str]
    versions: dict[str, str] = field(default_factory=dict)
    extra_args: list[str] = field(default_factory=list)


def _base_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENBAYES_")}
    env.update(OPENBAYES_SERVING_PRODUCTION="1", PYTHONUNBUFFERED="1")
    env.pop("PYTHONPATH", None)
    return env


_VERSIONS_SCRIPT = """
import importlib.metadata as m, json, sys
out = {"python": sys.version.split()[0]}
for name in ("openbayes-serving", "onnxruntime", "numpy", "gunicorn", "uvicorn", "flask"):
    try:
        out[name] = m.version(name)
    except m.PackageNotFoundError:
        pass
try:
    import openbayes_serving
    out.setdefault("openbayes-serving", getattr(openbayes_serving, "__version__", "?"))
    out["import"] = "ok"
except Exception as exc:
    out["import"] = "%s: %s" % (type(exc).__name__, exc)
print(json.dumps(out))
"""


def load_runtime(name: str, venv: Path) -> Runtime:
    """Describe the runtime installed in ``venv`` (an import failure is reported, not hidden)."""
    python = venv / "bin" / "python"
    env = _base_env()

    done = subprocess.run(
        [str(python), "-c", _VERSIONS_SCRIPT],
        cwd=WORK,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    found = dict(json.loads(done.stdout)) if done.returncode == 0 else {"import": done.stderr}
    return Runtime(name, python, env, found)


@dataclass
class Server:
    """A running server process and the port it listens on."""

    proc: subprocess.Popen[bytes]
    port: int
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
    return Server(proc, port, LOGS / log_name, started)


def wait_first_200(server: Server, body: Body, timeout: float = 120.0) -> float:
    """Poll POST / until it answers 200; return seconds since the process started."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            tail = server.log.read_text(errors="replace")[-1500:]
            raise RuntimeError(f"server exited with {server.proc.returncode}:\n{tail}")
        try:
            status, _ = post(server.port, body, timeout=30.0)
            if status == 200:
                return time.perf_counter() - server.started
        except (OSError, http.client.HTTPException):
            pass
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


# ------------------------------------------------------------------------------- wrk


@dataclass
class WrkResult:
    """What one wrk run reported."""

    requests: int
    seconds: float
    non_2xx: int
    socket_errors: int
    p50_ms: float | None = None
    p99_ms: float | None = None

    @property
    def ok_rps(self) -> float:
        """Successful (2xx) requests per second."""
        return (self.requests - self.non_2xx) / self.seconds

    @property
    def bad(self) -> int:
        """Non-2xx answers plus socket errors."""
        return self.non_2xx + self.socket_errors


_UNITS_MS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3}
_UNITS_S = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0}


def _lua_string(data: bytes) -> str:
    out = []
    for byte in data:
        char = chr(byte)
        out.append(char if 32 <= byte < 127 and char not in '"\\' else f"\\{byte:03d}")
    return '"' + "".join(out) + '"'


def write_lua(body: Body) -> Path:
    """A wrk script that POSTs ``body`` with its headers."""
    path = WORK / "lua" / f"{body.name}.lua"
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = ['wrk.method = "POST"', f"wrk.body = {_lua_string(body.data)}"]
    lines += [f'wrk.headers["{name}"] = "{value}"' for name, value in body.headers().items()]
    path.write_text("\n".join(lines) + "\n")
    return path


def run_wrk(
    port: int, body: Body, connections: int, seconds: int, latency: bool = False
) -> WrkResult:
    """Closed-loop load with wrk (one thread) for ``seconds``; parse its report."""
    cmd = ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--timeout", "10s"]
    cmd += ["--latency"] if latency else []
    cmd += ["-s", str(write_lua(body)), f"http://{HOST}:{port}/"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60)
    text = done.stdout
    match = re.search(r"(\d+) requests in ([\d.]+)(us|ms|s|m)", text)
    if done.returncode != 0 or match is None:
        raise RuntimeError(f"wrk failed ({done.returncode}): {text} {done.stderr}")
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    errors = re.search(r"connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    result = WrkResult(
        requests=int(match.group(1)),
        seconds=float(match.group(2)) * _UNITS_S[match.group(3)],
        non_2xx=int(non_2xx.group(1)) if non_2xx else 0,
        socket_errors=sum(int(n) for n in errors.groups()) if errors else 0,
    )
    for pct, attr in (("50", "p50_ms"), ("99", "p99_ms")):
        found = re.search(rf"^\s+{pct}%\s+([\d.]+)(us|ms|s|m)", text, re.MULTILINE)
        if found:
            setattr(result, attr, float(found.group(1)) * _UNITS_MS[found.group(2)])
    return result


# --------------------------------------------------------------- open-loop load (S4)


@dataclass
class OpenLoopResult:
    """Outcome of an open-loop run: status counts, latencies by status, generator lag."""

    sent: int = 0
    statuses: dict[str, int] = field(default_factory=dict)
    latencies: dict[str, list[float]] = field(default_factory=dict)
    lags: list[float] = field(default_factory=list)

    def add(self, outcome: str, latency: float | None = None) -> None:
        self.statuses[outcome] = self.statuses.get(outcome, 0) + 1
        if latency is not None:
            self.latencies.setdefault(outcome, []).append(latency)


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bool]:
    line = await reader.readline()
    if not line:
        raise ConnectionError("connection closed before the status line")
    status = int(line.split()[1])
    length, close, chunked = 0, line.startswith(b"HTTP/1.0"), False
    while True:
        header = await reader.readline()
        if header in (b"\r\n", b"\n", b""):
            break
        name, _, value = header.partition(b":")
        name, value = name.strip().lower(), value.strip().lower()
        if name == b"content-length":
            length = int(value)
        elif name == b"connection":
            close = value == b"close"
        elif name == b"transfer-encoding":
            chunked = b"chunked" in value
    if chunked:
        while True:
            size = int((await reader.readline()).split(b";")[0], 16)
            await reader.readexactly(size + 2)
            if size == 0:
                break
    else:
        await reader.readexactly(length)
    return status, close


class OpenLoop:
    """Send requests at a fixed rate whatever the answers, over a bounded connection pool.

    Latency counts from the moment a request is written; ``lags`` records how late the
    generator was against its schedule (a slot wait included), so a slow client shows.
    """

    def __init__(self, port: int, body: Body, rate: float, seconds: float, timeout: float):
        self.port = port
        self.rate = rate
        self.count = min(S4_MAX_REQUESTS, int(rate * seconds))
        self.timeout = timeout
        head = f"POST / HTTP/1.1\r\nHost: {HOST}:{port}\r\n"
        head += "".join(f"{name}: {value}\r\n" for name, value in body.headers().items())
        head += f"Content-Length: {len(body.data)}\r\n\r\n"
        self.request = head.encode() + body.data
        self.idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
        self.result = OpenLoopResult()

    async def _exchange(self) -> tuple[int, float]:
        conn = self.idle.pop() if self.idle else await asyncio.open_connection(HOST, self.port)
        reader, writer = conn
        try:
            start = time.perf_counter()
            writer.write(self.request)
            status, close = await _read_response(reader)
            latency = time.perf_counter() - start
        except BaseException:
            writer.close()
            raise
        if close:
            writer.close()
        else:
            self.idle.append(conn)
        return status, latency

    async def _one(self, due: float, slots: asyncio.Semaphore) -> None:
        async with slots:
            self.result.lags.append(time.perf_counter() - due)
            try:
                status, latency = await asyncio.wait_for(self._exchange(), self.timeout)
                self.result.add(str(status), latency)
            except asyncio.TimeoutError:
                self.result.add("timeout")
            except (OSError, ValueError, IndexError, asyncio.IncompleteReadError):
                self.result.add("error")

    async def run(self) -> OpenLoopResult:
        slots = asyncio.Semaphore(S4_MAX_CONNECTIONS)
        tasks = []
        start = time.perf_counter()
        for i in range(self.count):
            due = start + i / self.rate
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            elif i % 32 == 0:
                await asyncio.sleep(0)
            tasks.append(asyncio.create_task(self._one(due, slots)))
        self.result.sent = len(tasks)
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=self.timeout + 5.0)
            for task in pending:
                task.cancel()
                self.result.add("unfinished")
        for _, writer in self.idle:
            writer.close()
        return self.result


# ---------------------------------------------------------------- the slow server (S3)


async def _slow_handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while (await reader.readline()) not in (b"\r\n", b"\n", b""):
            pass
        await asyncio.sleep(SLOW_DELAY_S)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
        await writer.drain()
    except OSError:
        pass  # the client left; nothing to answer
    finally:
        writer.close()


async def _slow_server(port: int, lifetime: float) -> None:
    server = await asyncio.start_server(_slow_handler, HOST, port, backlog=1024)
    async with server:
        await asyncio.sleep(lifetime)  # bounded: the driver stops it long before


def start_slow_server(tool_python: str) -> tuple[subprocess.Popen[bytes], str]:
    """Start the loopback server that answers every GET after 50 ms; return it and its URL."""
    port = free_port()
    cmd = [tool_python, str(Path(__file__).resolve()), "--slow-server", str(port)]
    proc = spawn(cmd, HERE, dict(os.environ), "slow-server.log")
    url = f"http://{HOST}:{port}/"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection((HOST, port), timeout=1):
            return proc, url
        time.sleep(0.05)
    stop(proc)
    raise RuntimeError("slow server did not start")


# -------------------------------------------------------------------------- scenarios


@dataclass
class Bench:
    """Runs the scenarios and keeps every measured value, keyed metric -> runtime."""

    runtimes: dict[str, Runtime]
    seconds: int
    reps: int
    only: tuple[str, ...]
    values: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    compute_reps: int = 1
    slow_url: str = ""

    def record(self, metric: str, runtime: str, value: float) -> None:
        self.values.setdefault(metric, {}).setdefault(runtime, []).append(value)

    def median(self, metric: str, runtime: str) -> float | None:
        found = self.values.get(metric, {}).get(runtime)
        return statistics.median(found) if found else None

    def task_env(self) -> dict[str, str]:
        return {"BENCH_COMPUTE_REPS": str(self.compute_reps), "BENCH_SLOW_URL": self.slow_url}

    def guarded(self, label: str, runtime: str, action: Callable[[], None]) -> None:
        """Run one scenario on one runtime; a failure is recorded and the run goes on."""
        logger.info("%s on %s", label, runtime)
        try:
            action()
        except Exception as exc:  # one broken scenario must not stop the others
            logger.exception("%s on %s failed", label, runtime)
            self.failures.append(f"{label} on {runtime}: {str(exc).strip()[:300]}")

    def s1(self, runtime: Runtime) -> None:
        body = BODIES["echo"]
        with serving(runtime, PREDICTORS / "s1_echo" / "predictor.py", "s1", body) as server:
            run_wrk(server.port, body, 64, 1)
            cpu_before = tree_cpu_seconds(server.proc.pid)
            result = run_wrk(server.port, body, 64, self.seconds)
            cpu = tree_cpu_seconds(server.proc.pid) - cpu_before
            single = run_wrk(server.port, body, 1, self.seconds, latency=True)
        self.record("s1.rps", runtime.name, result.ok_rps)
        self.record("s1.cpu_us", runtime.name, cpu * 1e6 / max(1, result.requests))
        self.record("s1.bad", runtime.name, result.bad + single.bad)
        self.record("s1.p50_ms", runtime.name, single.p50_ms or math.nan)
        self.record("s1.p99_ms", runtime.name, single.p99_ms or math.nan)

    def _s2_server(self, runtime: Runtime, predictor: str, kind: str) -> None:
        path = PREDICTORS / "s2_model" / predictor
        args = ["--model-path", str(MODEL.parent)]
        with serving(runtime, path, f"s2-{kind}", BODIES["row_json"], args) as server:
            run_wrk(server.port, BODIES["row_json"], 64, 1)
            for codec in ("json", "msgpack"):
                result = run_wrk(server.port, BODIES[f"row_{codec}"], 64, self.seconds)
                self.record(f"s2.{kind}_{codec}.rps", runtime.name, result.ok_rps)
                self.record(f"s2.{kind}_{codec}.bad", runtime.name, result.bad)

    def s2(self, runtime: Runtime) -> None:
        self._s2_server(runtime, "predictor.py", "plain")
        if runtime.name == NEW:
            self._s2_server(runtime, "predictor_batch.py", "batch")

    def s3(self, runtime: Runtime) -> None:
        name = "predictor.py" if runtime.name == NEW else "predictor_ref.py"
        body = BODIES["small"]
        env = self.task_env()
        with serving(runtime, PREDICTORS / "s3_io" / name, "s3", body, None, env) as server:
            run_wrk(server.port, body, 64, 1)
            result = run_wrk(server.port, body, 64, self.seconds)
        self.record("s3.rps", runtime.name, result.ok_rps)
        self.record("s3.bad", runtime.name, result.bad)

    def s4(self, runtime: Runtime) -> None:
        path = PREDICTORS / "s4_overload" / "predictor.py"
        body = BODIES["small"]
        args = ["--max-queue", str(S4_MAX_QUEUE), "--request-timeout", "10"]
        args = args if runtime.name == NEW else []
        timeout = float(max(5, self.seconds))
        with serving(runtime, path, "s4", body, args, self.task_env()) as server:
            run_wrk(server.port, body, S4_MAX_QUEUE, 1)
            capacity = run_wrk(server.port, body, S4_MAX_QUEUE, max(2, self.seconds // 2)).ok_rps
            load = OpenLoop(server.port, body, 4 * capacity, self.seconds, timeout)
            result = asyncio.run(load.run())
            alive = False
            with contextlib.suppress(OSError, http.client.HTTPException):
                alive = server.proc.poll() is None and post(server.port, body)[0] == 200
        name = runtime.name
        self.record("s4.rate", name, 4 * capacity)
        self.record("s4.alive", name, 1.0 if alive else 0.0)
        self.record("s4.lag_p99_ms", name, 1e3 * _percentile(result.lags or [0.0], 99))
        sent = max(1, result.sent)
        answered = 0
        for outcome in ("200", "503"):
            count = result.statuses.get(outcome, 0)
            answered += count
            self.record(f"s4.share_{outcome}", name, 100 * count / sent)
            if result.latencies.get(outcome):
                p99 = _percentile(result.latencies[outcome], 99)
                self.record(f"s4.p99_{outcome}_ms", name, 1e3 * p99)
        self.record("s4.share_other", name, 100 * (result.sent - answered) / sent)
        logger.info("S4 %s: %.0f req/s offered, outcomes %s", name, 4 * capacity, result.statuses)

    def s5(self, runtime: Runtime) -> None:
        path = PREDICTORS / "s2_model" / "predictor.py"
        args = ["--model-path", str(MODEL.parent)]
        for _ in range(math.ceil(3 / self.reps)):
            server = start_server(runtime, path, "s5", args)
            try:
                cold = wait_first_200(server, BODIES["row_json"])
                run_wrk(server.port, BODIES["row_json"], 8, 2)
                rss = tree_rss_mb(server.proc.pid)
                pss = tree_pss_mb(server.proc.pid)
                count = len(tree_pids(server.proc.pid))
            finally:
                stop(server.proc)
            self.record("s5.cold_s", runtime.name, cold)
            self.record("s5.rss_mb", runtime.name, rss)
            self.record("s5.pss_mb", runtime.name, pss)
            self.record("s5.processes", runtime.name, count)

    def run(self) -> None:
        """Each repetition runs every scenario on both runtimes, the first one alternating.

        The model alone is measured right before S2 and the S3 compute right before and after
        S3, so that the ceilings see the same machine load as the servers.
        """
        scenarios: dict[str, Callable[[Runtime], None]] = {
            "s1": self.s1,
            "s2": self.s2,
            "s3": self.s3,
            "s4": self.s4,
            "s5": self.s5,
        }
        names = list(self.runtimes)
        for rep in range(self.reps):
            order = names if rep % 2 == 0 else names[::-1]
            logger.info("repetition %d/%d: %s", rep + 1, self.reps, " then ".join(order))
            for scenario in self.only:
                if scenario == "s2":
                    rates = measure_model_alone(max(1.0, self.seconds / 4))
                    for key, value in rates.items():
                        self.record(f"model.{key}", MODEL_ALONE, value)
                if scenario == "s3":
                    self.record("s3.compute_s", MODEL_ALONE, time_compute(self.compute_reps))
                for name in order:
                    action = functools.partial(scenarios[scenario], self.runtimes[name])
                    self.guarded(scenario.upper(), name, action)
                if scenario == "s3":  # once more after: the machine's load drifts
                    self.record("s3.compute_s", MODEL_ALONE, time_compute(self.compute_reps))


def _percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(pct / 100 * len(ordered)) - 1))]


# ---------------------------------------------------------------------------- report


def _known(*values: float | None) -> bool:
    return all(v is not None and not math.isnan(v) for v in values)


def _fmt(value: float | None, digits: int = 0) -> str:
    return f"{value:,.{digits}f}" if _known(value) else "n/a"


def _holds(test: Callable[..., bool], *values: float | None) -> bool | None:
    """``test(*values)``, or None (no verdict) when a value is missing."""
    return bool(test(*values)) if _known(*values) else None


def _times(new: float | None, ref: float | None) -> str:
    return f"{new / ref:.2f}x" if _known(new, ref) and ref else "n/a"  # type: ignore[operator]


def _of(value: float | None, ceiling: float | None) -> str:
    """A figure with its share of ``ceiling``: ``1,234 (56%)``."""
    if not _known(value, ceiling) or not ceiling:
        return _fmt(value)
    return f"{_fmt(value)} ({100 * value / ceiling:.0f}%)"  # type: ignore[operator]


def build_table(bench: Bench) -> list[str]:
    """The results table: one row per metric with both figures, the ratio and the verdict."""
    m = bench.median
    rows: list[tuple[str, ...]] = []

    def add(
        scn: str, metric: str, ref: str, new: str, vs: str, target: str, ok: bool | None
    ) -> None:
        verdict = "" if not target else {None: "n/a", True: "PASS", False: "MISS"}[ok]
        rows.append((scn, metric, ref, new, vs, target, verdict))

    r, n = m("s1.rps", REF), m("s1.rps", NEW)
    ok = _holds(lambda r, n: n >= 4 * r, r, n)
    add("S1", "echo req/s, 64 connections", _fmt(r), _fmt(n), _times(n, r), ">= 4x ref", ok)
    for pct in ("p50", "p99"):
        r, n = m(f"s1.{pct}_ms", REF), m(f"s1.{pct}_ms", NEW)
        add(
            "S1",
            f"{pct} latency, 1 connection (ms)",
            _fmt(r, 2),
            _fmt(n, 2),
            _times(n, r),
            "",
            None,
        )
    r, n = m("s1.cpu_us", REF), m("s1.cpu_us", NEW)
    ok = _holds(lambda n: n <= 120, n)
    add("S1", "server CPU per request (us)", _fmt(r), _fmt(n), _times(n, r), "<= 120 us", ok)

    b1, b32 = m("model.b1", MODEL_ALONE), m("model.b32", MODEL_ALONE)
    rj, nj = m("s2.plain_json.rps", REF), m("s2.plain_json.rps", NEW)
    rm, nm = m("s2.plain_msgpack.rps", REF), m("s2.plain_msgpack.rps", NEW)
    bj, bm = m("s2.batch_json.rps", NEW), m("s2.batch_msgpack.rps", NEW)
    ok = _holds(lambda n, c: n >= 0.8 * c, nj, b1)
    add(
        "S2",
        "MLP, JSON req/s (% of batch-1 ceiling)",
        _of(rj, b1),
        _of(nj, b1),
        _times(nj, rj),
        ">= 80% of batch-1",
        ok,
    )
    ok = _holds(lambda m, j: m >= j, nm, nj)
    add(
        "S2",
        "MLP, MessagePack req/s (% of batch-1)",
        _of(rm, b1),
        _of(nm, b1),
        _times(nm, rm),
        ">= JSON",
        ok,
    )
    ok = _holds(lambda n, c: n >= 0.6 * c, bj, b32)
    add(
        "S2",
        "MLP, JSON, @serv.batch vs ref unbatched (% of batch-32)",
        _fmt(rj),
        _of(bj, b32),
        _times(bj, rj),
        ">= 60% of batch-32",
        ok,
    )
    ok = _holds(lambda m, j: m >= j, bm, bj)
    add(
        "S2",
        "MLP, MessagePack, @serv.batch vs ref unbatched",
        _fmt(rm),
        _of(bm, b32),
        _times(bm, rm),
        ">= JSON batched",
        ok,
    )

    compute = m("s3.compute_s", MODEL_ALONE)
    ideal = 1 / compute if compute else None
    r, n = m("s3.rps", REF), m("s3.rps", NEW)
    ok = _holds(lambda n, i: n >= 0.9 * i, n, ideal)
    add(
        "S3",
        f"fetch + compute req/s (% of ideal {_fmt(ideal)}/s)",
        _of(r, ideal),
        _of(n, ideal),
        _times(n, r),
        ">= 90% of ideal",
        ok,
    )

    r, n = m("s4.rate", REF), m("s4.rate", NEW)
    add("S4", "offered open-loop rate, 4x capacity (req/s)", _fmt(r), _fmt(n), "", "", None)
    shares = {
        name: " / ".join(_fmt(m(f"s4.share_{k}", name), 1) + "%" for k in ("200", "503", "other"))
        for name in (REF, NEW)
    }
    ok = _holds(lambda o: o == 0, m("s4.share_other", NEW))
    add("S4", "answered 200 / 503 / neither", shares[REF], shares[NEW], "", "all 200 or 503", ok)
    r, n = m("s4.p99_200_ms", REF), m("s4.p99_200_ms", NEW)
    add("S4", "p99 latency of 200s (ms)", _fmt(r), _fmt(n), _times(n, r), "", None)
    r, n = m("s4.p99_503_ms", REF), m("s4.p99_503_ms", NEW)
    ok = _holds(lambda n: n <= 50, n)
    add("S4", "p99 latency of 503s (ms)", _fmt(r, 1), _fmt(n, 1), "", "<= 50 ms", ok)
    r, n = m("s4.lag_p99_ms", REF), m("s4.lag_p99_ms", NEW)
    add("S4", "load generator lag, p99 (ms)", _fmt(r, 1), _fmt(n, 1), "", "", None)
    alive = {name: bench.values.get("s4.alive", {}).get(name) for name in (REF, NEW)}
    said = {k: "n/a" if not v else ("yes" if min(v) == 1 else "no") for k, v in alive.items()}
    ok = None if not alive[NEW] else said[NEW] == "yes"
    add("S4", "server alive afterwards", said[REF], said[NEW], "", "alive", ok)

    r, n = m("s5.cold_s", REF), m("s5.cold_s", NEW)
    diff = f"{n - r:+.2f} s" if _known(r, n) else "n/a"  # type: ignore[operator]
    ok = _holds(lambda r, n: n <= r + 0.3, r, n)
    add(
        "S5",
        "cold start to first 200 (s, median)",
        _fmt(r, 2),
        _fmt(n, 2),
        diff,
        "<= ref + 0.3 s",
        ok,
    )
    r, n = m("s5.rss_mb", REF), m("s5.rss_mb", NEW)
    diff = f"{n - r:+.0f} MB" if _known(r, n) else "n/a"  # type: ignore[operator]
    ok = _holds(lambda r, n: n <= r + 30, r, n)
    add("S5", "RSS after warm-up, process tree (MB)", _fmt(r), _fmt(n), diff, "<= ref + 30 MB", ok)

    r, n = m("s5.pss_mb", REF), m("s5.pss_mb", NEW)
    diff = f"{n - r:+.0f} MB" if _known(r, n) else "n/a"  # type: ignore[operator]
    add("S5", "PSS after warm-up, process tree (MB)", _fmt(r), _fmt(n), diff, "", None)
    r, n = m("s5.processes", REF), m("s5.processes", NEW)
    add("S5", "processes in the server's tree", _fmt(r), _fmt(n), "", "", None)

    head = ("Scenario", "Metric", "Reference 0.5.0", "This project", "New vs ref", "Target", "")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]


def _machine() -> dict[str, str]:
    cpu = "unknown CPU"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    wrk = subprocess.run(["wrk", "--version"], capture_output=True, text=True, check=False)
    return {
        "cpu": cpu,
        "nproc": str(os.cpu_count()),
        "kernel": platform.release(),
        "wrk": " ".join((wrk.stdout or wrk.stderr).split()[:2]),
        "load": _loadavg(),
    }


def _loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def _versions(runtime: Runtime | None) -> str:
    if runtime is None:
        return "not run"
    shown = {k: v for k, v in runtime.versions.items() if k not in ("import", "install")}
    text = ", ".join(f"{k} {v}" for k, v in shown.items())
    if runtime.extra_args:
        text += f"; run with `{shlex.join(runtime.extra_args)}`"
    return text + (f" ({runtime.versions['install']})" if "install" in runtime.versions else "")


def write_report(bench: Bench, path: Path, label: str, machine: dict[str, str]) -> str:
    """Write the markdown report to ``path`` and return its text."""
    m = bench.median
    now = datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    compute = m("s3.compute_s", MODEL_ALONE)
    model = {
        k: _fmt(m(f"model.{k}", MODEL_ALONE))
        for k in ("default.b32", "default.b1", "1thread.b32", "1thread.b1", "b32", "b1")
    }
    out = [
        "# Benchmark results",
        "",
        f"Generated by `{label}` on {now}. Do not edit: run the command again (see README.md).",
        "",
        f"- Machine: {machine['nproc']} cores, {machine['cpu']}, Linux {machine['kernel']};"
        f" load average {machine['load']} at the start, {_loadavg()} at the end.",
        f"- Reference: {_versions(bench.runtimes.get(REF))}.",
        f"- This project: {_versions(bench.runtimes.get(NEW))}.",
        f"- Method: {machine['wrk']}, one thread, {bench.seconds} s per measurement after 1 s of"
        f" warm-up; {bench.reps} repetition(s), the runtime that goes first alternating; medians."
        " Both servers run in production mode (`OPENBAYES_SERVING_PRODUCTION=1`) with default"
        " settings unless a scenario says otherwise. Ratios are new / reference.",
        "",
        *build_table(bench),
        "",
        "Model alone (onnxruntime in-process, rows/s; the ceiling is the better option set):",
        "",
        "| onnxruntime options | batch 32 | batch 1 |",
        "|---|---|---|",
        f"| defaults | {model['default.b32']} | {model['default.b1']} |",
        f"| 1 intra-op thread, no spinning | {model['1thread.b32']} | {model['1thread.b1']} |",
        f"| ceiling | {model['b32']} | {model['b1']} |",
        "",
        f"- S2: MLP {'-'.join(map(str, MLP_SIZES))} (Gemm + Relu), one row of 512 floats per"
        " request, 64 connections; `@serv.batch(max_batch_size=32, max_delay_ms=5)`.",
        f"- S3: compute = {bench.compute_reps} matmuls of 256x256 float32"
        f" ({_fmt(1e3 * compute if compute else None, 2)} ms measured in-process), so the ideal"
        f" is 1/compute; the loopback server answers each fetch after {1e3 * SLOW_DELAY_S:.0f}"
        " ms; 64 connections.",
        f"- S4: capacity = 2xx/s with wrk at {S4_MAX_QUEUE} connections (about 10 ms of compute"
        f" per request); then open-loop arrivals at 4x that for {bench.seconds} s over at most"
        f" {S4_MAX_CONNECTIONS} connections, client timeout {max(5, bench.seconds)} s. This"
        f" project runs with `--max-queue {S4_MAX_QUEUE} --request-timeout 10`; the reference"
        " has no such settings. Latency counts from the moment a request is written.",
        "- S5: the S2 predictor; process start to the first 200 on POST /; RSS summed over the"
        " server's process tree after 2 s of load (PSS splits pages that forked processes"
        " share, so it does not count them twice).",
    ]
    bad = [
        f"{metric[:-4]} on {name}: {sum(vals):.0f}"
        for metric, by_name in sorted(bench.values.items())
        if metric.endswith(".bad")
        for name, vals in by_name.items()
        if sum(vals)
    ]
    if bad:
        out += ["", "Non-2xx answers or socket errors in closed-loop runs: " + "; ".join(bad)]
    if bench.failures:
        out += ["", "## Failures", ""] + [f"- {f}".replace("\n", " ") for f in bench.failures]
    text = "\n".join(out) + "\n"
    path.write_text(text)
    return text


# ------------------------------------------------------------------------------ main


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reps", type=int, default=3, help="repetitions of every scenario")
    parser.add_argument("--duration", type=int, default=10, help="seconds per load run")
    parser.add_argument("--output", default="RESULTS.md", help="report path")
    parser.add_argument("--label", default="python run.py", help="command named in the report")
    parser.add_argument("--only", default=",".join(SCENARIOS), help="scenarios, e.g. s1,s2")
    parser.add_argument("--runtimes", default=f"{REF},{NEW}", help="reference,new or one")
    parser.add_argument(
        "--new-args", default="", help="flags added to every server of this project, e.g. tuning"
    )
    parser.add_argument("--make-model", metavar="PATH", help="write the ONNX model and exit")
    parser.add_argument("--slow-server", type=int, metavar="PORT", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Build the model, serve the slow server, or run the benchmarks and write the report."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    args = _parse_args(argv)
    if args.make_model:
        make_model(Path(args.make_model))
        return 0
    if args.slow_server:
        asyncio.run(_slow_server(args.slow_server, lifetime=3600.0))
        return 0

    BODIES.update(_bodies())
    atexit.register(stop_all)
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    venvs = {REF: WORK / "venv-ref", NEW: WORK / "venv-new"}
    names = [n.strip() for n in args.runtimes.split(",") if n.strip()]
    runtimes = {name: load_runtime(name, venvs[name]) for name in names}
    if NEW in runtimes:
        runtimes[NEW].extra_args = shlex.split(args.new_args)
    for runtime in runtimes.values():
        logger.info("%s: %s", runtime.name, runtime.versions)
    machine = _machine()
    only = tuple(s.strip().lower() for s in args.only.split(",") if s.strip())
    bench = Bench(runtimes, args.duration, args.reps, only)
    bench.compute_reps = calibrate_compute()
    slow = None
    try:
        if "s3" in only:
            slow, bench.slow_url = start_slow_server(sys.executable)
        bench.run()
    finally:
        if slow is not None:
            stop(slow)
        stop_all()
    output = HERE / args.output
    text = write_report(bench, output, args.label, machine)
    (WORK / "results.json").write_text(json.dumps(bench.values, indent=1))
    sys.stdout.write(text)
    return 1 if bench.failures else 0


if __name__ == "__main__":
    sys.exit(main())
