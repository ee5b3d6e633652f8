"""Serve ResNet-50 with this runtime on one device and compare it with the model alone.

Run by ``benchmarks/gpu/run.sh`` (which installs what the machine lacks and runs the device
tests first); alone: ``python benchmarks/gpu/bench.py --device cuda:0`` on a GPU, or
``--device cpu --tiny`` for the same run end to end on a CPU with a tiny model.

What it measures, in one run, on one device:

1. The model alone, in a separate process: ``predictor.py``'s own ``preprocess`` and
   ``predict`` called in a loop on the same MessagePack bodies that clients send (decode,
   H2D copy, normalize, forward, top-5 back to the host), at batch 32 and at batch 1.
2. The same predictor served (``@serv.batch(max_batch_size=32)``, production mode, one
   worker): images/s with many concurrent clients (``loadgen.py``), for one instance with
   ``predict_concurrency`` 1 and 2, for two instances on the same device, and for one
   instance with ``max_delay_ms`` 0 (what the batch window costs); a lone request's
   latency; the server's CPU by thread; the device memory after load and under load
   (torch's counters, read by the predictor itself).
3. A request that runs out of device memory: its answer, then ``/readyz`` and the next
   request, then one such request sent together with others that may share its batch.

Writes a markdown report (``--output``, and a copy under ``--out-dir``) and the servers' logs.
Every server binds 127.0.0.1, runs in its own process group and is stopped by pid.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import http.client
import importlib.util
import json
import math
import os
import platform
import re
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import msgpack
import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
sys.path.insert(0, str(HERE))

from loadgen import LoadResult, post, run_load  # noqa: E402

HOST = "127.0.0.1"
CLK_TCK = os.sysconf("SC_CLK_TCK")
MAX_BATCH = 32
OOM_MATES = 7
GOAL_SHARE_OF_ALONE = 0.80  # served images/s against the model alone at batch 32
GOAL_LONE_EXTRA_MS = 2.0  # a lone request's p50 over the model alone at batch 1
GOAL_TWO_INSTANCES = 0.95  # two instances against one: "no slower", 5% for noise

ROWS = (
    "model alone, batch 32",
    "model alone, batch 1",
    "served, 1 instance, predict_concurrency 1",
    "served, lone request",
    "served, lone request without the model",
    "served, 1 instance, predict_concurrency 2",
    "served, 2 instances on one device",
    "served, 2 worker processes on one device",
    "served, 4 worker processes on one device",
    "served, 8 worker processes on one device",
    "served, 1 instance, max_delay_ms 0",
    "served, lone request, max_delay_ms 0",
    "device memory after load",
    "device memory under load",
    "out-of-memory request",
    "after out-of-memory",
    "out-of-memory request batched with others",
    "load generator CPU",
    "server CPU under load",
    "device test subset",
)


# ------------------------------------------------------------------------ the model alone


def _load_predictor_module() -> Any:
    spec = importlib.util.spec_from_file_location("gpu_predictor", HERE / "predictor.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while it executes
    spec.loader.exec_module(module)
    return module


def _timed(step: Callable[[int], Any], seconds: float, least: int = 5) -> list[float]:
    """Run ``step(i)`` for ``seconds`` (at least ``least`` times) after 3 untimed calls."""
    for i in range(3):
        step(i)
    durations: list[float] = []
    end = time.monotonic() + seconds
    i = 0
    while time.monotonic() < end or len(durations) < least:
        began = time.perf_counter()
        step(i)
        durations.append(time.perf_counter() - began)
        i += 1
    return durations


def measure_alone(device: str, config_path: Path, bodies_path: Path, seconds: float) -> dict:
    """The predictor's own preprocess + predict in this process, at batch 32 and batch 1."""
    import torch

    module = _load_predictor_module()
    config = json.loads(config_path.read_text())
    began = time.monotonic()
    predictor = module.Predictor(device=device, config=config)
    load_s = time.monotonic() - began
    bodies: list[bytes] = msgpack.unpackb(bodies_path.read_bytes())

    def run(first: int, size: int) -> None:
        chunk = [bodies[(first + k) % len(bodies)] for k in range(size)]
        answers = predictor.predict([predictor.preprocess(msgpack.unpackb(b)) for b in chunk])
        assert len(answers) == size

    batch32 = _timed(lambda i: run(i * MAX_BATCH, MAX_BATCH), seconds / 2)
    batch1 = _timed(lambda i: run(i, 1), seconds / 3, least=20)
    # The served predict runs on a model thread, not the main one: the same calls there.
    on_thread: list[list[float]] = []
    thread = threading.Thread(
        target=lambda: on_thread.append(_timed(lambda i: run(i, 1), seconds / 6, least=20))
    )
    thread.start()
    thread.join()
    dev = torch.device(device)
    return {
        "b32_images_per_s": MAX_BATCH * len(batch32) / sum(batch32),
        "b32_batch_ms": 1e3 * statistics.median(batch32),
        "b1_p50_ms": 1e3 * statistics.median(batch1),
        "b1_images_per_s": len(batch1) / sum(batch1),
        "b1_thread_p50_ms": 1e3 * statistics.median(on_thread[0]),
        "load_s": load_s,
        "memory": predictor.memory(),
        "device_name": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "no GPU",
        "torch": torch.__version__,
        "cuda": torch.version.cuda or "none",
        "threads": torch.get_num_threads(),
    }


