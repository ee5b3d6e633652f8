"""The loopback server that the I/O scenarios fetch from: every answer comes after 50 ms."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import subprocess
import time

from openbayes_serving.testing import free_port

from .constants import HERE, HOST, SLOW_DELAY_S
from .proc import spawn, stop


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


async def serve_slowly(port: int, lifetime: float) -> None:
    """Answer every request on ``port`` after 50 ms, for at most ``lifetime`` seconds."""
    server = await asyncio.start_server(_slow_handler, HOST, port, backlog=1024)
    async with server:
        await asyncio.sleep(lifetime)  # bounded: the driver stops it long before


def start_slow_server(tool_python: str) -> tuple[subprocess.Popen[bytes], str]:
    """Start the slow server in its own process; return it and its URL once it listens."""
    port = free_port()
    cmd = [tool_python, "-m", "bench", "--slow-server", str(port)]
    proc = spawn(cmd, HERE, dict(os.environ), "slow-server.log")
    url = f"http://{HOST}:{port}/"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection((HOST, port), timeout=1):
            return proc, url
        time.sleep(0.05)
    stop(proc)
    raise RuntimeError("slow server did not start")
