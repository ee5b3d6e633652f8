"""Hostile load against one server with default settings (production mode, loopback).

Not run in CI; prints what it measured:

    .venv/bin/python benchmarks/hostile.py overload [--seconds 20] [--connections 4096]
    .venv/bin/python benchmarks/hostile.py bodies [--count 16] [--mib 32]

``overload``: `predictors/overload` (predict holds the GIL ~40 ms). Capacity is measured
closed-loop (8 connections, 3 s), then requests arrive open-loop at 4x that rate over at
most ``--connections`` connections with a 5 s client timeout: the share answered 200,
503 or not in time, and the p99 latency of each.

``bodies``: a predict held busy so the queue is full, then ``--count`` requests at once,
each announcing and sending a ``--mib`` MiB JSON body: the worker's RSS growth, the p99
of their answers (503 expected), and ``/healthz`` latency sampled meanwhile.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import requests

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from bench.bodies import Body  # noqa: E402
from bench.load import OpenLoop, percentile  # noqa: E402
from bench.proc import spawn, stop, tree_rss_mb  # noqa: E402

from openbayes_serving.testing import free_port  # noqa: E402

ECHO = Body("echo", b'{"id": 1}', "application/json")
URL = "http://127.0.0.1:%d/"


def start(predictor: str, *args: str) -> tuple[subprocess.Popen[bytes], int]:
    """A production-mode server of ``predictors/<predictor>``, ready; (process, port)."""
    port = free_port()
    env = {**os.environ, "OPENBAYES_SERVING_PRODUCTION": "1"}
    env["PYTHONPATH"] = str(HERE.parent)
    cmd = [sys.executable, "predictor.py", "--host", "127.0.0.1", "--port", str(port), *args]
    proc = spawn(cmd, HERE / "predictors" / predictor, env, f"hostile-{predictor}.log")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if requests.get(f"http://127.0.0.1:{port}/readyz", timeout=1).ok:
                return proc, port
        except requests.RequestException:
            pass
        time.sleep(0.05)
    stop(proc)
    raise RuntimeError("the server did not become ready")


def capacity(port: int, seconds: float = 3.0) -> float:
    """Answers per second with 8 connections in a closed loop."""
    done, stop_at = [0], time.monotonic() + seconds

    def loop() -> None:
        session = requests.Session()
        while time.monotonic() < stop_at:
            if session.post(URL % port, data=ECHO.data, headers=ECHO.headers(), timeout=30).ok:
                done[0] += 1

    threads = [threading.Thread(target=loop) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return done[0] / seconds


def overload(args: argparse.Namespace) -> None:
    import bench.load

    bench.load.S4_MAX_CONNECTIONS = args.connections
    proc, port = start("overload")
    try:
        rate = 4 * capacity(port)
        result = asyncio.run(OpenLoop(port, ECHO, rate, args.seconds, 5.0).run())
        alive = requests.post(URL % port, data=ECHO.data, headers=ECHO.headers(), timeout=30).ok
    finally:
        stop(proc)
    sent = max(1, result.sent)
    print(f"offered {rate:.0f} req/s (4x capacity) x {args.seconds:.0f} s: {result.sent} requests,")
    print(f"at most {args.connections} connections, client timeout 5 s")
    for outcome, count in sorted(result.statuses.items()):
        latencies = result.latencies.get(outcome, [])
        p99 = f", p99 {1000 * percentile(latencies, 99):.1f} ms" if latencies else ""
        print(f"  {outcome}: {count} ({100 * count / sent:.1f}%){p99}")
    print(f"  generator lag p99 {1000 * percentile(result.lags or [0.0], 99):.1f} ms")
    print(f"  server alive afterwards: {alive}")


def _post_body(port: int, mib: int, out: list[tuple[int, float]]) -> None:
    """Send a head and a ``mib`` MiB body at once; time until the status line arrives."""
    body = b'{"a": "' + b"x" * (mib * 1024 * 1024 - 9) + b'"}'  # mib MiB exactly
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        started = time.perf_counter()
        sock.sendall(
            b"POST / HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n" % len(body)
        )
        sender = threading.Thread(target=_send_quietly, args=(sock, body))
        sender.start()
        status = int(sock.recv(65536).split(b" ")[1])
        out.append((status, time.perf_counter() - started))
        sender.join()


def _send_quietly(sock: socket.socket, data: bytes) -> None:
    try:
        sock.sendall(data)
    except OSError:
        pass  # answered and closed before the whole body went: what admission does


def _busy(port: int) -> None:
    try:
        requests.post(URL % port, json={"sleep": 10}, timeout=30)
    except requests.RequestException:
        pass  # cut short when the server stops


def bodies(args: argparse.Namespace) -> None:
    proc, port = start("sleeper", "--predict-concurrency", "1", "--max-queue", "1")
    try:
        for _ in range(2):  # one runs, then one waits: the queue is full
            threading.Thread(target=_busy, args=(port,), daemon=True).start()
            time.sleep(0.5)  # (sent together, the second could find the first's place taken)
        rss_before = tree_rss_mb(proc.pid)
        answers: list[tuple[int, float]] = []
        senders = [
            threading.Thread(target=_post_body, args=(port, args.mib, answers))
            for _ in range(args.count)
        ]
        peak, health = rss_before, []
        for thread in senders:
            thread.start()
        while any(thread.is_alive() for thread in senders):
            began = time.perf_counter()
            requests.get(f"http://127.0.0.1:{port}/healthz", timeout=30)
            health.append(time.perf_counter() - began)
            peak = max(peak, tree_rss_mb(proc.pid))
            time.sleep(0.01)
    finally:
        stop(proc)
    statuses = sorted({status for status, _ in answers})
    print(f"{args.count} concurrent {args.mib} MiB bodies against a full queue:")
    answer_p99 = 1000 * percentile([t for _, t in answers], 99)
    answer_p50 = 1000 * percentile([t for _, t in answers], 50)
    print(f"  statuses {statuses}; status line p50 {answer_p50:.1f} ms, p99 {answer_p99:.1f} ms")
    print(f"  worker RSS {rss_before:.0f} MB -> peak {peak:.0f} MB (+{peak - rss_before:.0f} MB)")
    health_p99 = 1000 * percentile(health or [0.0], 99)
    print(f"  /healthz p99 {health_p99:.1f} ms over {len(health)} probes")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="what", required=True)
    over = sub.add_parser("overload")
    over.add_argument("--seconds", type=float, default=20.0)
    over.add_argument("--connections", type=int, default=4096)
    body = sub.add_parser("bodies")
    body.add_argument("--count", type=int, default=16)
    body.add_argument("--mib", type=int, default=32)
    args = parser.parse_args()
    {"overload": overload, "bodies": bodies}[args.what](args)


if __name__ == "__main__":
    main()
