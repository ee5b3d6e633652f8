"""The report: the results table (a loop over the targets), the ceilings, notes, failures.

Other benchmarks add their own tables by writing a markdown section (a ``## `` heading and
what follows) to ``.work/sections/NAME.md``: every such file is appended, in name order.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import platform
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from .constants import (
    LABELS,
    LIT,
    MLP_SIZES,
    MODEL_ALONE,
    NEW,
    REF,
    RUNTIMES,
    S2_BATCH,
    S2_BATCH_DELAY_MS,
    S4_MAX_CONNECTIONS,
    S4_MAX_QUEUE,
    SCENARIOS,
    SLOW_DELAY_S,
)
from .results import Results
from .targets import TARGETS, Medians, Target

VERDICTS = {None: "n/a", True: "PASS", False: "MISS"}
SCENARIO_LABELS = {"s4d": "S4 defaults"}
HEADINGS = {REF: "0.5.0", LIT: "LitServe", NEW: "This runtime"}


def fmt(value: float | None, digits: int = 0) -> str:
    """``1,234.5``-style figure, or ``n/a`` when there is none."""
    return "n/a" if value is None else f"{value:,.{digits}f}"


def cell(target: Target, medians: Medians, runtime: str) -> str:
    """``runtime``'s figure in ``target``'s row, with its share of the ceiling if any."""
    if not target.has(runtime):
        return "-"
    if target.show is not None:
        return target.show(medians, target.metric_for(runtime), runtime)
    value = target.figure(medians, runtime)
    text = fmt(value, target.digits)
    ceiling = medians(target.ceiling, MODEL_ALONE) if target.ceiling else None
    if value is not None and ceiling:
        text += f" ({100 * value / ceiling:.0f}%)"
    return text


def versus(target: Target, medians: Medians, other: str) -> str:
    """This runtime against ``other`` in ``target``'s row: a ratio, a difference, or blank."""
    if not target.compare or not target.has(other):
        return ""
    new, base = target.figure(medians, NEW), target.figure(medians, other)
    if new is None or base is None:
        return "n/a"
    if target.compare == "diff":
        return f"{new - base:+.{target.digits}f} {target.unit}".rstrip()
    return f"{new / base:.2f}x" if base else "n/a"


def table_rows(
    medians: Medians, runtimes: tuple[str, ...] = RUNTIMES, targets: tuple[Target, ...] = TARGETS
) -> list[list[str]]:
    """One row per metric; goals declared one after another on the same metric share it."""
    rows: list[list[str]] = []
    previous: Target | None = None
    for target in targets:
        goal = target.goal_text()
        verdict = VERDICTS[target.verdict(medians)] if goal else ""
        if previous is not None and (previous.scenario, previous.metric) == (
            target.scenario,
            target.metric,
        ):
            rows[-1][-2] = "; ".join(filter(None, (rows[-1][-2], goal)))
            rows[-1][-1] = "; ".join(filter(None, (rows[-1][-1], verdict)))
            continue
        scenario = SCENARIO_LABELS.get(target.scenario, target.scenario.upper())
        figures = [cell(target, medians, runtime) for runtime in runtimes]
        ratios = [versus(target, medians, other) for other in runtimes if other != NEW]
        rows.append([scenario, target.wording, *figures, *ratios, goal, verdict])
        previous = target
    return rows


def build_table(
    medians: Medians,
    runtimes: tuple[str, ...] = RUNTIMES,
    scenarios: tuple[str, ...] = tuple(SCENARIOS),
) -> list[str]:
    """The results table as markdown lines (the rows of ``scenarios``): figures per runtime,
    ratios, goal, verdict."""
    runtimes = tuple(r for r in RUNTIMES if r in runtimes)
    targets = tuple(t for t in TARGETS if t.scenario in scenarios)
    head = ["Scenario", "Metric", *(HEADINGS[r] for r in runtimes)]
    head += [f"vs {LABELS[r]}" for r in runtimes if r != NEW] + ["Target", ""]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    rows = table_rows(medians, runtimes, targets)
    return lines + ["| " + " | ".join(row) + " |" for row in rows]


