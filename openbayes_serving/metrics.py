"""Prometheus metrics of the serving process, right with several gunicorn workers.

With ``workers > 1`` the server exports PROMETHEUS_MULTIPROC_DIR before the fork and
prometheus-client keeps each worker's values in files that any worker's ``/metrics``
sums up, each request updating them. With one worker the values live in memory, and
what every request counts (its route and status, its times, the requests in flight) is
tallied in plain numbers and folded into prometheus-client's when ``/metrics`` is read:
its layers and locks cost more per request than the rest of an echo request's
bookkeeping. prometheus-client is imported only here, after that choice.
"""

from __future__ import annotations

import threading
from bisect import bisect_left
from typing import Any

STAGES = ("queue", "preprocess", "predict", "postprocess", "total")
_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
_CHUNK_BUCKETS = (0, 1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_REJECTED = {503: "overloaded", 504: "timeout"}  # POST / statuses that count as shed


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
        self.requests, self.rejected, self.cancelled = _counters(Counter, kw)
        self.latency = Histogram(
            "openbayes_serving_request_duration_seconds",
            "Time spent by POST / in each stage (queue wait, preprocess, predict, "
            "postprocess) and in all (total).",
            ["stage"],
            buckets=_LATENCY_BUCKETS,
            **kw,
        )
        self._stages: dict[str, Any] = {stage: self.latency.labels(stage) for stage in STAGES}
        self._request_children: dict[tuple[str, int], Any] = {}
        self._answered: dict[tuple[str, int], int] = {}  # tallied, not yet folded
        self.batch_size = Histogram(
            "openbayes_serving_batch_size",
            "Requests per call of a batched predict.",
            buckets=_BATCH_BUCKETS,
            **kw,
        )
        self.in_flight, self.queue_depth, self.load_seconds = _gauges(Gauge, kw)
        self.first_chunk, self.stream_chunks = _stream_histograms(Histogram, kw)
        self._cancelled = {r: self.cancelled.labels(r) for r in ("disconnect", "deadline")}
        self.predicts_running, self.warmup_seconds, self.concurrency_limit = _work_gauges(Gauge, kw)
        self._tallies: list[_Tally] = []
        self._in_flight = 0  # POST / requests being served (the event loop's count)
        if not self.is_multiprocess:
            self._stages = {stage: self._tally(child) for stage, child in self._stages.items()}
            self._batch_sizes: Any = self._tally(self.batch_size)
        else:
            self._batch_sizes = self.batch_size
        self._count = self._count_now if self.is_multiprocess else self._count_later

    def _tally(self, histogram: Any) -> Any:
        """A ``_Tally`` for ``histogram``; the histogram itself if it has not the fields."""
        if not all(hasattr(histogram, name) for name in ("_upper_bounds", "_buckets", "_sum")):
            return histogram  # another prometheus-client: observed per request after all
        tally = _Tally(histogram)
        self._tallies.append(tally)
        return tally

    def enter(self) -> None:
        """A POST / request is being served (the event loop)."""
        if self.is_multiprocess:
            self.in_flight.inc()
        else:
            self._in_flight += 1

    def leave(self) -> None:
        """A POST / request was answered (the event loop)."""
        if self.is_multiprocess:
            self.in_flight.dec()
        else:
            self._in_flight -= 1

    def observe_request(self, path: str, status: int, seconds: float) -> None:
        """Count one answered request (any route), on the event loop."""
        route = path if path in self._routes else "other"
        if route == "/":
            self._stages["total"].observe(seconds)
        self._count(route, status)

    def _count_now(self, route: str, status: int, count: int = 1) -> None:
        child = self._request_children.get((route, status))
        if child is None:  # labels() takes a lock and builds a key: do it once per pair
            child = self._request_children[(route, status)] = self.requests.labels(
                route, str(status)
            )
        child.inc(count)
        if route == "/" and status in _REJECTED:
            self.rejected.labels(_REJECTED[status]).inc(count)

    def _count_later(self, route: str, status: int) -> None:
        key = (route, status)
        self._answered[key] = self._answered.get(key, 0) + 1

    def observe_stage(self, stage: str, seconds: float) -> None:
        """Record the time one request spent in ``stage``."""
        self._stages[stage].observe(seconds)

    def observe_timing(self, queued: float, predicted: float) -> None:
        """Record one job's queue wait and predict time (from a model thread)."""
        self._stages["queue"].observe(queued)
        self._stages["predict"].observe(predicted)

    def observe_batch(self, size: int) -> None:
        """Record the size of one batch given to predict."""
        self._batch_sizes.observe(size)

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
            self._fold()
            return generate_latest(self.registry)
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=self._multiprocess_dir)
        return generate_latest(registry)

    def _fold(self) -> None:
        """Move what was tallied into prometheus-client's values (on the event loop)."""
        answered, self._answered = self._answered, {}
        for (route, status), count in answered.items():
            self._count_now(route, status, count)
        self.in_flight.set(self._in_flight)
        for tally in self._tallies:
            tally.fold()


class _Tally:
    """One histogram's observations as plain counts, folded into it when read.

    Any thread may observe (model threads do); a lock keeps the counts whole.
    """

    def __init__(self, histogram: Any) -> None:
        self._histogram = histogram
        self._bounds: list[float] = list(histogram._upper_bounds)  # the last is +Inf
        self._counts = [0] * len(self._bounds)
        self._sum = 0.0
        self._lock = threading.Lock()

    def observe(self, value: float) -> None:
        """Count one observation (any thread)."""
        index = bisect_left(self._bounds, value)  # the first bucket whose bound holds it
        with self._lock:
            self._counts[index] += 1
            self._sum += value

    def fold(self) -> None:
        """Add the counts and the sum to the histogram, and start again from zero."""
        with self._lock:
            counts, self._counts = self._counts, [0] * len(self._bounds)
            total, self._sum = self._sum, 0.0
        if any(counts):
            for bucket, count in zip(self._histogram._buckets, counts):
                if count:
                    bucket.inc(count)
            self._histogram._sum.inc(total)


def _counters(counter: Any, kw: dict[str, Any]) -> tuple[Any, Any, Any]:
    """Requests answered, requests shed, requests cancelled."""
    requests = counter(
        "openbayes_serving_requests",
        "Requests answered, by route and status.",
        ["route", "status"],
        **kw,
    )
    rejected = counter(
        "openbayes_serving_rejected",
        "Predict requests shed: overloaded (503) or timed out (504).",
        ["reason"],
        **kw,
    )
    cancelled = counter(
        "openbayes_serving_cancelled",
        "Requests whose cancelled was set (predictors that ask for it), by reason: "
        "the client hung up (disconnect) or the deadline passed (deadline).",
        ["reason"],
        **kw,
    )
    return requests, rejected, cancelled


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
