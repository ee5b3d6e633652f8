"""The benchmark goals judged from fake medians: each goal's rule, threshold and table row.

No server runs here: the medians are made up, so that each goal is seen to pass at its
threshold, to miss just past it, and to give no verdict when a figure is missing.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from pathlib import Path

import pytest

sys.path.append(str(Path(__file__).resolve().parent.parent))  # the repository root: benchmarks

from benchmarks.bench.constants import LIT, MODEL_ALONE, NEW, REF, SCENARIOS  # noqa: E402
from benchmarks.bench.report import build_table, table_rows, tally  # noqa: E402
from benchmarks.bench.targets import TARGETS, Medians, Target  # noqa: E402

# Figures that meet every goal; each test changes one or two of them.
GOOD: dict[tuple[str, str], float] = {
    ("s1.rps", REF): 1000,
    ("s1.rps", LIT): 500,
    ("s1.rps", NEW): 5000,
    ("s1.p50_ms", NEW): 0.2,
    ("s1.cpu_us", REF): 700,
    ("s1.cpu_us", LIT): 900,
    ("s1.cpu_us", NEW): 40,
    ("model.b1", MODEL_ALONE): 1000,
    ("model.b32", MODEL_ALONE): 10000,
    ("s2.plain_json.rps", REF): 300,
    ("s2.plain_json.rps", LIT): 250,
    ("s2.plain_json.rps", NEW): 700,
    ("s2.pc1_json.rps", NEW): 700,
    ("s2.plain_msgpack.rps", REF): 320,
    ("s2.plain_msgpack.rps", NEW): 720,
    ("s2.batch_json.rps", LIT): 3000,
    ("s2.batch_json.rps", NEW): 6000,
    ("s2.batch_msgpack.rps", NEW): 6100,
    ("s3.ideal", MODEL_ALONE): 200,
    ("s3.rps", REF): 150,
    ("s3.rps", LIT): 18,
    ("s3.rps", NEW): 190,
    ("s6.ideal", MODEL_ALONE): 200,
    ("s6.rps", REF): 150,
    ("s6.rps", NEW): 240,
    ("s4.rate", REF): 600,
    ("s4.rate", NEW): 400,
    ("s5.cold_s", REF): 0.6,
    ("s5.cold_s", NEW): 0.5,
    ("s5.rss_mb", REF): 100,
    ("s5.rss_mb", NEW): 120,
}
for _scenario in ("s4", "s4d"):
    GOOD.update(
        {
            (f"{_scenario}.share_200", NEW): 25.0,
            (f"{_scenario}.share_503", NEW): 75.0,
            (f"{_scenario}.share_other", NEW): 0.0,
            (f"{_scenario}.p99_503_ms", NEW): 1.0,
            (f"{_scenario}.alive", NEW): 1.0,
        }
    )
GOOD[("s4.share_other", REF)] = 42.0


def medians(changes: Mapping[tuple[str, str], float | None] | None = None) -> Medians:
    """GOOD with ``changes`` applied (None removes a figure), as the report reads medians."""
    figures: dict[tuple[str, str], float | None] = {**GOOD, **(changes or {})}
    return lambda metric, runtime: figures.get((metric, runtime))


def goal(metric: str, text: str) -> Target:
    """The one target on ``metric`` whose goal reads ``text``."""
    found = [t for t in TARGETS if t.metric == metric and t.goal_text() == text]
    assert len(found) == 1, [t.goal_text() for t in TARGETS if t.metric == metric]
    return found[0]


def test_every_goal_passes_when_every_figure_meets_it() -> None:
    ruled = [t for t in TARGETS if t.rule is not None]
    missed = [(t.metric, t.goal_text()) for t in ruled if t.verdict(medians()) is not True]
    assert missed == []
    assert tally(medians()) == f"Goals met: {len(ruled)} of {len(ruled)} (0 missed, 0 n/a)."


# (metric, goal as the table words it, changed figures, verdict expected)
CASES = [
    ("s1.rps", ">= 4.5x 0.5.0", {("s1.rps", NEW): 4500}, True),
    ("s1.rps", ">= 4.5x 0.5.0", {("s1.rps", NEW): 4490}, False),
    ("s1.rps", ">= 8x LitServe", {("s1.rps", LIT): 625}, True),
    ("s1.rps", ">= 8x LitServe", {("s1.rps", LIT): 630}, False),
    ("s1.cpu_us", "<= 50 us", {("s1.cpu_us", NEW): 50}, True),
    ("s1.cpu_us", "<= 50 us", {("s1.cpu_us", NEW): 51}, False),
    ("s2.plain_json.rps", ">= 50% of batch 1", {("s2.plain_json.rps", NEW): 499}, False),
    ("s2.plain_json.rps", ">= 50% of batch 1", {("model.b1", MODEL_ALONE): 1400}, True),
    ("s2.plain_json.rps", ">= 2x 0.5.0", {("s2.plain_json.rps", REF): 351}, False),
    (
        "s2.plain_json.rps",
        ">= 0.95x --predict-concurrency 1",
        {("s2.pc1_json.rps", NEW): 736},
        True,
    ),
    (
        "s2.plain_json.rps",
        ">= 0.95x --predict-concurrency 1",
        {("s2.pc1_json.rps", NEW): 740},
        False,
    ),
    ("s2.plain_msgpack.rps", ">= JSON", {("s2.plain_msgpack.rps", NEW): 699}, False),
    ("s2.batch_json.rps", ">= 50% of batch 32", {("s2.batch_json.rps", NEW): 4999}, False),
    ("s2.batch_msgpack.rps", ">= JSON batched", {("s2.batch_msgpack.rps", NEW): 5999}, False),
    ("s3.rps", ">= 90% of ideal", {("s3.rps", NEW): 179}, False),
    ("s6.rps", ">= 1.5x 0.5.0", {("s6.rps", NEW): 225}, True),
    ("s6.rps", ">= 1.5x 0.5.0", {("s6.rps", NEW): 224}, False),
    ("s4.share_other", "all 200 or 503", {("s4.share_other", NEW): 0.1}, False),
    ("s4d.share_other", "all 200 or 503", {("s4d.share_other", NEW): 3.0}, False),
    ("s4.p99_503_ms", "<= 50 ms", {("s4.p99_503_ms", NEW): 50.5}, False),
    ("s4d.alive", "alive", {("s4d.alive", NEW): 0.0}, False),
    ("s5.cold_s", "<= 0.5.0 + 0.3 s", {("s5.cold_s", NEW): 0.91}, False),
    ("s5.rss_mb", "<= 0.5.0 + 30 MB", {("s5.rss_mb", NEW): 130}, True),
    ("s5.rss_mb", "<= 0.5.0 + 30 MB", {("s5.rss_mb", NEW): 131}, False),
]


@pytest.mark.parametrize(("metric", "text", "changes", "expected"), CASES)
def test_goal_passes_at_its_threshold_and_misses_past_it(
    metric: str, text: str, changes: dict[tuple[str, str], float], expected: bool
) -> None:
    assert goal(metric, text).verdict(medians(changes)) is expected


def test_a_missing_figure_gives_no_verdict_and_leaves_the_others() -> None:
    figures = medians({("s1.rps", LIT): None})
    assert goal("s1.rps", ">= 8x LitServe").verdict(figures) is None
    assert goal("s1.rps", ">= 4.5x 0.5.0").verdict(figures) is True
    row = next(r for r in table_rows(figures) if r[1].startswith("echo JSON"))
    assert row == [
        "S1",
        "echo JSON req/s, 64 connections",
        "1,000",
        "n/a",
        "5,000",
        "5.00x",
        "n/a",
        ">= 4.5x 0.5.0; >= 8x LitServe",
        "PASS; n/a",
    ]


def test_the_table_reads_this_runtime_against_both_others() -> None:
    lines = build_table(medians())
    head = "Scenario | Metric | 0.5.0 | LitServe | This runtime | vs 0.5.0 | vs LitServe | Target"
    assert lines[0] == f"| {head} |  |"
    rows = {(r[0], r[1]): r for r in table_rows(medians())}
    unbatched = rows[("S2", "MLP, one row per request, JSON req/s (% of model alone at batch 1)")]
    assert unbatched[2:7] == ["300 (30%)", "250 (25%)", "700 (70%)", "2.33x", "2.80x"]
    assert unbatched[8] == "PASS; PASS; PASS"
    # A runtime a scenario does not run shows a dash, not a missing figure.
    s6 = rows[("S6", "0.5.0-shaped: fetch + compute inside predict, req/s (% of ideal)")]
    assert s6[2:7] == ["150 (75%)", "-", "240 (120%)", "1.60x", ""]
    # S4 with default settings shows the reference's S4 run: it has no such settings.
    shares = rows[("S4 defaults", "answered 200 / 503 / neither")]
    assert shares[2:5] == ["n/a / n/a / 42.0%", "-", "25.0% / 75.0% / 0.0%"]
    cold = rows[("S5", "cold start to first 200 (s, median)")]
    assert cold[5] == "-0.10 s"


def test_a_table_without_litserve_has_no_litserve_columns() -> None:
    lines = build_table(medians(), (REF, NEW))
    assert "LitServe" not in lines[0]
    assert all(line.count("|") == lines[0].count("|") for line in lines)


def test_every_target_belongs_to_a_scenario_the_driver_runs() -> None:
    assert {t.scenario for t in TARGETS} == set(SCENARIOS)
    for target in TARGETS:
        assert target.metric.startswith(f"{target.scenario}."), target
        assert target.has(NEW), target
