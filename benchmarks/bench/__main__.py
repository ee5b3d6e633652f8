"""The command line: build the model, serve the slow server, or run the benchmarks.

Run it through the Makefile (``make -C benchmarks bench``, or ``quick``), which builds the
virtualenvs, the model and wrk first. Every server binds 127.0.0.1 only, runs in its own
process group and is stopped by pid; every load loop is bounded in count and time.
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import json
import logging
import os
import shlex
import signal
import sys
from collections.abc import Iterable
from pathlib import Path

from .bodies import BODIES, make_bodies
from .ceilings import calibrate_compute, make_model
from .constants import HERE, NEW, RUNTIMES, SCENARIOS, SECTIONS, VENVS, WORK
from .proc import on_signal, stop, stop_all
from .report import RunInfo, machine, write_report
from .scenarios import Bench
from .servers import Runtime, load_runtime
from .slow_server import serve_slowly, start_slow_server

logger = logging.getLogger("bench")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The driver's flags."""
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    parser.add_argument("--reps", type=int, default=3, help="repetitions of every scenario")
    parser.add_argument("--duration", type=int, default=10, help="seconds per load run")
    parser.add_argument("--output", default="RESULTS.md", help="report path")
    parser.add_argument("--label", default="python -m bench", help="command named in the report")
    parser.add_argument("--only", default=",".join(SCENARIOS), help="scenarios, e.g. s1,s2")
    parser.add_argument("--runtimes", default=",".join(RUNTIMES), help="e.g. reference,new")
    parser.add_argument(
        "--new-args", default="", help="flags added to every server of this runtime, e.g. tuning"
    )
    parser.add_argument(
        "--sections", default=str(SECTIONS), help="folder of markdown sections to append"
    )
    parser.add_argument("--make-model", metavar="PATH", help="write the ONNX model and exit")
    parser.add_argument("--slow-server", type=int, metavar="PORT", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def _names(text: str, known: Iterable[str], what: str) -> tuple[str, ...]:
    known = tuple(known)
    names = tuple(n.strip().lower() for n in text.split(",") if n.strip())
    unknown = [n for n in names if n not in known]
    if unknown:
        raise SystemExit(f"unknown {what}: {', '.join(unknown)} (known: {', '.join(known)})")
    return names


def describe(runtime: Runtime) -> str:
    """A runtime's line in the report: the versions it found, and the flags it ran with."""
    shown = {k: v for k, v in runtime.versions.items() if k != "import"}
    text = ", ".join(f"{k} {v}" for k, v in shown.items())
    if runtime.versions.get("import") != "ok":
        text += f" (import failed: {str(runtime.versions.get('import')).strip()[:200]})"
    if runtime.extra_args:
        text += f"; run with `{shlex.join(runtime.extra_args)}`"
    return text


def run_benchmarks(args: argparse.Namespace) -> int:
    """Measure every scenario asked for, write the report and the raw values."""
    BODIES.update(make_bodies())
    atexit.register(stop_all)
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    names = _names(args.runtimes, RUNTIMES, "runtimes")
    runtimes = {n: load_runtime(n, WORK / VENVS[n]) for n in RUNTIMES if n in names}
    if NEW in runtimes:
        runtimes[NEW].extra_args = shlex.split(args.new_args)
    for runtime in runtimes.values():
        logger.info("%s: %s", runtime.name, runtime.versions)
    found = machine()
    only = _names(args.only, SCENARIOS, "scenarios")
    bench = Bench(runtimes, args.duration, args.reps, only)
    bench.compute_reps = calibrate_compute()
    slow = None
    try:
        if {"s3", "s6"} & set(only):
            slow, bench.slow_url = start_slow_server(sys.executable)
        bench.run()
    finally:
        if slow is not None:
            stop(slow)
        stop_all()
    versions = {name: describe(runtime) for name, runtime in runtimes.items()}
    info = RunInfo(
        label=args.label,
        seconds=args.duration,
        reps=args.reps,
        compute_reps=bench.compute_reps,
        versions=versions,
        scenarios=only,
        machine=found,
        sections=Path(args.sections),
    )
    text = write_report(HERE / args.output, bench.results, info)
    # Raw values named after the report: a quick run's never overwrite a full run's.
    raw = WORK / f"{Path(args.output).stem.lower()}.json"  # results.json, results-quick.json
    raw.write_text(json.dumps(bench.results.values, indent=1))
    sys.stdout.write(text)
    return 1 if bench.results.failures else 0


def main(argv: list[str] | None = None) -> int:
    """Build the model, serve the slow server, or run the benchmarks and write the report."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    # BLAS stays single-threaded here and in every server (the S3/S4/S6 compute); nothing
    # has imported numpy yet: the modules that use it import it when they run.
    for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[name] = "1"
    args = parse_args(argv)
    if args.make_model:
        make_model(Path(args.make_model))
        return 0
    if args.slow_server:
        asyncio.run(serve_slowly(args.slow_server, lifetime=3600.0))
        return 0
    return run_benchmarks(args)


if __name__ == "__main__":
    sys.exit(main())