def tally(medians: Medians, scenarios: tuple[str, ...] = tuple(SCENARIOS)) -> str:
    """How many goals of ``scenarios`` this run met, missed, or could not judge."""
    targets = (t for t in TARGETS if t.scenario in scenarios and t.rule is not None)
    verdicts = [t.verdict(medians) for t in targets]
    met, missed = verdicts.count(True), verdicts.count(False)
    unknown = len(verdicts) - met - missed
    return f"Goals met: {met} of {len(verdicts)} ({missed} missed, {unknown} n/a)."


@dataclass
class RunInfo:
    """What the report says about the run besides the figures."""

    label: str
    seconds: int
    reps: int
    compute_reps: int
    versions: dict[str, str]  # runtime -> the line that describes it
    scenarios: tuple[str, ...] = tuple(SCENARIOS)  # the scenarios that ran
    machine: dict[str, str] = field(default_factory=dict)
    sections: Path | None = None  # a folder of extra markdown sections


def loadavg() -> str:
    """The load averages over 1, 5 and 15 minutes."""
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def machine() -> dict[str, str]:
    """The machine the run is on: CPU, cores, kernel, wrk's version, load average now."""
    cpu = "unknown CPU"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    wrk = subprocess.run(["wrk", "--version"], capture_output=True, text=True, check=False)
    return {
        "cpu": cpu,
        "nproc": str(os.cpu_count()),
        "kernel": platform.release(),
        "wrk": " ".join((wrk.stdout or wrk.stderr).split()[:2]),
        "load": loadavg(),
    }


def _header(info: RunInfo) -> list[str]:
    now = datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    m = info.machine
    lines = [
        "# Benchmark results",
        "",
        f"Generated by `{info.label}` on {now}."
        " Do not edit: run the command again (see README.md).",
        "",
        f"- Machine: {m.get('nproc')} cores, {m.get('cpu')}, Linux {m.get('kernel')};"
        f" load average {m.get('load')} at the start, {loadavg()} at the end.",
    ]
    lines += [f"- {HEADINGS[name]}: {text}." for name, text in info.versions.items()]
    lines.append(
        f"- Method: {m.get('wrk')}, one thread, {info.seconds} s per measurement after 1 s of"
        f" warm-up; {info.reps} repetition(s), the runtime that goes first alternating; medians."
        " Every server runs with default settings unless a scenario says otherwise (this"
        " runtime and 0.5.0 in production mode, `OPENBAYES_SERVING_PRODUCTION=1`). Ratios are"
        " this runtime / the other."
    )
    return lines


def _model_table(medians: Medians) -> list[str]:
    def rate(key: str) -> str:
        return fmt(medians(f"model.{key}", MODEL_ALONE))

    return [
        "Model alone (onnxruntime in-process, rows/s; the ceiling is the better option set):",
        "",
        "| onnxruntime options | batch 32 | batch 1 |",
        "|---|---|---|",
        f"| defaults | {rate('default.b32')} | {rate('default.b1')} |",
        f"| 1 intra-op thread, no spinning | {rate('1thread.b32')} | {rate('1thread.b1')} |",
        f"| ceiling | {rate('b32')} | {rate('b1')} |",
    ]


