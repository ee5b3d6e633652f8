"""Load generation: wrk's closed loop, and an open-loop generator for overload (S4)."""

from __future__ import annotations

import asyncio
import math
import re
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from .bodies import Body
from .constants import HOST, S4_MAX_CONNECTIONS, S4_MAX_REQUESTS, WORK

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


def parse_wrk(text: str) -> WrkResult | None:
    """The figures of a wrk report, or None when it holds no request count."""
    match = re.search(r"(\d+) requests in ([\d.]+)(us|ms|s|m)", text)
    if match is None:
        return None
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


def run_wrk(
    port: int, body: Body, connections: int, seconds: int, latency: bool = False, path: str = "/"
) -> WrkResult:
    """Closed-loop load with wrk (one thread) for ``seconds``; parse its report."""
    cmd = ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--timeout", "10s"]
    cmd += ["--latency"] if latency else []
    cmd += ["-s", str(write_lua(body)), f"http://{HOST}:{port}{path}"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60)
    result = parse_wrk(done.stdout)
    if done.returncode != 0 or result is None:
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stdout} {done.stderr}")
    return result


def percentile(values: list[float], pct: float) -> float:
    """The ``pct``-th percentile of ``values`` (nearest rank)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(pct / 100 * len(ordered)) - 1))]


# ----------------------------------------------------------------------- open loop


@dataclass
class OpenLoopResult:
    """Outcome of an open-loop run: status counts, latencies by status, generator lag."""

    sent: int = 0
    statuses: dict[str, int] = field(default_factory=dict)
    latencies: dict[str, list[float]] = field(default_factory=dict)
    lags: list[float] = field(default_factory=list)

    def add(self, outcome: str, latency: float | None = None) -> None:
        """Count one outcome (a status, "timeout", "error", ...) and its latency."""
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
        conn = None
        while self.idle and conn is None:
            conn = self.idle.pop()
            if conn[0].at_eof():  # the server closed it while idle: as HTTP clients do, skip it
                conn[1].close()
                conn = None
        if conn is None:
            conn = await asyncio.open_connection(HOST, self.port)
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
        """Send every request on its schedule, wait for the answers (bounded), and count."""
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
