"""The GPU benchmark runs end to end on a CPU with a tiny model and writes every row.

benchmarks/gpu/bench.py is what a GPU machine runs (through run.sh); this runs it with
``--device cpu --tiny`` and short measurements, so that the script a GPU run depends on
is known to work before a GPU is at hand. On a CPU the predictor raises
``torch.cuda.OutOfMemoryError`` for an input over its memory limit, so the report shows
what the runtime answers to that error and whether it serves on afterwards.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from conftest import ROOT, clean_env

BENCH = ROOT / "benchmarks" / "gpu" / "bench.py"
ROWS = [
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
]
# Worker processes each load torch: on 2 shared cores the test leaves them out (--plans).
WORKER_ROWS = [row for row in ROWS if "worker processes" in row]
SERVED = [
    row
    for row in ROWS
    if row.startswith("served, ") and "lone" not in row and row not in WORKER_ROWS
]


def table(report: str) -> dict[str, list[str]]:
    """The results table: measurement -> the other cells of its row."""
    rows = {}
    for line in report.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if line.startswith("| ") and len(cells) == 6 and not set(cells[0]) <= {"-"}:
            rows[cells[0]] = cells[1:]
    rows.pop("measurement", None)
    return rows


def number(text: str) -> float:
    """The first number in ``text`` (thousands separators allowed)."""
    found = re.search(r"\d[\d,]*(?:\.\d+)?", text)
    assert found, text
    return float(found.group().replace(",", ""))


def test_the_cpu_run_writes_every_row_and_the_server_survives_out_of_memory(
    tmp_path: Path,
) -> None:
    report, out = tmp_path / "RESULTS.md", tmp_path / "out"
    cmd = [sys.executable, str(BENCH), "--device", "cpu", "--tiny", "--clients", "4"]
    cmd += ["--client-processes", "1", "--warmup", "0.1", "--duration", "0.5"]
    cmd += ["--alone-seconds", "0.2", "--lone-requests", "10", "--plans", "one,pc2,pair,nowait"]
    cmd += ["--output", str(report), "--out-dir", str(out)]
    done = subprocess.run(
        cmd, env=clean_env(), capture_output=True, text=True, timeout=240, check=False
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    rows = table(report.read_text())
    assert list(rows) == ROWS
    assert number(rows["model alone, batch 32"][0]) > 0
    assert number(rows["model alone, batch 1"][0].removeprefix("p50 ")) > 0
    for label in WORKER_ROWS:
        assert rows[label][0] == "not run: not in --plans", rows[label]
    for label in SERVED:
        value = rows[label][0]
        assert "images/s at 4 clients" in value, value
        assert number(value) > 0
        assert "not 200" not in value, value
    for label in (
        "served, lone request",
        "served, lone request without the model",
        "served, lone request, max_delay_ms 0",
    ):
        assert rows[label][0].startswith("p50 "), rows[label]
        assert "over 10 requests" in rows[label][0]
    assert "on a second thread, as served: p50 " in rows["model alone, batch 1"][0]
    assert "MiB allocated" in rows["device memory after load"][0]
    assert "MiB allocated" in rows["device memory under load"][0]

    status = int(rows["out-of-memory request"][0].split()[0])
    assert 500 <= status < 600
    assert "(server log: torch.OutOfMemoryError: " in rows["out-of-memory request"][0]
    assert rows["out-of-memory request"][4] == "PASS"
    after = rows["after out-of-memory"][0]
    assert after.startswith("/readyz 200, next request 200, process alive"), after
    assert rows["after out-of-memory"][4] == "PASS"
    batched = rows["out-of-memory request batched with others"][0]
    assert batched.startswith(f"it got {status}; of 7 sent with it, "), batched
    assert "% of a core" in rows["load generator CPU"][0]
    assert "event loop thread" in rows["server CPU under load"][0]
    assert sorted(p.name for p in out.iterdir()) == ["RESULTS.md", "servers.log"]