def _notes(medians: Medians, info: RunInfo) -> list[str]:
    """A line on how each scenario that ran was measured."""
    compute = medians("s3.compute_s", MODEL_ALONE) or medians("s6.compute_s", MODEL_ALONE)
    ms = fmt(1e3 * compute if compute else None, 2)
    notes = {
        "litserve": "- LitServe runs the same logic in its own API shape (`predictors/litserve/`:"
        " setup, decode_request, predict, encode_response) on its default endpoint"
        " `POST /predict`, with its defaults (the client file it would write is turned off).",
        "s1": "- S1: echo a small JSON dict; CPU per request = utime + stime of the server's"
        " process tree over the 64-connection run / its requests.",
        "s2": f"- S2: MLP {'-'.join(map(str, MLP_SIZES))} (Gemm + Relu), one row of 512 floats"
        " per request, 64 connections. Default settings pass no concurrency flag; batched:"
        f" `@serv.batch(max_batch_size={S2_BATCH}, max_delay_ms={S2_BATCH_DELAY_MS})`, LitServe"
        f" `max_batch_size={S2_BATCH}, batch_timeout={S2_BATCH_DELAY_MS / 1e3}`.",
        "s3": f"- S3 and S6: compute = {info.compute_reps} matmuls of 256x256 float32 ({ms} ms"
        " measured in-process), so the ideal is 1/compute; the loopback server answers each"
        f" fetch after {1e3 * SLOW_DELAY_S:.0f} ms; 64 connections. S3: this runtime fetches in"
        " `preprocess`, LitServe in `decode_request`, 0.5.0 inside `predict`. S6: one file for"
        " both runtimes, the fetch and the compute inside `predict`, default settings.",
        "s4": f"- S4: capacity = 2xx/s with wrk at {S4_MAX_QUEUE} connections (about 10 ms of"
        f" compute per request); then open-loop arrivals at 4x that for {info.seconds} s over at"
        f" most {S4_MAX_CONNECTIONS} connections, client timeout {max(5, info.seconds)} s. S4:"
        f" this runtime with `--max-queue {S4_MAX_QUEUE} --request-timeout 10`; S4 defaults:"
        " without them. 0.5.0 has no such settings (its S4 run stands in both). Latency counts"
        " from the moment a request is written.",
        "s5": "- S5: the S2 predictor; process start to the first 200 on POST /; RSS summed over"
        " the server's process tree after 2 s of load (PSS splits pages that forked processes"
        " share, so it does not count them twice).",
    }
    ran = set(info.scenarios) | ({"litserve"} if LIT in info.versions else set())
    ran |= {"s3"} if "s6" in ran else set()
    ran |= {"s4"} if "s4d" in ran else set()
    return [text for key, text in notes.items() if key in ran]


def _problems(results: Results) -> list[str]:
    bad = [
        f"{metric[:-4]} on {name}: {sum(vals):.0f}"
        for metric, by_name in sorted(results.values.items())
        if metric.endswith(".bad")
        for name, vals in by_name.items()
        if sum(vals)
    ]
    out = []
    if bad:
        out += ["", "Non-2xx answers or socket errors in closed-loop runs: " + "; ".join(bad)]
    if results.failures:
        out += ["", "## Failures", ""] + [f"- {f}".replace("\n", " ") for f in results.failures]
    return out


def extra_sections(folder: Path | None) -> list[str]:
    """Every ``*.md`` section in ``folder`` (name order), each with where it came from."""
    out: list[str] = []
    for path in sorted(folder.glob("*.md")) if folder and folder.is_dir() else []:
        written = datetime.datetime.fromtimestamp(path.stat().st_mtime).astimezone()
        out += ["", path.read_text().strip(), ""]
        out.append(f"_(from `{path.name}`, written {written.strftime('%Y-%m-%d %H:%M %Z')})_")
    return out


def write_report(path: Path, results: Results, info: RunInfo) -> str:
    """Write the markdown report to ``path`` and return its text."""
    medians = results.median
    out = [
        *_header(info),
        "",
        *build_table(medians, tuple(info.versions), info.scenarios),
        "",
        tally(medians, info.scenarios),
        "",
        *_model_table(medians),
        "",
        *_notes(medians, info),
        *_problems(results),
        *extra_sections(info.sections),
    ]
    text = "\n".join(out) + "\n"
    path.write_text(text)
    return text