# ------------------------------------------------------------------ processes and probes


def _cpu_name() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"


def _stat(path: str) -> list[str] | None:
    try:
        text = Path(path).read_text()
    except OSError:
        return None
    return text[text.rindex(")") + 2 :].split()  # fields from "state" on


def thread_cpu_seconds(root: int) -> dict[str, float]:
    """User + system CPU seconds of every thread under process ``root``, by "pid/tid"."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            fields = _stat(f"/proc/{entry}/stat")
            if fields is not None:
                children.setdefault(int(fields[1]), []).append(int(entry))
    seconds: dict[str, float] = {}
    todo = [root]
    while todo:
        pid = todo.pop()
        todo.extend(children.get(pid, []))
        with contextlib.suppress(OSError):
            for tid in os.listdir(f"/proc/{pid}/task"):
                fields = _stat(f"/proc/{pid}/task/{tid}/stat")
                if fields is not None:
                    seconds[f"{pid}/{tid}"] = (int(fields[11]) + int(fields[12])) / CLK_TCK
    return seconds


@dataclass
class ServerCpu:
    """Where the server's CPU went in a load window, in cores (1.0 = one core busy)."""

    total: float
    event_loop: float  # the worker's main thread: HTTP, routing, hand-off, answers
    busiest_other: float  # the busiest other thread (the model thread, as a rule)

    @classmethod
    def from_deltas(cls, deltas: dict[str, float], root: int, seconds: float) -> ServerCpu:
        """Split per-thread CPU seconds: the worker is the busiest process under ``root``."""
        by_pid: dict[int, float] = {}
        for key, value in deltas.items():
            pid = int(key.split("/")[0])
            by_pid[pid] = by_pid.get(pid, 0.0) + value
        workers = [pid for pid in by_pid if pid != root] or [root]
        worker = max(workers, key=lambda pid: by_pid[pid])
        loop = deltas.get(f"{worker}/{worker}", 0.0)
        others = [v for k, v in deltas.items() if k != f"{worker}/{worker}"]
        return cls(sum(deltas.values()) / seconds, loop / seconds, max(others, default=0) / seconds)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def child_env(**extra: str) -> dict[str, str]:
    """This environment without OPENBAYES_* settings, the repository on PYTHONPATH."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENBAYES_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


def get(port: int, path: str, timeout: float = 5.0) -> tuple[int, bytes]:
    """GET ``path``: the status and the body; status -1 when the server did not answer."""
    conn = http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        conn.request("GET", path)
        answer = conn.getresponse()
        return answer.status, answer.read()
    except (OSError, http.client.HTTPException):
        return -1, b""
    finally:
        conn.close()


def ask(port: int, request: dict, timeout: float = 60.0) -> tuple[int, Any]:
    """POST one MessagePack request on a new connection: the status and the decoded answer."""
    conn = http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        status, body = post(conn, msgpack.packb(request))
    except (OSError, http.client.HTTPException) as exc:
        return -1, {"error": f"no answer: {exc}"}
    finally:
        conn.close()
    for decode in (msgpack.unpackb, json.loads):
        with contextlib.suppress(Exception):
            return status, decode(body)
    return status, body.decode("utf-8", "replace")


@dataclass
class Server:
    """A predictor.py server process started by this driver."""

    proc: subprocess.Popen
    port: int
    log: Path

    def ready(self, timeout: float) -> None:
        """Wait for /readyz 200; raise with the log's tail if it exits or times out."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}: {self.tail()}")
            if get(self.port, "/readyz", 1.0)[0] == 200:
                return
            time.sleep(0.1)
        raise RuntimeError(f"server not ready after {timeout:.0f}s: {self.tail()}")

    def tail(self, lines: int = 8) -> str:
        """The last lines of the server's log, on one line."""
        text = self.log.read_text(errors="replace").strip().splitlines()
        return " | ".join(text[-lines:])

    def stop(self) -> None:
        """SIGTERM the process group, then SIGKILL what is left of it."""
        for sig, wait in ((signal.SIGTERM, 30.0), (signal.SIGKILL, 5.0)):
            if self.proc.poll() is not None:
                break
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, sig)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=wait)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)


