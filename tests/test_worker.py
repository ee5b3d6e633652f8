"""The serving process through a real server: forwarded headers, the collector's settings."""

from __future__ import annotations

import time

import requests

from openbayes_serving.worker import GC_YOUNG_THRESHOLD, GIL_SWITCH_INTERVAL


def test_a_trusted_proxys_forwarded_headers_name_the_client_and_scheme(shared_server):
    url = shared_server("forwarded")
    plain = requests.post(url, json={}, timeout=10).json()
    assert plain == {"remote_addr": "127.0.0.1", "scheme": "http"}
    headers = {"X-Forwarded-For": "203.0.113.7, 127.0.0.1", "X-Forwarded-Proto": "https"}
    forwarded = requests.post(url, json={}, headers=headers, timeout=10).json()
    assert forwarded == {"remote_addr": "203.0.113.7", "scheme": "https"}


def test_an_untrusted_peers_forwarded_headers_are_ignored(serve):
    server = serve("forwarded", env={"FORWARDED_ALLOW_IPS": "10.9.9.9"})
    headers = {"X-Forwarded-For": "203.0.113.7", "X-Forwarded-Proto": "https"}
    answer = requests.post(server.url, json={}, headers=headers, timeout=10).json()
    assert answer == {"remote_addr": "127.0.0.1", "scheme": "http"}


def test_once_ready_the_young_generation_is_collected_less_often_and_the_gil_shared(
    shared_server,
):
    url = shared_server("gc_state")
    deadline = time.monotonic() + 5  # the worker settles them on its next tick (0.1 s)
    answer = requests.post(url, json={}, timeout=10).json()
    while not answer["frozen"] and time.monotonic() < deadline:
        time.sleep(0.05)
        answer = requests.post(url, json={}, timeout=10).json()
    assert answer["young"] >= GC_YOUNG_THRESHOLD
    assert answer["frozen"] > 0
    # and a predict that holds the GIL hands it to the event loop after 1 ms, not 5
    assert answer["switch"] == GIL_SWITCH_INTERVAL
