"""The scenarios: which predictor runs on which runtime, what load it gets, what is recorded.

Each scenario is a function of (bench, runtime) that starts its servers, drives them and
records figures under its own metric names (``s1.rps``, ``s2.plain_json.rps``, ...), the
names that ``targets`` judges.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import http.client
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from openbayes_serving.sessions import available_cores

from .bodies import BODIES, Body, post
from .ceilings import measure_model_alone, time_compute
from .constants import (
    LIT,
    MODEL,
    MODEL_ALONE,
    NEW,
    PREDICTORS,
    REF,
    S4_MAX_QUEUE,
    SCENARIOS,
)
from .load import OpenLoop, WrkResult, percentile, run_wrk
from .proc import stop, tree_cpu_seconds, tree_pids, tree_pss_mb, tree_rss_mb
from .results import Results
from .servers import Runtime, Server, serving, start_server, wait_first_200

logger = logging.getLogger("bench")

LITSERVE = PREDICTORS / "litserve"
MODEL_ARGS = ["--model-path", str(MODEL.parent)]


@dataclass
class Bench:
    """One run: the runtimes, the load settings, and the results recorded so far."""

    runtimes: dict[str, Runtime]
    seconds: int
    reps: int
    only: tuple[str, ...]
    results: Results = field(default_factory=Results)
    compute_reps: int = 1
    slow_url: str = ""

    def record(self, metric: str, runtime: str, value: float) -> None:
        """Record one value (see ``Results.record``)."""
        self.results.record(metric, runtime, value)

    def task_env(self) -> dict[str, str]:
        """The environment the I/O and overload predictors read their work from."""
        return {"BENCH_COMPUTE_REPS": str(self.compute_reps), "BENCH_SLOW_URL": self.slow_url}

    def guarded(self, label: str, runtime: str, action: Callable[[], None]) -> None:
        """Run one scenario on one runtime; a failure is recorded and the run goes on."""
        logger.info("%s on %s", label, runtime)
        try:
            action()
        except Exception as exc:  # one broken scenario must not stop the others
            logger.exception("%s on %s failed", label, runtime)
            self.results.failures.append(f"{label} on {runtime}: {str(exc).strip()[:300]}")

    def run(self) -> None:
        """Each repetition runs every scenario on its runtimes, the first one alternating.

        The ceilings are measured right before (and for the I/O compute, after) their
        scenario, so that they see the same machine load as the servers.
        """
        names = list(self.runtimes)
        for rep in range(self.reps):
            order = names if rep % 2 == 0 else names[::-1]
            logger.info("repetition %d/%d: %s", rep + 1, self.reps, " then ".join(order))
            for scenario in self.only:
                _ceilings(self, scenario)
                for name in order:
                    if name in SCENARIOS[scenario]:
                        action = functools.partial(RUNS[scenario], self, self.runtimes[name])
                        self.guarded(scenario.upper(), name, action)
                if scenario in ("s3", "s6"):  # once more after: the machine's load drifts
                    _ceilings(self, scenario)


def _ceilings(bench: Bench, scenario: str) -> None:
    """Measure the ceiling ``scenario`` is compared with, if it has one."""
    if scenario == "s2":
        for key, value in measure_model_alone(max(1.0, bench.seconds / 4)).items():
            bench.record(f"model.{key}", MODEL_ALONE, value)
    if scenario in ("s3", "s6"):
        compute = time_compute(bench.compute_reps)
        bench.record(f"{scenario}.compute_s", MODEL_ALONE, compute)
        bench.record(f"{scenario}.ideal", MODEL_ALONE, 1 / compute)


def warm_up(server: Server, body: Body, connections: int = 64) -> None:
    """One second of load, then one request more. A server that serves in order answers
    it only once the requests the warm-up's client left behind are done, so that the
    measurement starts on an idle server whatever the runtime does with abandoned work."""
    run_wrk(server.port, body, connections, 1, path=server.path)
    post(server.port, body, server.path, timeout=60.0)


def cpu_timed_wrk(server: Server, body: Body, seconds: int) -> tuple[WrkResult, float]:
    """wrk at 64 connections, and the server's CPU per request (utime + stime of its
    process tree over the run / its requests, in us)."""
    cpu_before = tree_cpu_seconds(server.proc.pid)
    result = run_wrk(server.port, body, 64, seconds, path=server.path)
    cpu = tree_cpu_seconds(server.proc.pid) - cpu_before
    return result, cpu * 1e6 / max(1, result.requests)


def s1_echo(bench: Bench, runtime: Runtime) -> None:
    """Echo JSON: req/s and server CPU at 64 connections, latency at 1 connection."""
    body, name = BODIES["echo"], runtime.name
    path = LITSERVE / "s1_echo.py" if name == LIT else PREDICTORS / "s1_echo" / "predictor.py"
    with serving(runtime, path, "s1", body) as server:
        warm_up(server, body)
        result, cpu_us = cpu_timed_wrk(server, body, bench.seconds)
        single = run_wrk(server.port, body, 1, bench.seconds, latency=True, path=server.path)
    bench.record("s1.rps", name, result.ok_rps)
    bench.record("s1.cpu_us", name, cpu_us)
    bench.record("s1.bad", name, result.bad + single.bad)
    bench.record("s1.p50_ms", name, single.p50_ms or math.nan)
    bench.record("s1.p99_ms", name, single.p99_ms or math.nan)


# S2 servers of each runtime: (kind, predictor, extra flags, bodies sent). "Default settings"
# passes no concurrency flag at all; "pc1" pins one predict at a time; "allcores" gives each
# call every core (``--onnx-threads`` = the cores; by default a call gets half of them
# under ``auto``), the default before it was measured here.
_S2_MODEL = PREDICTORS / "s2_model"
_CORES = available_cores()
S2Server = tuple[str, Path, list[str], tuple[str, ...]]
S2_SERVERS: dict[str, list[S2Server]] = {
    REF: [("plain", _S2_MODEL / "predictor.py", [], ("json", "msgpack"))],
    LIT: [
        ("plain", LITSERVE / "s2_model.py", [], ("json",)),
        ("batch", LITSERVE / "s2_model_batch.py", [], ("json",)),
    ],
    NEW: [
        ("plain", _S2_MODEL / "predictor.py", [], ("json", "msgpack")),
        ("pc1", _S2_MODEL / "predictor.py", ["--predict-concurrency", "1"], ("json",)),
        ("allcores", _S2_MODEL / "predictor.py", ["--onnx-threads", str(_CORES)], ("json",)),
        ("batch", _S2_MODEL / "predictor_batch.py", [], ("json", "msgpack")),
    ],
}
# Servers whose lone request is timed too: one connection, p50 (what a quiet service sees).
S2_LONE = {(REF, "plain"), (NEW, "plain"), (NEW, "pc1")}


def s2_model(bench: Bench, runtime: Runtime) -> None:
    """The MLP, one row per request, at 64 connections: every S2 server of ``runtime``."""
    for kind, path, flags, codecs in S2_SERVERS[runtime.name]:
        body = BODIES["row_json"]
        with serving(runtime, path, f"s2-{kind}", body, MODEL_ARGS + flags) as server:
            warm_up(server, body)
            for codec in codecs:
                sent = BODIES[f"row_{codec}"]
                result, cpu_us = cpu_timed_wrk(server, sent, bench.seconds)
                bench.record(f"s2.{kind}_{codec}.rps", runtime.name, result.ok_rps)
                bench.record(f"s2.{kind}_{codec}.cpu_us", runtime.name, cpu_us)
                bench.record(f"s2.{kind}_{codec}.bad", runtime.name, result.bad)
            if (runtime.name, kind) in S2_LONE:
                lone = run_wrk(server.port, body, 1, bench.seconds, True, server.path)
                bench.record(f"s2.{kind}_json.lone_p50_ms", runtime.name, lone.p50_ms or math.nan)


_S3_IO = PREDICTORS / "s3_io"
S3_PREDICTORS = {
    REF: _S3_IO / "predictor_in_predict.py",  # 0.5.0 has no preprocess
    LIT: LITSERVE / "s3_io.py",  # the fetch in decode_request, LitServe's input stage
    NEW: _S3_IO / "predictor.py",  # the fetch in preprocess, outside the predict limit
}


def _io(bench: Bench, runtime: Runtime, scenario: str, path: Path) -> None:
    body = BODIES["small"]
    env = bench.task_env()
    with serving(runtime, path, scenario, body, None, env) as server:
        warm_up(server, body)
        result = run_wrk(server.port, body, 64, bench.seconds, path=server.path)
    bench.record(f"{scenario}.rps", runtime.name, result.ok_rps)
    bench.record(f"{scenario}.bad", runtime.name, result.bad)


def s3_io(bench: Bench, runtime: Runtime) -> None:
    """Fetch (50 ms) then compute (~5 ms), each runtime in its own best shape; 64 connections."""
    _io(bench, runtime, "s3", S3_PREDICTORS[runtime.name])


def s6_io_in_predict(bench: Bench, runtime: Runtime) -> None:
    """The 0.5.0-shaped predictor, fetch and compute inside predict, the same file on both
    runtimes with default settings; 64 connections."""
    _io(bench, runtime, "s6", _S3_IO / "predictor_in_predict.py")


def _overload(bench: Bench, runtime: Runtime, scenario: str, flags: list[str]) -> None:
    """Capacity at 8 connections, then open-loop arrivals at 4x it: who gets an answer."""
    path = PREDICTORS / "s4_overload" / "predictor.py"
    body = BODIES["small"]
    timeout = float(max(5, bench.seconds))
    with serving(runtime, path, scenario, body, flags, bench.task_env()) as server:
        warm_up(server, body, S4_MAX_QUEUE)
        capacity = run_wrk(server.port, body, S4_MAX_QUEUE, max(2, bench.seconds // 2)).ok_rps
        result = asyncio.run(
            OpenLoop(server.port, body, 4 * capacity, bench.seconds, timeout).run()
        )
        alive = False
        with contextlib.suppress(OSError, http.client.HTTPException):
            alive = server.proc.poll() is None and post(server.port, body)[0] == 200
    name, sent = runtime.name, max(1, result.sent)
    bench.record(f"{scenario}.rate", name, 4 * capacity)
    bench.record(f"{scenario}.alive", name, 1.0 if alive else 0.0)
    bench.record(f"{scenario}.lag_p99_ms", name, 1e3 * percentile(result.lags or [0.0], 99))
    answered = 0
    for outcome in ("200", "503"):
        count = result.statuses.get(outcome, 0)
        answered += count
        bench.record(f"{scenario}.share_{outcome}", name, 100 * count / sent)
        if result.latencies.get(outcome):
            p99 = percentile(result.latencies[outcome], 99)
            bench.record(f"{scenario}.p99_{outcome}_ms", name, 1e3 * p99)
    bench.record(f"{scenario}.share_other", name, 100 * (result.sent - answered) / sent)
    logger.info("%s %s: %.0f req/s offered, %s", scenario, name, 4 * capacity, result.statuses)


def s4_overload(bench: Bench, runtime: Runtime) -> None:
    """Overload with this runtime's queue bounded (``--max-queue 8 --request-timeout 10``)."""
    flags = ["--max-queue", str(S4_MAX_QUEUE), "--request-timeout", "10"]
    _overload(bench, runtime, "s4", flags if runtime.name == NEW else [])


