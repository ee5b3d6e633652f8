"""config.limit_concurrency(n) pins the predict concurrency of a real server."""

from __future__ import annotations

import concurrent.futures
import time

import requests
from conftest import PREDICTORS

LIMITED = (
    (PREDICTORS / "io_bound.py")
    .read_text()
    .replace(
        "    def __init__(self):\n",
        "    def __init__(self, config):\n        config.limit_concurrency(2)\n",
    )
)


def peaks(url: str, seconds: float, clients: int = 16) -> set[int]:
    stop = time.monotonic() + seconds

    def client() -> set[int]:
        seen = set()
        with requests.Session() as session:
            while time.monotonic() < stop:
                rv = session.post(url, json={"sleep": 0.05}, timeout=30)
                assert rv.status_code == 200
                seen.add(rv.json()["peak"])
        return seen

    with concurrent.futures.ThreadPoolExecutor(clients) as pool:
        return set().union(*pool.map(lambda _: client(), range(clients)))


def test_limit_concurrency_2_runs_at_most_2_predicts_at_once(serve, tmp_path):
    (tmp_path / "predictor.py").write_text(LIMITED)
    server = serve(tmp_path / "predictor.py")
    assert max(peaks(server.url, 1.5)) == 2


def test_an_explicit_setting_beats_limit_concurrency(serve, tmp_path):
    (tmp_path / "predictor.py").write_text(LIMITED)
    server = serve(tmp_path / "predictor.py", "--predict-concurrency", "4")
    assert max(peaks(server.url, 1.5)) == 4
    assert "predict_concurrency=4 (the setting) overrides config.limit_concurrency(2)" in (
        server.log()
    )
