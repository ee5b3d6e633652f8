"""Every example in examples/: make its model, serve it on 127.0.0.1, call it over HTTP.

Each example is copied into a temporary directory and its make_model.py run there, so the
generated models never land in the work tree. The image-classifier-onnx and
object-detector-torch examples need torch and torchvision to make their models.
"""

from __future__ import annotations

import importlib.util
import io
import json
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable

import numpy as np
import onnxruntime as ort
import pytest
import requests
from conftest import ROOT, Server, clean_env, free_port, launch, stop, stop_all, wait_ready
from PIL import Image, ImageDraw

EXAMPLES = ROOT / "examples"
GENERATED = shutil.ignore_patterns("*.onnx", "*.pt", "labels.json", "bigram.json", "__pycache__")


@pytest.fixture(scope="session")
def make_example(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    """Copy ``examples/<name>`` to a temporary directory and run its make_model.py there."""
    made: dict[str, Path] = {}

    def make(name: str) -> Path:
        if name not in made:
            dest = tmp_path_factory.mktemp("examples") / name
            shutil.copytree(EXAMPLES / name, dest, ignore=GENERATED)
            if (dest / "make_model.py").exists():
                result = subprocess.run(
                    [sys.executable, "make_model.py"],
                    cwd=dest,
                    env=clean_env(),
                    capture_output=True,
                    text=True,
                    timeout=600,
                )
                assert result.returncode == 0, result.stderr
            made[name] = dest
        return made[name]

    return make


@pytest.fixture(scope="session")
def serve_example(make_example: Callable[[str], Path]) -> Iterator[Callable[[str], Server]]:
    """Serve an example's predictor.py from its directory, as its README says.

    One server per example for the whole session (the tests only read from it, and a torch
    server takes seconds to start); all are stopped by pid at the end.
    """
    servers: dict[str, Server] = {}

    def start(name: str) -> Server:
        if name not in servers:
            directory = make_example(name)
            servers[name] = launch(directory / "predictor.py", (), directory, {})
            wait_ready(servers[name].url, servers[name].proc, timeout=120)
        return servers[name]

    yield start
    exit_codes = dict(zip(servers, stop_all(server.proc for server in servers.values())))
    assert exit_codes == {name: 0 for name in servers}  # SIGTERM drains and exits 0


def image_bytes(fmt: str = "PNG", size: tuple[int, int] = (320, 240)) -> bytes:
    """A small synthetic picture: a gradient with a few shapes on it."""
    width, height = size
    ramp = np.linspace(0, 255, width, dtype=np.uint8)
    pixels = np.stack([np.tile(ramp, (height, 1))] * 3, axis=-1)
    image = Image.fromarray(pixels)
    draw = ImageDraw.Draw(image)
    draw.rectangle((40, 40, 140, 160), fill=(200, 30, 30))
    draw.ellipse((180, 60, 290, 200), fill=(20, 120, 220))
    out = io.BytesIO()
    image.save(out, format=fmt)
    return out.getvalue()


# image-classifier-onnx


def assert_top5(answer: object, labels: list[str]) -> None:
    assert isinstance(answer, list)
    assert len(answer) == 5
    scores = [item["score"] for item in answer]
    assert all(item["label"] in labels for item in answer)
    assert all(0.0 <= s <= 1.0 for s in scores)
    assert scores == sorted(scores, reverse=True)
    assert sum(scores) <= 1.0 + 1e-6


def test_classifier_returns_top5_labels_for_uploaded_image(
    serve_example: Callable[[str], Server], make_example: Callable[[str], Path]
) -> None:
    labels = json.loads((make_example("image-classifier-onnx") / "labels.json").read_text())
    assert len(labels) == 1000
    server = serve_example("image-classifier-onnx")
    for fmt, content_type in [("PNG", "image/png"), ("JPEG", "application/octet-stream")]:
        rv = requests.post(
            server.url, data=image_bytes(fmt), headers={"Content-Type": content_type}, timeout=30
        )
        assert rv.status_code == 200, rv.text
        assert rv.headers["Content-Type"].startswith("application/json")
        assert_top5(rv.json(), labels)


def test_classifier_fetches_image_url_and_agrees_with_upload(
    serve_example: Callable[[str], Server], file_server: tuple[Path, str]
) -> None:
    root, base = file_server
    picture = image_bytes("PNG")
    (root / "picture.png").write_bytes(picture)
    server = serve_example("image-classifier-onnx")
    by_url = requests.post(server.url, json={"url": f"{base}/picture.png"}, timeout=30)
    uploaded = requests.post(
        server.url, data=picture, headers={"Content-Type": "image/png"}, timeout=30
    )
    assert by_url.status_code == 200, by_url.text
    assert [i["label"] for i in by_url.json()] == [i["label"] for i in uploaded.json()]
    assert [i["score"] for i in by_url.json()] == pytest.approx(
        [i["score"] for i in uploaded.json()]
    )


def test_classifier_rejects_bad_image_and_bad_url_with_400(
    serve_example: Callable[[str], Server], file_server: tuple[Path, str]
) -> None:
    _, base = file_server
    server = serve_example("image-classifier-onnx")
    rv = requests.post(
        server.url, data=b"not an image", headers={"Content-Type": "image/jpeg"}, timeout=30
    )
    assert rv.status_code == 400
    assert "cannot decode the image" in rv.json()["error"]
    rv = requests.post(server.url, json={"url": f"{base}/missing.png"}, timeout=30)
    assert rv.status_code == 400
    assert "cannot fetch the image" in rv.json()["error"]
    assert "404" in rv.json()["error"]
    rv = requests.post(server.url, json={"picture": "cat.png"}, timeout=30)
    assert rv.status_code == 400
    assert '"url" must be an http://' in rv.json()["error"]


# object-detector-torch


def detect(server: Server, threshold: float) -> dict:
    rv = requests.post(
        server.url,
        params={"threshold": threshold},
        data=image_bytes("JPEG"),
        headers={"Content-Type": "image/jpeg"},
        timeout=60,
    )
    assert rv.status_code == 200, rv.text
    return rv.json()


def test_detector_returns_boxes_labels_and_scores_as_lists(
    serve_example: Callable[[str], Server],
) -> None:
    server = serve_example("object-detector-torch")
    everything = detect(server, 0.0)
    assert set(everything) == {"boxes", "labels", "scores"}
    n = len(everything["scores"])
    assert n > 0  # threshold 0 keeps every box the untrained (seeded) model proposes
    assert len(everything["boxes"]) == len(everything["labels"]) == n
    for box, label, score in zip(everything["boxes"], everything["labels"], everything["scores"]):
        assert len(box) == 4
        assert all(isinstance(v, float) for v in box)
        assert box[0] <= box[2] <= 320
        assert box[1] <= box[3] <= 240
        assert isinstance(label, int)
        assert 1 <= label < 91
        assert isinstance(score, float)
        assert 0.0 <= score <= 1.0
    confident = detect(server, 0.9)
    assert len(confident["scores"]) <= n
    assert all(score >= 0.9 for score in confident["scores"])


def test_detector_rejects_threshold_out_of_range_with_400(
    serve_example: Callable[[str], Server],
) -> None:
    server = serve_example("object-detector-torch")
    rv = requests.post(server.url, params={"threshold": 2}, data=image_bytes(), timeout=60)
    assert rv.status_code == 400
    assert rv.json() == {"error": "threshold must be between 0 and 1"}
    rv = requests.post(server.url, data=b"GIF89a broken", timeout=60)
    assert rv.status_code == 400
    assert "cannot decode the image" in rv.json()["error"]


# mlp-batch


def test_mlp_batch_answers_32_concurrent_clients_each_from_its_own_row(
    serve_example: Callable[[str], Server], make_example: Callable[[str], Path]
) -> None:
    session = ort.InferenceSession(
        str(make_example("mlp-batch") / "mlp.onnx"), providers=["CPUExecutionProvider"]
    )
    rows = np.random.default_rng(7).standard_normal((32, 512)).astype(np.float32)
    server = serve_example("mlp-batch")
    barrier = threading.Barrier(len(rows), timeout=30)

    def call(row: np.ndarray) -> dict:
        barrier.wait()  # all 32 requests leave together, so the server can batch them
        rv = requests.post(server.url, json={"x": row.tolist()}, timeout=60)
        assert rv.status_code == 200, rv.text
        return rv.json()

    with ThreadPoolExecutor(max_workers=len(rows)) as pool:
        answers = list(pool.map(call, rows))
    for row, answer in zip(rows, answers):
        expected = session.run(None, {"x": row[np.newaxis]})[0][0]
        np.testing.assert_allclose(answer["logits"], expected, rtol=1e-4, atol=1e-4)
        assert answer["label"] == int(expected.argmax())
        assert 1 <= answer["batch_size"] <= 32
    # 32 requests at once cannot all be served one row at a time: some shared a run.
    assert max(answer["batch_size"] for answer in answers) > 1


def test_mlp_batch_rejects_row_of_wrong_length_with_400(
    serve_example: Callable[[str], Server],
) -> None:
    server = serve_example("mlp-batch")
    rv = requests.post(server.url, json={"x": [1.0, 2.0]}, timeout=30)
    assert rv.status_code == 400
    assert rv.json() == {"error": 'send {"x": [512 numbers]}'}


# text-stream


def expected_text(directory: Path, request: dict) -> str:
    """What the example's own model produces in this process, for the same request."""
    spec = importlib.util.spec_from_file_location(
        "text_stream_predictor", directory / "predictor.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    predictor = module.Predictor()
    return "".join(chunk["token"] for chunk in predictor.predict(predictor.preprocess(request)))


STREAM_REQUEST: dict[str, Any] = {"prompt": "the ", "max_tokens": 60, "seed": 3}


def test_text_stream_sends_ndjson_tokens_in_model_order(
    serve_example: Callable[[str], Server], make_example: Callable[[str], Path]
) -> None:
    expected = expected_text(make_example("text-stream"), STREAM_REQUEST)
    assert len(expected) == 60
    server = serve_example("text-stream")
    with requests.post(server.url, json=STREAM_REQUEST, stream=True, timeout=30) as rv:
        assert rv.status_code == 200
        assert rv.headers["Content-Type"].startswith("application/x-ndjson")
        chunks = [json.loads(line) for line in rv.iter_lines() if line]
    assert all(set(chunk) == {"token"} for chunk in chunks)
    assert "".join(chunk["token"] for chunk in chunks) == expected


def test_text_stream_sends_server_sent_events_when_asked(
    serve_example: Callable[[str], Server], make_example: Callable[[str], Path]
) -> None:
    expected = expected_text(make_example("text-stream"), STREAM_REQUEST)
    server = serve_example("text-stream")
    headers = {"Accept": "text/event-stream"}
    with requests.post(
        server.url, json=STREAM_REQUEST, headers=headers, stream=True, timeout=30
    ) as rv:
        assert rv.status_code == 200
        assert rv.headers["Content-Type"].startswith("text/event-stream")
        body = rv.content.decode()
    events = [event.split("\n") for event in body.split("\n\n") if event.strip()]
    assert [lines[0] for lines in events] == [f"id: {n}" for n in range(1, len(events) + 1)]
    assert all(lines[1].startswith("data: ") for lines in events)
    tokens = [json.loads(lines[1][len("data: ") :])["token"] for lines in events]
    assert "".join(tokens) == expected


def test_text_stream_rejects_bad_max_tokens_before_streaming(
    serve_example: Callable[[str], Server],
) -> None:
    server = serve_example("text-stream")
    rv = requests.post(server.url, json={"max_tokens": 10_000}, timeout=30)
    assert rv.status_code == 400
    assert rv.json() == {"error": "max_tokens must be between 1 and 500"}


# custom-start-sh


def wait_for_own_server(url: str, proc: subprocess.Popen, timeout: float = 30.0) -> dict:
    """Poll ``url`` (bounded) until the start.sh server answers; fail early if it exits."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"openbayes-serving run exited with {proc.returncode}")
        try:
            rv = requests.get(url, timeout=1)
            if rv.status_code == 200:
                return rv.json()
        except requests.RequestException:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"nothing answered at {url} after {timeout}s")


def process_gone(pid: int) -> bool:
    """True once ``pid`` has exited (a zombie waiting to be reaped counts as exited)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return True
    return "\nState:\tZ" in status


def test_start_sh_replaces_the_runtime_and_dies_with_it(
    make_example: Callable[[str], Path], tmp_path: Path
) -> None:
    directory = make_example("custom-start-sh")
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "openbayes_serving", "run", str(directory), "--port", str(port)],
        cwd=tmp_path,
        env=clean_env(HOST="127.0.0.1"),
    )
    try:
        url = f"http://127.0.0.1:{port}"
        hello = wait_for_own_server(url, proc)
        assert hello["message"] == "served by start.sh, not by the runtime"
        rv = requests.post(f"{url}/echo", json={"n": 1}, timeout=10)
        assert rv.json() == {"echo": {"n": 1}}
        assert requests.get(f"{url}/readyz", timeout=10).status_code == 404  # not the runtime
    finally:
        returncode = stop(proc)
    assert returncode == 0
    server_pid = hello["pid"]
    deadline = time.monotonic() + 10
    while not process_gone(server_pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert process_gone(server_pid), f"the start.sh server (pid {server_pid}) outlived the CLI"
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()


@pytest.mark.parametrize("name", sorted(p.name for p in EXAMPLES.iterdir() if p.is_dir()))
def test_example_has_readme_with_serve_command_and_curl(name: str) -> None:
    readme = (EXAMPLES / name / "README.md").read_text()
    assert "curl" in readme
    assert ("python predictor.py" in readme) or ("openbayes-serving run" in readme)
    has_model = (EXAMPLES / name / "make_model.py").exists()
    assert has_model == ("python make_model.py" in readme)
