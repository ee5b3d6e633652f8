"""Prometheus metrics of the serving process, right with several gunicorn workers.

With ``workers > 1`` the server exports PROMETHEUS_MULTIPROC_DIR before the fork and
prometheus-client keeps each worker's values in files that any worker's ``/metrics``
sums up; with one worker the values live in memory. prometheus-client is imported only
here, after that choice.
"""

from __future__ import annotations

from typing import Any

STAGES = ("queue", "preprocess", "predict", "postprocess", "total")
_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
_CHUNK_BUCKETS = (0, 1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class Metrics:
    """What the server counts; updated from the event loop and the model threads."""

    def __init__(self, multiprocess_dir: str | None, routes: frozenset[str]) -> None:
        """``routes``: the paths counted by name; any other path counts as "other"."""
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self._routes = routes
        self._multiprocess_dir = multiprocess_dir
        self.is_multiprocess = multiprocess_dir is not None
        registry = self.registry = None if multiprocess_dir else CollectorRegistry()
        kw: dict[str, Any] = {"registry": registry} if registry else {}
        self.requests = Counter(
            "openbayes_serving_requests",
            "Requests answered, by route and status.",
            ["route", "status"],
            **kw,
        )
        self.rejected = Counter(
            "openbayes_serving_rejected",
            "Predict requests shed: overloaded (503) or timed out (504).",
            ["reason"],
            **kw,
        )
        self.latency = Histogram(
            "openbayes_serving_request_duration_seconds",
            "Time spent by POST / in each stage (queue wait, preprocess, predict, "
            "postprocess) and in all (total).",
            ["stage"],
            buckets=_LATENCY_BUCKETS,
            **kw,
        )
        self._stages = {stage: self.latency.labels(stage) for stage in STAGES}
        self._request_children: dict[tuple[str, int], Any] = {}
        self.batch_size = Histogram(
            "openbayes_serving_batch_size",
            "Requests per call of a batched predict.",
            buckets=_BATCH_BUCKETS,
            **kw,
        )
        self.in_flight, self.queue_depth, self.load_seconds = _gauges(Gauge, kw)
        self.first_chunk, self.stream_chunks = _stream_histograms(Histogram, kw)
        self.cancelled = Counter(
            "openbayes_serving_cancelled",
            "Requests whose cancelled was set (predictors that ask for it), by reason: "
            "the client hung up (disconnect) or the deadline passed (deadline).",
            ["reason"],
            **kw,
        )
        self._cancelled = {r: self.cancelled.labels(r) for r in ("disconnect", "deadline")}
        self.predicts_running, self.warmup_seconds, self.concurrency_limit = _work_gauges(Gauge, kw)

    def observe_request(self, path: str, status: int, seconds: float) -> None:
        """Count one answered request (any route)."""
        route = path if path in self._routes else "other"
        child = self._request_children.get((route, status))
        if child is None:  # labels() takes a lock and builds a key: do it once per pair
            child = self._request_children[(route, status)] = self.requests.labels(
                route, str(status)
            )
        child.inc()
        if route == "/":
            self._stages["total"].observe(seconds)
            if status == 503:
                self.rejected.labels("overloaded").inc()
            elif status == 504:
                self.rejected.labels("timeout").inc()

    def observe_stage(self, stage: str, seconds: float) -> None:
        """Record the time one request spent in ``stage``."""
        self._stages[stage].observe(seconds)

    def observe_timing(self, queued: float, predicted: float) -> None:
        """Record one job's queue wait and predict time (from a model thread)."""
        self._stages["queue"].observe(queued)
        self._stages["predict"].observe(predicted)

    def observe_batch(self, size: int) -> None:
        """Record the size of one batch given to predict."""
        self.batch_size.observe(size)

    def observe_first_chunk(self, seconds: float) -> None:
        """Record how long a stream took to send its first chunk."""
        self.first_chunk.observe(seconds)

    def observe_stream_chunks(self, count: int) -> None:
        """Record how many chunks a stream sent in all."""
        self.stream_chunks.observe(count)

    def set_load_time(self, seconds: float) -> None:
        """Record how long building the model instances took."""
        self.load_seconds.set(seconds)

    def observe_cancelled(self, reason: str) -> None:
        """Count one request whose ``cancelled`` was set, for ``reason``."""
        self._cancelled[reason].inc()

    def set_warmup_time(self, seconds: float) -> None:
        """Record how long ``warmup()`` took on the instances."""
        self.warmup_seconds.set(seconds)

    def set_load(self, queue_depth: int, running: int) -> None:
        """The gauges read from the scheduler: requests waiting, predicts running."""
        self.queue_depth.set(queue_depth)
        self.predicts_running.set(running)

    def render(self) -> bytes:
        """The Prometheus text exposition, summed over every worker."""
        from prometheus_client import CollectorRegistry, generate_latest
        from prometheus_client.multiprocess import MultiProcessCollector

        if self.registry is not None:
            return generate_latest(self.registry)
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=self._multiprocess_dir)
        return generate_latest(registry)


def _gauges(gauge: Any, kw: dict[str, Any]) -> tuple[Any, Any, Any]:
    """In flight, queue depth and load time: live values summed (or maxed) over workers."""
    in_flight = gauge(
        "openbayes_serving_in_flight",
        "POST / requests being served now.",
        multiprocess_mode="livesum",
        **kw,
    )
    queue_depth = gauge(
        "openbayes_serving_queue_depth",
        "Requests waiting for a predict slot.",
        multiprocess_mode="livesum",
        **kw,
    )
    load_seconds = gauge(
        "openbayes_serving_model_load_seconds",
        "Time taken to build the model instances.",
        multiprocess_mode="max",
        **kw,
    )
    return in_flight, queue_depth, load_seconds


def _stream_histograms(histogram: Any, kw: dict[str, Any]) -> tuple[Any, Any]:
    """Time to a stream's first chunk, and chunks per stream."""
    first_chunk = histogram(
        "openbayes_serving_stream_first_chunk_seconds",
        "Time from the arrival of a streamed request to its first chunk sent.",
        buckets=_LATENCY_BUCKETS,
        **kw,
    )
    stream_chunks = histogram(
        "openbayes_serving_stream_chunks",
        "Chunks sent per stream (counted when the stream ends, however it ends).",
        buckets=_CHUNK_BUCKETS,
        **kw,
    )
    return first_chunk, stream_chunks


def _work_gauges(gauge: Any, kw: dict[str, Any]) -> tuple[Any, Any, Any]:
    """Predicts running, warm-up time, and the predict concurrency limit now."""
    predicts_running = gauge(
        "openbayes_serving_predicts_running",
        "Predict calls running now on model threads (a stuck one included).",
        multiprocess_mode="livesum",
        **kw,
    )
    warmup_seconds = gauge(
        "openbayes_serving_warmup_seconds",
        "Time taken by warmup() on the model instances, in all.",
        multiprocess_mode="max",
        **kw,
    )
    concurrency_limit = gauge(
        "openbayes_serving_predict_concurrency",
        "Predicts allowed at once now, summed over instances (it adapts under auto).",
        multiprocess_mode="livesum",
        **kw,
    )
    return predicts_running, warmup_seconds, concurrency_limit


def mark_worker_dead(pid: int) -> None:
    """Drop a dead worker's live gauges (gunicorn's child_exit hook, in the master)."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(pid)
