"""Soak: minutes of mixed traffic (good, bad, crashing, bursts past the queue) on loopback.

Prints request counts by status and the server's RSS at start, each minute and at end.
Not run in CI:

    .venv/bin/python benchmarks/soak.py --minutes 10
"""

from __future__ import annotations

import argparse
import collections
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import requests

from openbayes_serving.testing import free_port

HERE = Path(__file__).resolve().parent


def tree_rss_mib(pid: int) -> float:
    """RSS of a process and its children, in MiB."""
    pids = [pid]
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as children:
            pids += [int(p) for p in children.read().split()]
    except OSError:
        pass
    total = 0
    for p in pids:
        try:
            with open(f"/proc/{p}/status") as status:
                total += next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))
        except (OSError, StopIteration):
            pass
    return total / 1024


def client(
    url: str, stop_at: float, counts: collections.Counter, lock: threading.Lock, seed: int
) -> None:
    rng = random.Random(seed)
    session = requests.Session()
    n = 0
    while time.monotonic() < stop_at:
        n += 1
        roll = rng.random()
        try:
            if roll < 0.80:
                rv = session.post(url, json={"n": n}, timeout=30)
            elif roll < 0.88:
                rv = session.post(url, json={"bad": True}, timeout=30)
            elif roll < 0.93:
                rv = session.post(url, json={"crash": True}, timeout=30)
            elif roll < 0.97:
                rv = session.post(
                    url, data=b"{nope", headers={"Content-Type": "application/json"}, timeout=30
                )
            else:
                rv = session.post(url, json={"n": n, "work": 0.05}, timeout=30)
            key = str(rv.status_code)
        except requests.RequestException as exc:
            key = type(exc).__name__
        with lock:
            counts[key] += 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--clients", type=int, default=48)
    args = parser.parse_args()
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENBAYES_")}
    env["OPENBAYES_SERVING_PRODUCTION"] = "1"
    server = subprocess.Popen(
        [
            sys.executable,
            str(HERE / "soak_predictor.py"),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--max-queue",
            "16",
            "--log-level",
            "error",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if requests.get(url + "/readyz", timeout=1).status_code == 200:
                    break
            except requests.RequestException:
                time.sleep(0.1)
        for _ in range(200):
            requests.post(url, json={"n": 0}, timeout=10)
        rss_start = tree_rss_mib(server.pid)
        counts: collections.Counter = collections.Counter()
        lock = threading.Lock()
        stop_at = time.monotonic() + args.minutes * 60
        threads = [
            threading.Thread(target=client, args=(url, stop_at, counts, lock, seed))
            for seed in range(args.clients)
        ]
        started = time.monotonic()
        for thread in threads:
            thread.start()
        samples = []  # RSS each minute: growth that levels off is warm-up, a slope a leak
        while time.monotonic() < stop_at:
            time.sleep(min(60.0, max(0.0, stop_at - time.monotonic())))
            samples.append(tree_rss_mib(server.pid))
        for thread in threads:
            thread.join()
        elapsed = time.monotonic() - started
        rss_end = tree_rss_mib(server.pid)
        alive = requests.get(url + "/healthz", timeout=5).status_code == 200
        total = sum(counts.values())
        rate = total / elapsed
        print(
            f"soak: {args.minutes:g} min, {args.clients} clients, {total} requests ({rate:.0f}/s)"
        )
        for key, count in sorted(counts.items()):
            print(f"  {key}: {count} ({100 * count / total:.1f}%)")
        print(f"server RSS: {rss_start:.1f} MiB at start, {rss_end:.1f} MiB at end")
        print("server RSS each minute (MiB): " + ", ".join(f"{rss:.1f}" for rss in samples))
        print(f"server alive after: {alive}")
        unexpected = {k for k in counts if k not in {"200", "422", "500", "400", "503"}}
        return 0 if alive and not unexpected else 1
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()


if __name__ == "__main__":
    raise SystemExit(main())
