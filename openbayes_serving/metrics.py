"""Counters and histograms of the serving process, exposed in Prometheus text format."""

from __future__ import annotations

import bisect
import threading
from typing import Any

_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class _Histogram:
    def __init__(self, buckets: tuple[float, ...]) -> None:
        self.buckets = buckets
        self.counts = [0] * (len(buckets) + 1)
        self.total = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.buckets, value)] += 1
        self.total += value
        self.count += 1

    def render(self, name: str, labels: str) -> list[str]:
        lines = []
        cumulative = 0
        sep = "," if labels else ""
        for bound, count in zip(self.buckets, self.counts):
            cumulative += count
            lines.append(f'{name}_bucket{{{labels}{sep}le="{bound:g}"}} {cumulative}')
        lines.append(f'{name}_bucket{{{labels}{sep}le="+Inf"}} {self.count}')
        lines.append(f"{name}_sum{{{labels}}} {self.total:.6f}")
        lines.append(f"{name}_count{{{labels}}} {self.count}")
        return lines


class Metrics:
    """What the server counts; updated from the event loop and model threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._requests: dict[tuple[str, int], int] = {}
        self._latency: dict[str, _Histogram] = {}
        self._batches = _Histogram(_BATCH_BUCKETS)
        self._load_seconds = 0.0

    def observe_request(self, path: str, status: int, seconds: float) -> None:
        """Count one answered request."""
        route = path if path in ("/", "/healthz", "/readyz", "/metrics") else "other"
        with self._lock:
            key = (route, status)
            self._requests[key] = self._requests.get(key, 0) + 1
            if route == "/":
                hist = self._latency.get("total")
                if hist is None:
                    hist = self._latency["total"] = _Histogram(_BUCKETS)
                hist.observe(seconds)

    def observe_batch(self, size: int) -> None:
        """Record the size of one batch given to predict."""
        with self._lock:
            self._batches.observe(size)

    def set_load_time(self, seconds: float) -> None:
        """Record how long building the model instances took."""
        self._load_seconds = seconds

    def render(self, scheduler: Any) -> bytes:
        """The Prometheus text exposition."""
        lines = [
            "# HELP openbayes_serving_requests_total Requests answered, by route and status.",
            "# TYPE openbayes_serving_requests_total counter",
        ]
        with self._lock:
            for (route, status), count in sorted(self._requests.items()):
                lines.append(
                    f'openbayes_serving_requests_total{{route="{route}",status="{status}"}} {count}'
                )
            lines.append("# HELP openbayes_serving_request_seconds Latency of POST /, by stage.")
            lines.append("# TYPE openbayes_serving_request_seconds histogram")
            for stage, hist in sorted(self._latency.items()):
                lines.extend(hist.render("openbayes_serving_request_seconds", f'stage="{stage}"'))
            lines.append("# HELP openbayes_serving_batch_size Requests per call of predict.")
            lines.append("# TYPE openbayes_serving_batch_size histogram")
            lines.extend(self._batches.render("openbayes_serving_batch_size", ""))
        depth = scheduler.queue_depth if scheduler is not None else 0
        running = scheduler.running if scheduler is not None else 0
        lines += [
            "# HELP openbayes_serving_queue_depth Requests waiting for a predict slot.",
            "# TYPE openbayes_serving_queue_depth gauge",
            f"openbayes_serving_queue_depth {depth}",
            "# HELP openbayes_serving_predicts_running Predict calls running now.",
            "# TYPE openbayes_serving_predicts_running gauge",
            f"openbayes_serving_predicts_running {running}",
            "# HELP openbayes_serving_model_load_seconds Time to build the model instances.",
            "# TYPE openbayes_serving_model_load_seconds gauge",
            f"openbayes_serving_model_load_seconds {self._load_seconds:.6f}",
        ]
        return ("\n".join(lines) + "\n").encode("utf-8")