def start_server(
    python: str, config: Path, plan: Plan, log: Path, env: dict[str, str] | None = None
) -> Server:
    """Serve predictor.py in production mode on a free loopback port."""
    port = free_port()
    cmd = [python, str(HERE / "predictor.py"), "--host", HOST, "--port", str(port)]
    cmd += ["--devices", ",".join(plan.devices), "--predict-concurrency", str(plan.concurrency)]
    cmd += ["--config", str(config), "--max-queue", "512", "--workers", str(plan.workers)]
    extra = {"OPENBAYES_SERVING_PRODUCTION": "1", "GPU_BENCH_MAX_DELAY_MS": str(plan.max_delay_ms)}
    with log.open("ab") as out:
        out.write(f"\n==== {plan.label}: {' '.join(cmd)}\n".encode())
        out.flush()
        proc = subprocess.Popen(
            cmd,
            cwd=HERE,
            env=child_env(**extra, **(env or {})),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return Server(proc, port, log)


def logged_error(log: Path, offset: int) -> str:
    """The first exception line (``Name: message``) written to ``log`` after ``offset``."""
    with log.open("rb") as file:
        file.seek(offset)
        text = file.read().decode("utf-8", "replace")
    for line in text.splitlines():
        if re.match(r"^[\w.]*(Error|Exception)\b.*:", line):
            return line.strip()[:200]
    return "none found"


def batch_totals(port: int) -> tuple[float, float]:
    """(sum, count) of the server's batch-size histogram from /metrics."""
    status, body = get(port, "/metrics")
    total = count = 0.0
    if status == 200:
        for line in body.decode().splitlines():
            if line.startswith("openbayes_serving_batch_size_sum"):
                total = float(line.split()[-1])
            elif line.startswith("openbayes_serving_batch_size_count"):
                count = float(line.split()[-1])
    return total, count


# ---------------------------------------------------------------------- served runs


@dataclass
class Plan:
    """One served configuration and what it measured."""

    label: str
    devices: list[str]
    concurrency: int = 1
    max_delay_ms: float = 5.0
    workers: int = 1  # server processes, each with its own copy of the model
    lone: bool = False  # measure a lone request's latency too
    load: LoadResult | None = None
    mean_batch: float = float("nan")
    cpu: ServerCpu | None = None
    lone_ms: list[float] = field(default_factory=list)
    lone_bare_ms: list[float] = field(default_factory=list)  # the same bodies, no model
    memory_after_load: dict = field(default_factory=dict)
    memory_midway: dict = field(default_factory=dict)
    memory_peak: dict = field(default_factory=dict)
    error: str | None = None


@dataclass
class OutOfMemory:
    """The out-of-memory check, made on the first configuration's server."""

    status: int = 0
    answer: Any = None
    seconds: float = float("nan")
    ready_after: int = 0
    next_status: int = 0
    alive_after: bool = False
    with_mates: int = 0
    mates: list[int] = field(default_factory=list)
    memory_after: dict = field(default_factory=dict)
    logged: str = ""  # the exception the server logged for it


ONE, TWO_PC, PAIR, WORKERS2, WORKERS4, WORKERS8, NO_WAIT = (
    "1 instance, predict_concurrency 1",
    "1 instance, predict_concurrency 2",
    "2 instances on one device",
    "2 worker processes on one device",
    "4 worker processes on one device",
    "8 worker processes on one device",
    "1 instance, max_delay_ms 0",
)
SKIPPED = "not run: not in --plans"  # left out on purpose: no failure
# --plans names: each served configuration's short name
PLAN_NAMES = {
    "one": ONE,
    "pc2": TWO_PC,
    "pair": PAIR,
    "w2": WORKERS2,
    "w4": WORKERS4,
    "w8": WORKERS8,
    "nowait": NO_WAIT,
}


class Bench:
    """One run: the model alone, then each served configuration, then the report."""

    def __init__(self, args: argparse.Namespace, work: Path) -> None:
        self.args = args
        self.started = time.monotonic()
        cuda = args.device.startswith("cuda")
        self.config: dict[str, Any] = {
            "model": "tiny" if args.tiny else "resnet50",
            "image_size": args.image_size or (32 if args.tiny else 224),
            "dtype": "float16" if cuda else "float32",
            "cpu_memory_limit_mib": 1024,
        }
        if not cuda:
            self.config["threads"] = 1  # torch's intra-op threads would fight the server's
        self.config_path = work / "config.json"
        self.config_path.write_text(json.dumps(self.config))
        side = self.config["image_size"]
        rng = np.random.default_rng(0)
        count = max(args.clients, MAX_BATCH)
        images = rng.integers(0, 256, (count, side, side, 3), np.uint8)
        shape = [side, side, 3]
        self.bodies = [msgpack.packb({"image": im.tobytes(), "shape": shape}) for im in images]
        self.bodies_path = work / "bodies.msgpack"
        self.bodies_path.write_bytes(msgpack.packb(self.bodies))
        self.log = work / "servers.log"
        self.alone: dict[str, Any] = {}
        self.alone_error: str | None = None
        device = [args.device]
        self.plans = {
            ONE: Plan(ONE, device, lone=True),
            TWO_PC: Plan(TWO_PC, device, concurrency=2),
            PAIR: Plan(PAIR, device * 2),
            WORKERS2: Plan(WORKERS2, device, workers=2),
            WORKERS4: Plan(WORKERS4, device, workers=4),
            WORKERS8: Plan(WORKERS8, device, workers=8),
            NO_WAIT: Plan(NO_WAIT, device, max_delay_ms=0.0, lone=True),
        }
        self.oom = OutOfMemory()
        self.stopping: threading.Thread | None = None  # the last server, stopped meanwhile

    def left(self) -> float:
        """Seconds left of the run's budget."""
        return self.args.budget - (time.monotonic() - self.started)

    def say(self, text: str) -> None:
        """A progress line on stdout, with the time since the start."""
        print(f"[{time.monotonic() - self.started:6.1f}s] {text}", flush=True)

    def run(self) -> None:
        """Measure everything that fits in the budget; failures are recorded, not raised."""
        self.say(f"model alone on {self.args.device} ({self.config['model']})")
        self.measure_alone()
        try:
            self.serve_plans()
        finally:
            if self.stopping is not None:
                self.stopping.join()

    def serve_plans(self) -> None:
        """Each served configuration in turn, while the budget allows."""
        chosen = {PLAN_NAMES[name.strip()] for name in self.args.plans.split(",") if name.strip()}
        for plan in self.plans.values():
            if plan.label not in chosen:
                plan.error = SKIPPED
                continue
            needed = self.args.warmup + self.args.duration + 45
            if self.left() < needed:
                plan.error = f"not run: {self.left():.0f} s of the budget left, {needed:.0f} needed"
                continue
            self.say(f"served: {plan.label}")
            try:
                self.measure_served(plan)
            except Exception as exc:  # recorded in the report; the next configuration runs
                plan.error = f"{type(exc).__name__}: {exc}"
                self.say(f"failed: {plan.error}")

    def measure_alone(self) -> None:
        """Run the model-alone measurement in a child process (its CUDA context ends with it)."""
        cmd = [self.args.python, str(Path(__file__).resolve()), "--alone"]
        cmd += ["--device", self.args.device, "--config", str(self.config_path)]
        cmd += ["--bodies", str(self.bodies_path), "--alone-seconds", str(self.args.alone_seconds)]
        try:
            done = subprocess.run(
                cmd, env=child_env(), capture_output=True, text=True, check=False, timeout=300
            )
        except subprocess.TimeoutExpired:
            self.alone_error = "timed out after 300 s"
            return
        with self.log.open("a") as out:
            out.write(f"==== model alone\n{done.stderr}\n{done.stdout}\n")
        if done.returncode != 0:
            self.alone_error = f"exit {done.returncode}: {done.stderr.strip()[-300:]}"
            self.say(f"model alone failed: {self.alone_error}")
            return
        self.alone = json.loads(done.stdout.strip().splitlines()[-1])
        self.say(
            f"  batch 32: {self.alone['b32_images_per_s']:.0f} images/s; "
            f"batch 1: p50 {self.alone['b1_p50_ms']:.2f} ms"
        )

    def measure_served(self, plan: Plan) -> None:
        """Start a server, load it, read its counters; the first one also gets the OOM check."""
        server = start_server(self.args.python, self.config_path, plan, self.log)
        try:
            server.ready(timeout=min(300.0, max(30.0, self.left() - 30)))
            if self.stopping is not None:  # the previous server is gone before the load
                self.stopping.join()
            plan.memory_after_load = ask(server.port, {"stats": "reset"})[1]
            sum0, count0 = batch_totals(server.port)
            load = plan.load = run_load(
                HOST,
                server.port,
                self.bodies,
                self.args.clients,
                self.args.client_processes,
                self.args.warmup,
                self.args.duration,
                probe=lambda: thread_cpu_seconds(server.proc.pid),
                midway=lambda: ask(server.port, {"stats": True})[1],
            )
            plan.memory_midway = load.midway or {}
            plan.cpu = ServerCpu.from_deltas(load.probed, server.proc.pid, load.seconds)
            sum1, count1 = batch_totals(server.port)
            if count1 > count0:
                plan.mean_batch = (sum1 - sum0) / (count1 - count0)
            plan.memory_peak = ask(server.port, {"stats": True})[1]
            self.say(
                f"  {load.ok_per_s:.0f} images/s, mean batch {plan.mean_batch:.1f}, "
                f"statuses {dict(load.statuses)}, server {plan.cpu.total:.2f} cores "
                f"(event loop {plan.cpu.event_loop:.2f})"
            )
            if plan.lone:
                plan.lone_ms = self.lone_latency(server)
                self.say(
                    f"  lone request: p50 {statistics.median(plan.lone_ms or [math.nan]):.2f} ms"
                )
            if plan.label == ONE:
                plan.lone_bare_ms = self.lone_latency(server, model=False)
                self.say(
                    "  lone request without the model: p50 "
                    f"{statistics.median(plan.lone_bare_ms or [math.nan]):.2f} ms"
                )
            if plan.label == ONE:
                self.out_of_memory(server)
        finally:
            # Stopped while the next one starts; joined before that one is measured.
            self.stopping = threading.Thread(target=server.stop)
            self.stopping.start()

    def lone_latency(self, server: Server, model: bool = True) -> list[float]:
        """Milliseconds per request for one client, one request at a time, one connection.

        ``model=False`` sends the same images marked ``"model": false``: the predictor
        decodes them and answers their size without the model (HTTP and the runtime only).
        """
        time.sleep(0.5)  # the load run's last answers are gone
        bodies = self.bodies
        if not model:
            bodies = [msgpack.packb(msgpack.unpackb(b) | {"model": False}) for b in bodies]
        latencies = []
        conn = http.client.HTTPConnection(HOST, server.port, timeout=60)
        try:
            for i in range(3):
                post(conn, bodies[i])
            for i in range(self.args.lone_requests):
                began = time.perf_counter()
                status, _ = post(conn, bodies[i % len(bodies)])
                if status == 200:
                    latencies.append(1e3 * (time.perf_counter() - began))
        finally:
            conn.close()
        return latencies

    def out_of_memory(self, server: Server) -> None:
        """A request too large for the device, alone; then readiness and the next request.

        Then the same request again with others in flight: a batched predict that raises
        fails every request of its batch, so the others that shared it get the error too.
        """
        oom = msgpack.unpackb(self.bodies[0]) | {"size": self.args.oom_size}
        out = self.oom
        offset = server.log.stat().st_size
        began = time.monotonic()
        out.status, out.answer = ask(server.port, oom)
        out.seconds = time.monotonic() - began
        time.sleep(0.2)  # the server logs the traceback as it answers
        out.logged = logged_error(server.log, offset)
        out.ready_after = get(server.port, "/readyz")[0]
        out.next_status = ask(server.port, msgpack.unpackb(self.bodies[1]))[0]
        out.alive_after = server.proc.poll() is None
        statuses: dict[int, int] = {}

        def send(index: int, request: dict) -> None:
            statuses[index] = ask(server.port, request)[0]

        requests = [oom] + [msgpack.unpackb(b) for b in self.bodies[2 : 2 + OOM_MATES]]
        threads = [threading.Thread(target=send, args=(i, r)) for i, r in enumerate(requests)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(90)
        out.with_mates = statuses.get(0, -1)
        out.mates = [statuses.get(i, -1) for i in range(1, len(requests))]
        out.memory_after = ask(server.port, {"stats": True})[1]
        self.say(
            f"  out of memory: {out.status}, /readyz {out.ready_after}, next {out.next_status}; "
            f"sent with {OOM_MATES} others: {out.with_mates}, {out.mates}"
        )


# ---------------------------------------------------------------------------- report


def _num(value: float | None, digits: int = 0) -> str:
    if value is None or math.isnan(value):
        return "n/a"
    return f"{value:,.{digits}f}"


def _verdict(ok: bool | None) -> str:
    return "n/a" if ok is None else ("PASS" if ok else "MISS")


def _why(error: str | None) -> str:
    """A table cell for a measurement that has no value; details go under Failures."""
    if error is None:
        return "not run"
    return error if error.startswith("not run") else "failed: see Failures below"


def _lone_cell(latencies: list[float], error: str | None) -> tuple[float | None, str]:
    """A lone-request row's p50 (ms) and its value cell, or why it has none."""
    if not latencies:
        return None, _why(error)
    p50 = statistics.median(latencies)
    return p50, f"p50 {_num(p50, 2)} ms over {len(latencies)} requests, one at a time"


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a and b else None


def _mem(stats: Any, peak: bool = False) -> str:
    if not isinstance(stats, dict) or "allocated_mib" not in stats:
        return "n/a"
    key = "peak_" if peak else ""
    return (
        f"{_num(stats[key + 'allocated_mib'])} MiB allocated, "
        f"{_num(stats[key + 'reserved_mib'])} MiB reserved"
    )


Row = tuple[str, str, str, str, str, str]  # measurement, value, compared with, ratio, goal, result


class Report:
    """Turns a finished Bench into the rows of the results table."""

    def __init__(self, bench: Bench, tests: str) -> None:
        self.bench = bench
        self.tests = tests
        self.alone = bench.alone
        self.b32: float | None = self.alone.get("b32_images_per_s")
        self.b1: float | None = self.alone.get("b1_p50_ms")

    def rate(self, label: str) -> float | None:
        """Images/s answered 200 by a configuration, if it ran."""
        load = self.bench.plans[label].load
        return load.ok_per_s if load else None

    def served(self, label: str) -> str:
        """A configuration's throughput, latency and batch size, or why it has none."""
        plan = self.bench.plans[label]
        load = plan.load
        if load is None:
            return _why(plan.error)
        text = (
            f"{_num(load.ok_per_s)} images/s at {load.clients} clients (p50 "
            f"{_num(load.percentile(50), 1)} ms, p99 {_num(load.percentile(99), 1)} ms; "
            f"mean batch {_num(plan.mean_batch, 1)})"
        )
        bad = {k: v for k, v in load.statuses.items() if k != 200}
        return text + (f"; not 200: {bad}" if bad else "")

    def lone(self, label: str) -> Row:
        """A lone request's p50 against the model alone at batch 1."""
        plan = self.bench.plans[label]
        p50, value = _lone_cell(plan.lone_ms, plan.error)
        extra = p50 - self.b1 if p50 is not None and self.b1 is not None else None
        name = "served, lone request" + ("" if label == ONE else ", max_delay_ms 0")
        ok = extra <= GOAL_LONE_EXTRA_MS if extra is not None else None
        diff = f"{'+' if extra is not None and extra >= 0 else ''}{_num(extra, 2)} ms"
        goal = f"<= +{GOAL_LONE_EXTRA_MS:g} ms" if label == ONE else ""
        return (name, value, "model alone, batch 1", diff, goal, _verdict(ok) if goal else "")

    def percent_of_b32(self, label: str) -> str:
        """A configuration's images/s as a share of the model alone at batch 32."""
        share = _ratio(self.rate(label), self.b32)
        return f"{_num(100 * share)}%" if share else ""

    def lone_bare(self) -> Row:
        """A lone request's p50 when the predictor answers without the model."""
        plan = self.bench.plans[ONE]
        p50, value = _lone_cell(plan.lone_bare_ms, plan.error)
        if p50 is not None:
            value += ": the same bodies decoded, no model call"
        return ("served, lone request without the model", value, "HTTP and the runtime", "", "", "")

    def throughput_rows(self) -> list[Row]:
        """Model alone, then each served configuration against its reference."""
        alone, b32, b1 = self.alone, self.b32, self.b1
        why = _why(self.bench.alone_error)
        one, two, pair = self.rate(ONE), self.rate(TWO_PC), self.rate(PAIR)
        share, pair_ratio = _ratio(one, b32), _ratio(pair, one)
        return [
            (
                "model alone, batch 32",
                f"{_num(b32)} images/s ({_num(alone.get('b32_batch_ms'), 1)} ms a batch)"
                if b32
                else why,
                "",
                "",
                "",
                "",
            ),
            (
                "model alone, batch 1",
                f"p50 {_num(b1, 2)} ms ({_num(alone.get('b1_images_per_s'))} images/s); "
                f"on a second thread, as served: p50 {_num(alone.get('b1_thread_p50_ms'), 2)} ms"
                if b1
                else why,
                "",
                "",
                "",
                "",
            ),
            (
                f"served, {ONE}",
                self.served(ONE),
                "model alone, batch 32",
                f"{_num(100 * share if share else None)}%",
                f">= {GOAL_SHARE_OF_ALONE:.0%}",
                _verdict(share >= GOAL_SHARE_OF_ALONE if share else None),
            ),
            self.lone(ONE),
            self.lone_bare(),
            (
                f"served, {TWO_PC}",
                self.served(TWO_PC),
                ONE,
                f"{_num(_ratio(two, one), 2)}x",
                "",
                "",
            ),
            (
                f"served, {PAIR}",
                self.served(PAIR),
                "1 instance",
                f"{_num(pair_ratio, 2)}x",
                f">= {GOAL_TWO_INSTANCES:.2f}x",
                _verdict(pair_ratio >= GOAL_TWO_INSTANCES if pair_ratio else None),
            ),
            *(
                (
                    f"served, {label}",
                    self.served(label),
                    "model alone, batch 32",
                    self.percent_of_b32(label),
                    "",
                    "",
                )
                for label in (WORKERS2, WORKERS4, WORKERS8)
            ),
            (
                f"served, {NO_WAIT}",
                self.served(NO_WAIT),
                "model alone, batch 32",
                self.percent_of_b32(NO_WAIT),
                "",
                "",
            ),
            self.lone(NO_WAIT),
        ]

    def memory_rows(self) -> list[Row]:
        """Device memory after load and under load, one instance and two."""
        one, pair = self.bench.plans[ONE], self.bench.plans[PAIR]
        counter = one.memory_after_load.get("counter", "n/a")
        after = (
            f"{_mem(one.memory_after_load)}; 2 instances: {_mem(pair.memory_after_load)}; "
            f"model alone, after its runs: {_mem(self.alone.get('memory'))}"
        )
        under = (
            f"peak {_mem(one.memory_peak, peak=True)}, midway {_mem(one.memory_midway)}; "
            f"2 instances: peak {_mem(pair.memory_peak, peak=True)}"
        )
        return [
            ("device memory after load", after, counter, "", "", ""),
            ("device memory under load", under, counter, "", "", ""),
        ]

    def oom_rows(self) -> list[Row]:
        """What the out-of-memory request got, and whether the server went on serving."""
        oom = self.oom = self.bench.oom
        if not oom.status:
            why = _why(self.bench.plans[ONE].error)
            return [
                ("out-of-memory request", why, "", "", "clear 5xx", "n/a"),
                ("after out-of-memory", why, "", "", "200, 200, alive", "n/a"),
                ("out-of-memory request batched with others", why, "", "", "", ""),
            ]
        answer = oom.answer
        text = answer.get("error", answer) if isinstance(answer, dict) else answer
        clear = 500 <= oom.status < 600 and isinstance(answer, dict) and "error" in answer
        survived = oom.ready_after == 200 and oom.next_status == 200 and oom.alive_after
        ok_mates = sum(status == 200 for status in oom.mates)
        return [
            (
                "out-of-memory request",
                f"{oom.status} in {_num(oom.seconds, 2)} s: {text} (server log: {oom.logged})",
                "",
                "",
                "clear 5xx",
                _verdict(clear),
            ),
            (
                "after out-of-memory",
                f"/readyz {oom.ready_after}, next request {oom.next_status}, process "
                f"{'alive' if oom.alive_after else 'gone'}; then {_mem(oom.memory_after)}",
                "",
                "",
                "200, 200, alive",
                _verdict(survived),
            ),
            (
                "out-of-memory request batched with others",
                f"it got {oom.with_mates}; of {len(oom.mates)} sent with it, {ok_mates} got 200 "
                f"and {len(oom.mates) - ok_mates} shared its batch and its error: {oom.mates}",
                "",
                "",
                "",
                "",
            ),
        ]

    def cpu_rows(self) -> list[Row]:
        """The load generator's CPU and the server's, from the first configuration."""
        plan = self.bench.plans[ONE]
        load, cpu = plan.load, plan.cpu
        client = "n/a"
        if load is not None:
            mean, most = load.client_core_share
            client = (
                f"{load.processes} processes x {load.clients // load.processes} threads: "
                f"mean {_num(100 * mean)}% of a core each, max {_num(100 * most)}% "
                f"({os.cpu_count()} cores in the machine)"
            )
        server = "n/a"
        if cpu is not None:
            server = (
                f"{_num(cpu.total, 2)} cores in all; event loop thread {_num(cpu.event_loop, 2)}, "
                f"busiest other thread {_num(cpu.busiest_other, 2)}"
            )
        return [
            (
                "load generator CPU",
                client,
                "",
                "",
                "< 90% of a core",
                _verdict(load.client_core_share[1] < 0.9 if load is not None else None),
            ),
            ("server CPU under load", server, ONE, "", "", ""),
        ]

    def rows(self) -> list[Row]:
        """Every row, in the order of ROWS."""
        tests = self.tests
        passed = "passed" in tests and "failed" not in tests and "error" not in tests
        test_row: Row = (
            "device test subset",
            tests or "not run",
            "",
            "",
            "all pass",
            _verdict(passed if tests else None),
        )
        rows = [
            *self.throughput_rows(),
            *self.memory_rows(),
            *self.oom_rows(),
            *self.cpu_rows(),
            test_row,
        ]
        assert [row[0] for row in rows] == list(ROWS), [row[0] for row in rows]
        return rows


def shown_args(argv: list[str]) -> list[str]:
    """The command line without the flags that only say where output goes."""
    hidden = {"--tests", "--output", "--out-dir", "--budget", "--python"}
    shown: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
        elif arg.split("=", 1)[0] in hidden:
            skip = "=" not in arg
        else:
            shown.append(arg)
    return shown


def write_report(bench: Bench, tests: str, path: Path) -> str:
    """Write the markdown report and return its text."""
    args, alone, config = bench.args, bench.alone, bench.config
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    side = config["image_size"]
    cuda = args.device.startswith("cuda")
    command = shlex.join(["benchmarks/gpu/bench.py", *shown_args(sys.argv[1:])])
    model = "a 3-layer CNN (tiny)" if args.tiny else "torchvision ResNet-50, weights=None"
    oom = (
        "a real CUDA out-of-memory error"
        if cuda
        else "off a GPU the predictor raises torch.cuda.OutOfMemoryError over a 1 GiB limit"
    )
    lines = [
        "# GPU benchmark results" if cuda else "# The GPU benchmark, run on a CPU",
        "",
        f"Written by `{command}` on {now}, through run.sh when its device tests are listed."
        " Do not edit: run it again (benchmarks/gpu/README.md).",
        "",
        f"- Machine: {alone.get('device_name', 'n/a')}; {os.cpu_count()} CPU cores "
        f"({_cpu_name()}); Python {platform.python_version()}, torch {alone.get('torch', 'n/a')} "
        f"(CUDA {alone.get('cuda', 'n/a')}), {alone.get('threads', 'n/a')} intra-op threads.",
        f"- Model: {model}, {config['dtype']}, channels-last, eval, on `{args.device}`; "
        f"{side}x{side} RGB images; cuDNN's default algorithm choice (no autotuning).",
        f"- Requests: MessagePack `{{image: {side * side * 3} bytes of uint8 HWC, shape: "
        f"[{side}, {side}, 3]}}`, as a client that already resized its frames sends them; "
        "MessagePack answers (top-5 classes and scores).",
        "- Model alone: `predictor.py`'s own `preprocess` and `predict`, called in a loop in one "
        "process on the same bodies: MessagePack decode, uint8 array, copy to the device, "
        "normalize, forward, top-5 back to the host. Served adds HTTP, the runtime's queue and "
        "batching, and the clients on the same machine.",
        f"- Served: `@serv.batch(max_batch_size=32)` (max_delay_ms 5 unless the row says 0), "
        f"production mode, one worker; {args.clients} closed-loop clients in "
        f"{args.client_processes} processes, {args.warmup:g} s warm-up, then {args.duration:g} s "
        f"measured; lone request: one client, {args.lone_requests} requests one at a time.",
        f"- Out of memory: one request asks for a {args.oom_size}x{args.oom_size} input ({oom}).",
        "",
        "| measurement | value | compared with | ratio | goal | result |",
        "|---|---|---|---|---|---|",
        *(
            "| " + " | ".join(str(cell).replace("|", "/") for cell in row) + " |"
            for row in Report(bench, tests).rows()
        ),
        "",
    ]
    failures = [
        f"{plan.label}: {plan.error}"
        for plan in bench.plans.values()
        if plan.error and plan.error != SKIPPED
    ]
    if bench.alone_error:
        failures.insert(0, f"model alone: {bench.alone_error}")
    if failures:
        lines += ["## Failures", "", *(f"- {f}" for f in failures), ""]
    text = "\n".join(lines)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return text


# ------------------------------------------------------------------------------ main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line (see the module docstring)."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--device", default="cuda:0", help="cuda:0 (default) or cpu")
    parser.add_argument("--tiny", action="store_true", help="a 3-layer CNN on 32x32 images")
    parser.add_argument(
        "--image-size", type=int, default=0, help="image side (default 224; 32 with --tiny)"
    )
    parser.add_argument("--clients", type=int, default=64, help="concurrent connections")
    parser.add_argument("--client-processes", type=int, default=4)
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds before measuring")
    parser.add_argument("--duration", type=float, default=12.0, help="seconds measured")
    parser.add_argument("--alone-seconds", type=float, default=8.0)
    parser.add_argument("--lone-requests", type=int, default=200)
    parser.add_argument(
        "--plans",
        default=",".join(PLAN_NAMES),
        help=f"the served configurations to run, by name: {','.join(PLAN_NAMES)}",
    )
    parser.add_argument("--oom-size", type=int, default=200_000, help="input side that OOMs")
    parser.add_argument("--budget", type=float, default=330.0, help="seconds for the whole run")
    parser.add_argument("--tests", default="", help="the device test subset's summary line")
    parser.add_argument("--output", type=Path, help="the report (default: beside this file)")
    parser.add_argument("--out-dir", type=Path, help="also copy the report and logs here")
    parser.add_argument("--python", default=sys.executable, help="python for the servers")
    parser.add_argument("--alone", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--config", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--bodies", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    unknown = [n for n in args.plans.split(",") if n.strip() and n.strip() not in PLAN_NAMES]
    if unknown:
        parser.error(f"--plans: unknown {', '.join(unknown)}; known: {', '.join(PLAN_NAMES)}")
    return args


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark (or, with --alone, only the model-alone measurement)."""
    args = parse_args(argv)
    if args.alone:
        print(json.dumps(measure_alone(args.device, args.config, args.bodies, args.alone_seconds)))
        return 0
    name = "RESULTS.md" if args.device.startswith("cuda") else "RESULTS-cpu.md"
    output = args.output or HERE / name
    with tempfile.TemporaryDirectory(prefix="gpu-bench-") as tmp:
        bench = Bench(args, Path(tmp))
        try:
            bench.run()
        finally:
            print(write_report(bench, args.tests, output), flush=True)
            if args.out_dir:
                args.out_dir.mkdir(parents=True, exist_ok=True)
                shutil.copy(output, args.out_dir / "RESULTS.md")
                shutil.copy(bench.log, args.out_dir / "servers.log")
    failed = bench.alone_error or any(
        plan.error and plan.error != SKIPPED for plan in bench.plans.values()
    )
    return 1 if failed or not bench.oom.status else 0


if __name__ == "__main__":
    sys.exit(main())