def s4d_overload_defaults(bench: Bench, runtime: Runtime) -> None:
    """Overload with default settings."""
    _overload(bench, runtime, "s4d", [])


def s5_cold_start(bench: Bench, runtime: Runtime) -> None:
    """Start the S2 predictor: seconds to the first 200, then memory after 2 s of load."""
    path = _S2_MODEL / "predictor.py"
    for _ in range(math.ceil(3 / bench.reps)):
        server = start_server(runtime, path, "s5", MODEL_ARGS)
        try:
            cold = wait_first_200(server, BODIES["row_json"])
            run_wrk(server.port, BODIES["row_json"], 8, 2)
            rss = tree_rss_mb(server.proc.pid)
            pss = tree_pss_mb(server.proc.pid)
            count = len(tree_pids(server.proc.pid))
        finally:
            stop(server.proc)
        bench.record("s5.cold_s", runtime.name, cold)
        bench.record("s5.rss_mb", runtime.name, rss)
        bench.record("s5.pss_mb", runtime.name, pss)
        bench.record("s5.processes", runtime.name, count)


RUNS: dict[str, Callable[[Bench, Runtime], None]] = {
    "s1": s1_echo,
    "s2": s2_model,
    "s3": s3_io,
    "s6": s6_io_in_predict,
    "s4": s4_overload,
    "s4d": s4d_overload_defaults,
    "s5": s5_cold_start,
}
