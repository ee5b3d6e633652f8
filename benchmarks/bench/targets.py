"""The goals, one declaration each: scenario, metric, wording, rule and threshold.

A rule compares this runtime's median of the metric with a basis: the threshold alone,
the threshold times a figure (another runtime's, a ceiling's, or this runtime's on another
metric), or a figure plus the threshold. Rows with no rule are shown without a verdict.
This module imports nothing but the standard library and ``constants``, so that a test can
feed it fake medians.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from .constants import LABELS, LIT, MODEL_ALONE, NEW, REF, SCENARIOS

# (metric, runtime) -> the median over repetitions, or None when nothing was measured.
Medians = Callable[[str, str], Optional[float]]


@dataclass(frozen=True)
class Rule:
    """How a goal's threshold turns into a verdict on this runtime's figure."""

    op: str  # ">=" or "<="
    kind: str  # "value", "times", "share" or "plus"
    runtime: str | None = None  # whose figure is the basis ("value": none)
    metric: str | None = None  # the basis metric, when it is not the target's own
    name: str = ""  # how the goal column names the basis

    def basis(self, medians: Medians, metric: str, threshold: float) -> float | None:
        """The figure this runtime's value is compared with, or None when it is missing."""
        if self.kind == "value" or self.runtime is None:
            return threshold
        value = medians(self.metric or metric, self.runtime)
        if value is None:
            return None
        return value + threshold if self.kind == "plus" else value * threshold

    def holds(self, value: float, basis: float) -> bool:
        """Whether ``value`` meets ``basis``."""
        return value >= basis if self.op == ">=" else value <= basis

    def describe(self, threshold: float, unit: str) -> str:
        """The goal in words, e.g. ``>= 4.5x 0.5.0``, ``<= 50 us``, ``>= 50% of batch 1``."""
        if self.kind == "share":
            return f"{self.op} {100 * threshold:g}% of {self.name}"
        if self.kind == "times":
            return (
                f"{self.op} {self.name}"
                if threshold == 1
                else f"{self.op} {threshold:g}x {self.name}"
            )
        if self.kind == "plus":
            return f"{self.op} {self.name} + {threshold:g} {unit}".rstrip()
        return f"{self.op} {threshold:g} {unit}".rstrip()


def at_most() -> Rule:
    """This runtime's figure is at most the threshold."""
    return Rule("<=", "value")


def at_least() -> Rule:
    """This runtime's figure is at least the threshold."""
    return Rule(">=", "value")


def times(runtime: str, metric: str | None = None, name: str | None = None) -> Rule:
    """At least threshold x ``runtime``'s figure (of ``metric``, default the target's own)."""
    return Rule(">=", "times", runtime, metric, name or LABELS[runtime])


def share_of(ceiling: str, name: str) -> Rule:
    """At least threshold x the ceiling ``ceiling`` measured alone (a model, an ideal)."""
    return Rule(">=", "share", MODEL_ALONE, ceiling, name)


def within(runtime: str) -> Rule:
    """At most ``runtime``'s figure plus the threshold."""
    return Rule("<=", "plus", runtime, None, LABELS[runtime])


Show = Callable[[Medians, str, str], str]  # (medians, metric, runtime) -> the cell's text


@dataclass(frozen=True)
class Target:
    """One goal (or, without a rule, one figure shown for every runtime)."""

    scenario: str  # a key of constants.SCENARIOS
    metric: str  # the metric recorded by the scenario
    wording: str  # what the row says
    rule: Rule | None = None
    threshold: float = 0.0
    unit: str = ""  # of the threshold and of differences: "us", "ms", "MB", "s"
    digits: int = 0  # decimals shown
    ceiling: str | None = None  # a model-alone metric: figures show their share of it
    metrics: Mapping[str, str] = field(default_factory=dict)  # another metric per runtime
    runtimes: tuple[str, ...] | None = None  # runtimes with a figure; default the scenario's
    compare: str = "ratio"  # how the "vs" columns read: "ratio", "diff" or "" (none)
    goal: str = ""  # the goal's wording when the rule's own does not fit
    show: Show | None = None  # a cell's text when a number alone does not say it

    def metric_for(self, runtime: str) -> str:
        """The metric whose figure stands for ``runtime`` in this row."""
        return self.metrics.get(runtime, self.metric)

    def has(self, runtime: str) -> bool:
        """Whether this row has a figure for ``runtime`` at all."""
        return runtime in (self.runtimes or SCENARIOS[self.scenario])

    def figure(self, medians: Medians, runtime: str) -> float | None:
        """``runtime``'s figure in this row."""
        return medians(self.metric_for(runtime), runtime) if self.has(runtime) else None

    def verdict(self, medians: Medians) -> bool | None:
        """True when this runtime meets the goal, False when not, None when there is no goal
        or a figure it needs is missing."""
        if self.rule is None:
            return None
        value = medians(self.metric, NEW)
        basis = self.rule.basis(medians, self.metric, self.threshold)
        if value is None or basis is None:
            return None
        return self.rule.holds(value, basis)

    def goal_text(self) -> str:
        """The Target column: the goal in words, empty for a row without one."""
        if self.rule is None:
            return ""
        return self.goal or self.rule.describe(self.threshold, self.unit)


def _outcomes(medians: Medians, metric: str, runtime: str) -> str:
    prefix = metric.rsplit(".", 1)[0]
    shares = [medians(f"{prefix}.share_{k}", runtime) for k in ("200", "503", "other")]
    return " / ".join("n/a" if s is None else f"{s:.1f}%" for s in shares)


def _yes_no(medians: Medians, metric: str, runtime: str) -> str:
    value = medians(metric, runtime)
    return "n/a" if value is None else ("yes" if value >= 1 else "no")


