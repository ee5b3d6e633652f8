"""Closed-loop HTTP load from several processes, each with several threads (no wrk needed).

Every client thread keeps one HTTP/1.1 connection (``http.client``) and sends the next
request as soon as the last answer is read. Processes are forked (the caller holds no CUDA
context and runs no other thread while they start) and start together; each reports the
answers that completed inside the measured window, their latencies, and its own CPU time
over that window, so the report can show whether the load generator itself was the
bottleneck.
"""

from __future__ import annotations

import http.client
import multiprocessing
import queue
import resource
import statistics
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from multiprocessing.synchronize import Event
from typing import Any, Callable

CONNECT_TIMEOUT_S = 30.0


@dataclass
class LoadResult:
    """What a load run measured inside its window."""

    seconds: float
    clients: int
    processes: int
    statuses: Counter = field(default_factory=Counter)  # status (or "error") -> answers
    latencies_ms: list[float] = field(default_factory=list)  # answers with status 200
    client_cpu_s: list[float] = field(default_factory=list)  # per process
    probed: dict[str, float] = field(default_factory=dict)  # probe() at the end minus start
    midway: Any = None  # what midway() returned, halfway through the window

    @property
    def ok_per_s(self) -> float:
        """Answers with status 200 per second."""
        return self.statuses.get(200, 0) / self.seconds

    def percentile(self, pct: float) -> float:
        """A latency percentile of the 200 answers, in ms (nan when there were none)."""
        if not self.latencies_ms:
            return float("nan")
        ordered = sorted(self.latencies_ms)
        return ordered[min(len(ordered) - 1, int(pct / 100 * len(ordered)))]

    @property
    def client_core_share(self) -> tuple[float, float]:
        """Mean and largest CPU share of one core used by a client process in the window."""
        shares = [cpu / self.seconds for cpu in self.client_cpu_s] or [0.0]
        return statistics.fmean(shares), max(shares)


def post(conn: http.client.HTTPConnection, body: bytes) -> tuple[int, bytes]:
    """POST a MessagePack body to / on ``conn``; the status and the answer's body."""
    conn.request(
        "POST",
        "/",
        body=body,
        headers={"Content-Type": "application/msgpack", "Accept": "application/msgpack"},
    )
    answer = conn.getresponse()
    return answer.status, answer.read()


def _client(
    host: str,
    port: int,
    bodies: list[bytes],
    offset: int,
    window: tuple[float, float],
    out: list[tuple[float, Any]],
) -> None:
    # One client thread: loops until the window closes, records answers inside it.
    start, end = window
    conn = http.client.HTTPConnection(host, port, timeout=CONNECT_TIMEOUT_S)
    index = offset
    while True:
        began = time.monotonic()
        if began >= end:
            break
        try:
            status, _ = post(conn, bodies[index % len(bodies)])
        except (OSError, http.client.HTTPException):
            conn.close()
            conn = http.client.HTTPConnection(host, port, timeout=CONNECT_TIMEOUT_S)
            status = -1
        done = time.monotonic()
        index += 1
        if began >= start and done <= end:
            out.append((1e3 * (done - began), status))
    conn.close()


def _process(
    host: str,
    port: int,
    bodies: list[bytes],
    threads: int,
    first: int,
    go: Event,
    start_at: Any,
    spans: tuple[float, float],
    results: multiprocessing.Queue,
) -> None:
    # One load process: waits for the common start, runs its threads, reports once.
    go.wait()
    time.sleep(max(0.0, start_at.value - time.monotonic()))
    warmup, seconds = spans
    start = start_at.value + warmup
    window = (start, start + seconds)
    records: list[tuple[float, Any]] = []
    workers = [
        threading.Thread(
            target=_client, args=(host, port, bodies, first + i * 7, window, records), daemon=True
        )
        for i in range(threads)
    ]
    for worker in workers:
        worker.start()
    time.sleep(max(0.0, window[0] - time.monotonic()))
    cpu_start = _cpu_seconds()
    time.sleep(max(0.0, window[1] - time.monotonic()))
    cpu = _cpu_seconds() - cpu_start
    for worker in workers:
        worker.join(CONNECT_TIMEOUT_S + 5)
    results.put((records, cpu))


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def run_load(
    host: str,
    port: int,
    bodies: list[bytes],
    clients: int,
    processes: int,
    warmup: float,
    seconds: float,
    probe: Callable[[], dict[str, float]] | None = None,
    midway: Callable[[], Any] | None = None,
) -> LoadResult:
    """``clients`` connections over ``processes`` processes: ``warmup`` s, then ``seconds`` s.

    ``probe`` (counters such as the server's CPU time by thread) is read at the start and
    the end of the measured window; ``midway`` is called once halfway through it.
    """
    processes = max(1, min(processes, clients))
    context = multiprocessing.get_context("fork")
    go = context.Event()
    start_at = context.Value("d", 0.0)
    results: multiprocessing.Queue = context.Queue()
    per = [clients // processes + (1 if i < clients % processes else 0) for i in range(processes)]
    procs = [
        context.Process(
            target=_process,
            args=(host, port, bodies, n, sum(per[:i]), go, start_at, (warmup, seconds), results),
            daemon=True,
        )
        for i, n in enumerate(per)
    ]
    for proc in procs:
        proc.start()
    start_at.value = time.monotonic() + 1.0  # every process is up and waiting by then
    go.set()
    result = LoadResult(seconds=seconds, clients=clients, processes=processes)
    window = start_at.value + warmup
    time.sleep(max(0.0, window - time.monotonic()))
    before = probe() if probe is not None else {}
    time.sleep(max(0.0, window + seconds / 2 - time.monotonic()))
    if midway is not None:
        result.midway = midway()
    time.sleep(max(0.0, window + seconds - time.monotonic()))
    if probe is not None:
        after = probe()
        result.probed = {key: value - before.get(key, 0.0) for key, value in after.items()}
    _collect(result, procs, results)
    for proc in procs:
        proc.join(5)
        if proc.is_alive():
            proc.kill()
    return result


def _collect(result: LoadResult, procs: list[Any], results: multiprocessing.Queue) -> None:
    # Each process's report into ``result``; a process that died unreported is counted.
    deadline = time.monotonic() + CONNECT_TIMEOUT_S + 20
    reports: list[tuple[list[tuple[float, Any]], float]] = []
    while len(reports) < len(procs) and time.monotonic() < deadline:
        try:
            reports.append(results.get(timeout=0.5))
        except queue.Empty:
            if not any(proc.is_alive() for proc in procs) and results.empty():
                break
    if len(reports) < len(procs):
        result.statuses["lost process"] += len(procs) - len(reports)
    for records, cpu in reports:
        result.client_cpu_s.append(cpu)
        for latency, status in records:
            result.statuses[status if status != -1 else "error"] += 1
            if status == 200:
                result.latencies_ms.append(latency)
