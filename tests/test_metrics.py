"""Metrics in-process: what a scrape reads, whichever way the values were kept."""

from __future__ import annotations

import re
import threading

from prometheus_client import CollectorRegistry, Histogram, generate_latest

from openbayes_serving.metrics import _LATENCY_BUCKETS, Metrics

SECONDS = [0.0, 0.001, 0.0015, 0.005, 0.0051, 0.3, 2.5, 59.0, 61.0, 1000.0]


def samples(text: str, name: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith(name) and "_created" not in line]


def test_request_times_read_as_prometheus_would_have_counted_them():
    metrics = Metrics(None, frozenset({"/"}))
    registry = CollectorRegistry()
    reference = Histogram("reference", "", ["stage"], buckets=_LATENCY_BUCKETS, registry=registry)
    for seconds in SECONDS:
        metrics.observe_request("/", 200, seconds)
        reference.labels("total").observe(seconds)
    text = metrics.render().decode()
    ours = samples(text, 'openbayes_serving_request_duration_seconds_bucket{stage="total"')
    theirs = samples(generate_latest(registry).decode(), 'reference_bucket{stage="total"')
    assert [line.split("_bucket", 1)[1] for line in ours] == [
        line.split("_bucket", 1)[1] for line in theirs
    ]
    total = re.search(r'seconds_sum\{stage="total"\} (\S+)', text)
    assert total is not None
    assert float(total.group(1)) == sum(SECONDS)


def test_counts_add_up_over_scrapes_and_threads():
    metrics = Metrics(None, frozenset({"/"}))
    for _ in range(3):
        metrics.observe_request("/", 503, 0.01)
    metrics.render()
    metrics.observe_request("/", 503, 0.01)
    metrics.observe_request("/nowhere", 404, 0.01)

    def model_thread() -> None:
        for _ in range(500):
            metrics.observe_timing(0.001, 0.002)

    threads = [threading.Thread(target=model_thread) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    text = metrics.render().decode()
    assert 'openbayes_serving_requests_total{route="/",status="503"} 4.0' in text
    assert 'openbayes_serving_requests_total{route="other",status="404"} 1.0' in text
    assert 'openbayes_serving_rejected_total{reason="overloaded"} 4.0' in text
    assert 'openbayes_serving_request_duration_seconds_count{stage="predict"} 2000.0' in text


def test_in_flight_reads_the_requests_being_served_at_the_scrape():
    metrics = Metrics(None, frozenset({"/"}))
    metrics.enter()
    metrics.enter()
    metrics.leave()
    assert "openbayes_serving_in_flight 1.0" in metrics.render().decode()
    metrics.leave()
    assert "openbayes_serving_in_flight 0.0" in metrics.render().decode()
