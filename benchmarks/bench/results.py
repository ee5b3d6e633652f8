"""Every measured value of a run, keyed metric -> runtime, and the failures met."""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field


@dataclass
class Results:
    """The values recorded so far (one per repetition) and what failed."""

    values: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)

    def record(self, metric: str, runtime: str, value: float) -> None:
        """Add one measurement of ``metric`` on ``runtime``."""
        self.values.setdefault(metric, {}).setdefault(runtime, []).append(value)

    def median(self, metric: str, runtime: str) -> float | None:
        """The median of ``metric`` on ``runtime``; None when no number was recorded."""
        found = [v for v in self.values.get(metric, {}).get(runtime, []) if not math.isnan(v)]
        return statistics.median(found) if found else None
