"""Ray Serve: ``openbayes-serving run DIR --ray-replicas N`` with a real local Ray instance.

One server for the module (Ray takes ~15 s to start on 2 cores); the two tests that
kill a replica and stop the server come last. Without Ray only the error paths run.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import msgpack
import pytest
import requests
from conftest import Server, clean_env, free_port, stop, wait_ready

import openbayes_serving as serv
from openbayes_serving import cli
from openbayes_serving.predictor import inspect_predictor
from openbayes_serving.settings import resolve_settings
from openbayes_serving.testing import http_scope

# find_spec, not import: importing ray here would run under filterwarnings=error.
REPLICAS = 2
MAX_BODY = 4096

PREDICTOR = '''
"""Batched predict that reports its process and the most predicts it saw at once."""

import os
import threading
import time

import openbayes_serving as serv

_lock = threading.Lock()
_running = 0
_peak = 0


class Predictor:
    @serv.batch(max_batch_size=8, max_delay_ms=50)
    def predict(self, json):
        global _running, _peak
        with _lock:
            _running += 1
            _peak = max(_peak, _running)
        try:
            time.sleep(max([0.02] + [item.get("sleep", 0) for item in json]))
            if any(item.get("fail") for item in json):
                raise serv.ServingError("asked to fail", 418, {"hint": "teapot"})
            return [{"pid": os.getpid(), "batch": len(json), "peak": _peak, "echo": item}
                    for item in json]
        finally:
            with _lock:
                _running -= 1


if __name__ == "__main__":
    serv.run(Predictor)
'''


def write_predictor(directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "predictor.py").write_text(textwrap.dedent(PREDICTOR), encoding="utf-8")
    return directory


@pytest.fixture(scope="module")
def ray_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """``openbayes-serving run DIR --ray-replicas 2`` in its own session; Ray state in a tmp dir."""
    directory = write_predictor(tmp_path_factory.mktemp("ray-predictor"))
    # Short: Ray puts unix sockets under it (107-byte limit); HOME gets Ray's auth token.
    ray_home = tempfile.mkdtemp(prefix="obs-ray-")
    port = free_port()
    log = directory / "server.log"
    env = clean_env(RAY_TMPDIR=ray_home, HOME=ray_home, RAY_USAGE_STATS_ENABLED="0")
    cmd = [sys.executable, "-m", "openbayes_serving", "run", str(directory)]
    cmd += ["--ray-replicas", str(REPLICAS), "--host", "127.0.0.1", "--port", str(port)]
    # Pinned: auto may try a second predict at once when the machine is busy.
    cmd += ["--max-body-size", str(MAX_BODY), "--predict-concurrency", "1"]
    with log.open("wb") as out:
        proc = subprocess.Popen(
            cmd,
            cwd=directory,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    server = Server(proc, f"http://127.0.0.1:{port}", port, log)
    try:
        wait_ready(server.url, proc, timeout=180)
        yield server
    finally:
        stop(proc, timeout=90)
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # Ray's own processes, should any be left
        except ProcessLookupError:
            pass  # all gone: the normal case
        shutil.rmtree(ray_home, ignore_errors=True)


def post(url: str, body: dict, timeout: float = 30) -> requests.Response:
    return requests.post(url + "/", json=body, timeout=timeout)


def pids_seen(url: str, rounds: int = 5, per_round: int = 16) -> set[int]:
    pids: set[int] = set()
    with ThreadPoolExecutor(8) as pool:
        for _ in range(rounds):
            answers = list(pool.map(lambda i: post(url, {"i": i}), range(per_round)))
            assert all(a.status_code == 200 for a in answers)
            pids |= {a.json()["pid"] for a in answers}
            if len(pids) >= REPLICAS:
                break
    return pids


# ---- with Ray ---------------------------------------------------------------------------


def test_ray_replicas_keep_the_http_contract(ray_server):
    url = ray_server.url
    answer = post(url, {"x": 1})
    assert answer.status_code == 200
    assert answer.json()["echo"] == {"x": 1}
    assert len(answer.raw.headers.getlist("x-request-id")) == 1  # Ray's and ours, sent once

    packed = requests.post(
        url + "/",
        data=msgpack.packb({"b": b"\x00\x01"}),
        headers={"Content-Type": "application/msgpack", "Accept": "application/msgpack"},
        timeout=30,
    )
    assert packed.headers["content-type"] == "application/msgpack"
    assert msgpack.unpackb(packed.content)["echo"] == {"b": b"\x00\x01"}

    failed = post(url, {"fail": True})
    assert failed.status_code == 418
    assert failed.json() == {"hint": "teapot", "error": "asked to fail"}
    bad = requests.post(
        url + "/", data=b"{nope", headers={"Content-Type": "application/json"}, timeout=30
    )
    assert bad.status_code == 400
    refused = requests.post(url + "/", json={}, headers={"Accept": "text/csv"}, timeout=30)
    assert refused.status_code == 406
    # --max-body-size reached the replicas: the flag, not the default 32 MiB, answers 413.
    assert post(url, {"pad": "x" * MAX_BODY}).status_code == 413
    assert requests.get(url + "/healthz", timeout=30).status_code == 200


def test_ray_requests_spread_over_both_replicas_and_batch_within_each(ray_server):
    assert len(pids_seen(ray_server.url)) == REPLICAS
    # Each batch takes 0.2 s, so the requests a replica gets meanwhile join the next one
    # however slowly a loaded machine's proxy hands them over (at 20 ms they could come
    # one by one, each after the last was answered: batches of 1).
    body = {"sleep": 0.2}
    with ThreadPoolExecutor(16) as pool:
        answers = [a.json() for a in pool.map(lambda i: post(ray_server.url, body), range(32))]
    assert max(a["batch"] for a in answers) > 1  # the replica's batcher ran
    assert max(a["peak"] for a in answers) == 1  # the pinned predict_concurrency 1 per replica


def test_ray_service_answers_while_a_killed_replica_is_replaced(ray_server):
    before = pids_seen(ray_server.url)
    victim = min(before)
    os.kill(victim, signal.SIGKILL)  # a replica process of the Ray instance this module started
    statuses: list[int] = []
    replaced = False
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and not (replaced and statuses[-10:] == [200] * 10):
        answer = post(ray_server.url, {"after": "kill"})
        statuses.append(answer.status_code)
        if answer.status_code == 200 and answer.json()["pid"] not in before:
            replaced = True
        time.sleep(0.05)
    assert statuses.count(200) >= len(statuses) - 3  # at most the requests caught in the kill
    assert statuses[-10:] == [200] * 10
    assert replaced, "Ray did not start a replica in place of the killed one"


def test_ray_sigterm_finishes_the_request_in_flight_and_exits_0(ray_server):
    with ThreadPoolExecutor(1) as pool:
        slow = pool.submit(post, ray_server.url, {"sleep": 2})
        time.sleep(0.5)
        code = ray_server.stop(timeout=90)
        answer = slow.result(timeout=30)
    assert answer.status_code == 200
    assert answer.json()["echo"] == {"sleep": 2}
    assert code == 0, ray_server.log()[-3000:]


# ---- without Ray (or before Ray starts) -------------------------------------------------


def test_ray_replicas_without_ray_installed_is_one_line_naming_the_extra(
    tmp_path, monkeypatch, capsys
):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray now raises ImportError
    directory = write_predictor(tmp_path / "app")
    assert cli.main(["run", str(directory), "--ray-replicas", "2"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert "--ray-replicas needs Ray Serve" in err[0]
    assert "pip install 'openbayes-serving[ray]'" in err[0]


@pytest.mark.parametrize(
    ("replicas", "start_sh", "expected"),
    [
        pytest.param(0, False, "--ray-replicas must be a positive integer (got 0)", id="zero"),
        pytest.param(2, True, "has start.sh, which bypasses the runtime", id="start-sh"),
    ],
)
def test_ray_replicas_refuses_what_it_cannot_serve(tmp_path, capsys, replicas, start_sh, expected):
    directory = write_predictor(tmp_path / "app")
    if start_sh:
        (directory / "start.sh").write_text("exec sleep 1\n", encoding="utf-8")
    assert cli.main(["run", str(directory), "--ray-replicas", str(replicas)]) == 2
    assert expected in capsys.readouterr().err


class _Batched:
    @serv.batch(max_batch_size=8, max_delay_ms=5)
    def predict(self, json):
        return json


class _Plain:
    def predict(self, json):
        return json


def test_ray_deployment_leaves_room_for_batches_and_the_queue_per_replica():
    from openbayes_serving.ray import deployment_options

    settings = resolve_settings({"predict_concurrency": 2, "max_queue": 10, "devices": "cpu"})
    options = deployment_options(inspect_predictor(_Batched, settings), settings, replicas=3)
    assert options["num_replicas"] == 3
    assert options["max_ongoing_requests"] == 2 * 8 + 10
    assert options["max_queued_requests"] == 10
    assert options["graceful_shutdown_timeout_s"] == settings.graceful_timeout
    assert "num_gpus" not in options["ray_actor_options"]


def test_ray_deployment_asks_one_gpu_per_cuda_device_of_each_replica():
    from openbayes_serving.ray import deployment_options

    settings = resolve_settings({"devices": "cuda:0,cuda:1"})
    options = deployment_options(inspect_predictor(_Plain, settings), settings, 2, num_cpus=0.5)
    assert options["ray_actor_options"] == {"num_cpus": 0.5, "num_gpus": 2}
    # auto: up to max_predict_concurrency predicts on each of the two instances
    assert (
        options["max_ongoing_requests"] == 2 * settings.max_predict_concurrency + settings.max_queue
    )


# ---- the replica's ASGI app, in-process (no Ray needed) -----------------------------------


async def _lifespan_and_one_request(app, body: bytes, headers: list) -> tuple[list, list]:
    lifespan: asyncio.Queue = asyncio.Queue()
    events: list = []

    async def send_event(message: dict) -> None:
        events.append(message)

    task = asyncio.ensure_future(app({"type": "lifespan"}, lifespan.get, send_event))
    await lifespan.put({"type": "lifespan.startup"})
    for _ in range(600):  # the model builds on a thread: at most 30 s
        if events:
            break
        await asyncio.sleep(0.05)
    sent: list = []
    if events == [{"type": "lifespan.startup.complete"}]:
        scope = http_scope("POST", "/", headers)
        given = [{"type": "http.request", "body": body, "more_body": False}]

        async def receive() -> dict:
            if given:
                return given.pop()
            await asyncio.sleep(30)
            return {"type": "http.disconnect"}

        async def send(message: dict) -> None:
            sent.append(message)

        await app(scope, receive, send)
        await lifespan.put({"type": "lifespan.shutdown"})
    await asyncio.wait_for(task, 30)
    return events, sent


@pytest.fixture
def replica_dir(tmp_path, monkeypatch):
    # ReplicaApp imports predictor.py the way a replica process does: into sys.modules
    # and sys.path, from its directory as the working directory. Undo all three.
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.setitem(sys.modules, "predictor", None)
    level = logging.getLogger().level
    yield write_predictor(tmp_path / "app")
    logging.getLogger().setLevel(level)


def test_replica_app_builds_the_model_at_startup_and_sends_the_request_id_once(replica_dir):
    from openbayes_serving.ray import Replica, ReplicaApp

    app = ReplicaApp(str(replica_dir), resolve_settings({}))
    headers = [(b"content-type", b"application/json"), (b"x-request-id", b"from-ray")]
    events, sent = asyncio.run(_lifespan_and_one_request(app, b'{"x": 1}', headers))
    assert events == [
        {"type": "lifespan.startup.complete"},
        {"type": "lifespan.shutdown.complete"},
    ]
    assert sent[0]["status"] == 200
    assert b"x-request-id" not in dict(sent[0]["headers"])  # Ray's proxy adds it
    assert b'"echo":{"x":1}' in b"".join(m.get("body", b"") for m in sent[1:])
    replica = object.__new__(Replica)
    replica.app = app
    replica.check_health()  # healthy: no exception


def test_replica_that_cannot_build_its_model_fails_the_lifespan_and_the_health_check(
    replica_dir,
):
    from openbayes_serving.ray import Replica, ReplicaApp

    source = (replica_dir / "predictor.py").read_text(encoding="utf-8")
    broken = source.replace(
        "class Predictor:",
        "class Predictor:\n    def __init__(self):\n        raise RuntimeError('no model')\n",
    )
    (replica_dir / "predictor.py").write_text(broken, encoding="utf-8")
    app = ReplicaApp(str(replica_dir), resolve_settings({}))
    events, sent = asyncio.run(_lifespan_and_one_request(app, b"{}", []))
    assert events[0]["type"] == "lifespan.startup.failed"
    assert sent == []
    replica = object.__new__(Replica)
    replica.app = app
    with pytest.raises(RuntimeError, match="the predictor failed"):
        replica.check_health()
