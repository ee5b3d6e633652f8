"""The processes the driver starts: their own group, a stop by pid, and /proc accounting."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path
from types import FrameType

from .constants import LOGS

CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")

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
    # Children left behind in the group (a worker whose parent already exited).
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    _LIVE.pop(proc.pid, None)


def stop_all() -> None:
    """Stop every process this driver started and has not stopped yet."""
    for proc in list(_LIVE.values()):
        stop(proc, grace=3.0)


def on_signal(signum: int, frame: FrameType | None) -> None:
    """Signal handler: stop what the driver started, then exit with 128 + the signal."""
    stop_all()
    sys.exit(128 + signum)