def _overload(scenario: str) -> tuple[Target, ...]:
    """The rows of an overload run. The reference has no queue settings, so the rows of S4
    with default settings show its S4 figures."""

    def row(name: str, wording: str, rule: Rule | None = None, **more: Any) -> Target:
        ref = {REF: f"s4.{name}"} if scenario != "s4" else {}
        metric = f"{scenario}.{name}"
        return Target(scenario, metric, wording, rule, metrics=ref, runtimes=(REF, NEW), **more)

    return (
        row("rate", "offered open-loop rate, 4x capacity (req/s)", compare=""),
        row(
            "share_other",
            "answered 200 / 503 / neither",
            at_most(),
            threshold=0,
            goal="all 200 or 503",
            compare="",
            show=_outcomes,
        ),
        row("p99_200_ms", "p99 latency of 200s (ms)"),
        row(
            "p99_503_ms",
            "p99 latency of 503s (ms)",
            at_most(),
            threshold=50,
            unit="ms",
            digits=1,
            compare="",
        ),
        row("lag_p99_ms", "load generator lag, p99 (ms)", digits=1, compare=""),
        row(
            "alive",
            "server alive afterwards",
            at_least(),
            threshold=1,
            goal="alive",
            compare="",
            show=_yes_no,
        ),
    )


_MLP = "MLP, one row per request"
_MLP_JSON = f"{_MLP}, JSON req/s (% of model alone at batch 1)"
_PC1 = "--predict-concurrency 1"

TARGETS: tuple[Target, ...] = (
    Target("s1", "s1.rps", "echo JSON req/s, 64 connections", times(REF), 4.5),
    Target("s1", "s1.rps", "echo JSON req/s, 64 connections", times(LIT), 8),
    Target("s1", "s1.p50_ms", "p50 latency, 1 connection (ms)", digits=2),
    Target("s1", "s1.p99_ms", "p99 latency, 1 connection (ms)", digits=2),
    Target("s1", "s1.cpu_us", "server CPU per request (us)", at_most(), 50, "us"),
    # S2 unbatched with default settings: against the model alone, 0.5.0, a pinned limit.
    Target(
        "s2",
        "s2.plain_json.rps",
        _MLP_JSON,
        share_of("model.b1", "batch 1"),
        0.5,
        ceiling="model.b1",
    ),
    Target("s2", "s2.plain_json.rps", _MLP_JSON, times(REF), 2, ceiling="model.b1"),
    Target(
        "s2",
        "s2.plain_json.rps",
        _MLP_JSON,
        times(NEW, "s2.pc1_json.rps", _PC1),
        0.95,
        ceiling="model.b1",
    ),
    Target(
        "s2",
        "s2.plain_json.cpu_us",
        f"{_MLP}, JSON, server CPU per request (us)",
        runtimes=(REF, LIT, NEW),
    ),
    Target(
        "s2",
        "s2.pc1_json.rps",
        f"{_MLP}, JSON, `--predict-concurrency 1`",
        ceiling="model.b1",
        runtimes=(NEW,),
    ),
    Target(
        "s2",
        "s2.allcores_json.rps",
        f"{_MLP}, JSON, every core for each call (`--onnx-threads` = cores)",
        ceiling="model.b1",
        runtimes=(NEW,),
    ),
    Target(
        "s2",
        "s2.plain_json.lone_p50_ms",
        f"{_MLP}, JSON, p50 latency at 1 connection (ms)",
        digits=2,
        runtimes=(REF, NEW),
    ),
    Target(
        "s2",
        "s2.pc1_json.lone_p50_ms",
        f"{_MLP}, JSON, `{_PC1}`, p50 latency at 1 connection (ms)",
        digits=2,
        runtimes=(NEW,),
    ),
    Target(
        "s2",
        "s2.plain_msgpack.rps",
        f"{_MLP}, MessagePack req/s (% of batch 1)",
        times(NEW, "s2.plain_json.rps", "JSON"),
        1,
        ceiling="model.b1",
        runtimes=(REF, NEW),
    ),
    Target(
        "s2",
        "s2.batch_json.rps",
        "MLP batched, JSON req/s (% of batch 32; 0.5.0 unbatched)",
        share_of("model.b32", "batch 32"),
        0.5,
        ceiling="model.b32",
        metrics={REF: "s2.plain_json.rps"},
    ),
    Target(
        "s2",
        "s2.batch_msgpack.rps",
        "MLP batched, MessagePack req/s (0.5.0 unbatched)",
        times(NEW, "s2.batch_json.rps", "JSON batched"),
        1,
        ceiling="model.b32",
        metrics={REF: "s2.plain_msgpack.rps"},
        runtimes=(REF, NEW),
    ),
    Target(
        "s3",
        "s3.rps",
        "fetch + compute, each runtime's own shape, req/s (% of ideal)",
        share_of("s3.ideal", "ideal"),
        0.9,
        ceiling="s3.ideal",
    ),
    Target(
        "s6",
        "s6.rps",
        "0.5.0-shaped: fetch + compute inside predict, req/s (% of ideal)",
        times(REF),
        1.5,
        ceiling="s6.ideal",
    ),
    *_overload("s4"),
    *_overload("s4d"),
    Target(
        "s5",
        "s5.cold_s",
        "cold start to first 200 (s, median)",
        within(REF),
        0.3,
        "s",
        2,
        compare="diff",
    ),
    Target(
        "s5",
        "s5.rss_mb",
        "RSS after warm-up, process tree (MB)",
        within(REF),
        30,
        "MB",
        compare="diff",
    ),
    Target("s5", "s5.pss_mb", "PSS after warm-up, process tree (MB)", unit="MB", compare="diff"),
    Target("s5", "s5.processes", "processes in the server's tree", compare=""),
)
