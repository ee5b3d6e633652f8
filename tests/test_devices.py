"""Device placement: instances per device, ``device`` injection, onnx provider choice.

Runs on the device named by ``OPENBAYES_TEST_DEVICE`` (default ``cpu``); the GPU
benchmark's run.sh runs this file with ``cuda:0`` on a GPU machine. Each test starts a
real server on 127.0.0.1 and reads what its instances report.
"""

from __future__ import annotations

import concurrent.futures
import os
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import onnx
import onnxruntime
import pytest
import requests
from conftest import Server
from onnx import TensorProto, helper

DEVICE = os.environ.get("OPENBAYES_TEST_DEVICE", "cpu")
# torch names a bare "cuda" by its index: what a tensor on DEVICE reports as its device.
TORCH_DEVICE = DEVICE if DEVICE == "cpu" or ":" in DEVICE else f"{DEVICE}:0"
WEIGHT = np.arange(1, 5, dtype=np.float32)  # device_probe's tensor
MATRIX = np.array([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]], dtype=np.float32)  # device_batch's


def post_all(url: str, bodies: list[dict], timeout: float = 60) -> list[requests.Response]:
    """POST every body at once, one thread each; answers in the bodies' order."""
    with concurrent.futures.ThreadPoolExecutor(len(bodies)) as pool:
        return list(pool.map(lambda body: requests.post(url, json=body, timeout=timeout), bodies))


def write_doubler(path: Path) -> None:
    """An ONNX model y = 2x over float32 vectors of length 3."""
    graph = helper.make_graph(
        [helper.make_node("Mul", ["x", "two"], ["y"])],
        "doubler",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 3])],
        [helper.make_tensor("two", TensorProto.FLOAT, [1], [2.0])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8  # readable by every onnxruntime the project supports
    onnx.save(model, path)


def test_each_instance_gets_its_own_device_and_they_predict_in_parallel(
    shared_server: Callable[..., str],
) -> None:
    url = shared_server("device_probe", "--devices", f"{DEVICE},cpu")
    started = time.monotonic()
    answers = post_all(url, [{"x": [1, 1, 1, 1], "sleep": 1.0}] * 2)
    elapsed = time.monotonic() - started
    assert [rv.status_code for rv in answers] == [200, 200]
    bodies = [rv.json() for rv in answers]
    assert len({body["instance"] for body in bodies}) == 2
    assert sorted(body["device"] for body in bodies) == sorted([DEVICE, "cpu"])
    for body in bodies:  # the tensor made in __init__ lives on the injected device
        assert body["tensor_device"] == (TORCH_DEVICE if body["device"] == DEVICE else "cpu")
    assert elapsed < 1.9  # two one-second predicts at once, not one after the other


def test_an_instance_computes_on_its_device_for_every_request(
    shared_server: Callable[..., str],
) -> None:
    url = shared_server("device_probe", "--devices", f"{DEVICE},cpu")
    rng = np.random.default_rng(7)
    inputs = [rng.integers(-5, 6, 4).tolist() for _ in range(6)]
    answers = post_all(url, [{"x": x} for x in inputs])
    assert [rv.status_code for rv in answers] == [200] * 6
    for x, rv in zip(inputs, answers):
        assert rv.json()["dot"] == pytest.approx(float(np.dot(x, WEIGHT)))


def test_a_batch_becomes_one_tensor_on_the_device_and_each_request_gets_its_row(
    serve: Callable[..., Server],
) -> None:
    server = serve("device_batch", "--devices", DEVICE)
    inputs = [[float(i), float(-i)] for i in range(1, 7)]
    answers = post_all(server.url, [{"x": x} for x in inputs])
    assert [rv.status_code for rv in answers] == [200] * 6
    bodies = [rv.json() for rv in answers]
    for x, body in zip(inputs, bodies):
        assert body["y"] == pytest.approx((MATRIX @ np.asarray(x, np.float32)).tolist())
        assert body["device"] == TORCH_DEVICE
    assert max(body["batch"] for body in bodies) > 1  # six requests within 500 ms share one


@pytest.mark.parametrize("device", sorted({DEVICE, "cuda:0"}))
def test_onnx_sessions_use_cuda_for_a_cuda_device_when_the_provider_exists_else_cpu(
    serve: Callable[..., Server], tmp_path: Path, device: str
) -> None:
    write_doubler(tmp_path / "doubler.onnx")
    server = serve("device_onnx", "--devices", device, "--model-path", str(tmp_path))
    rv = requests.post(server.url, json={"x": [[1, 2, 3]]}, timeout=30)
    assert rv.status_code == 200
    body: dict[str, Any] = rv.json()
    assert body["device"] == device
    assert body["y"] == [[2.0, 4.0, 6.0]]
    cuda = "CUDAExecutionProvider" in onnxruntime.get_available_providers()
    if device.startswith("cuda") and cuda:
        assert body["providers"][0] == "CUDAExecutionProvider"
        assert body["cuda_device_id"] == device.split(":")[1]
    else:
        assert body["providers"] == ["CPUExecutionProvider"]


def test_a_device_that_does_not_exist_stops_the_server_at_start_with_exit_code_3(
    serve: Callable[..., Server],
) -> None:
    server = serve("device_probe", "--devices", "cuda:99", ready=False)
    assert server.proc.wait(timeout=120) == 3
    assert "__init__" in server.log()
