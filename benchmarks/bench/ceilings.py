"""Ceilings measured in the driver's own process: the model alone and the I/O compute.

The model alone is onnxruntime at batch 1 and 32 on the S2 MLP; the compute is the
numpy work of S3 and S6, timed so that their ideal rate is 1 / compute.
"""

from __future__ import annotations

import importlib.util
import logging
import statistics
import time
from pathlib import Path
from typing import Any

from .constants import COMPUTE_TARGET_S, EXAMPLE_MODEL, MLP_SIZES, MODEL, PREDICTORS

logger = logging.getLogger("bench")


def load_module(name: str, path: Path) -> Any:
    """Import the Python file at ``path`` as module ``name``."""
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def make_model(path: Path) -> None:
    """Write the MLP of examples/mlp-batch (512-2048-2048-10, seeded) to ``path``."""
    import onnx

    example = load_module("mlp_model", EXAMPLE_MODEL)
    assert tuple(example.SIZES) == MLP_SIZES, "the example's MLP changed: update MLP_SIZES"
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(example.build(), str(path))
    logger.info("wrote %s (%.1f MB)", path, path.stat().st_size / 1e6)


def _rows_per_second(session: Any, batch: int, seconds: float) -> float:
    import numpy as np

    x = np.random.default_rng(2).standard_normal((batch, MLP_SIZES[0])).astype(np.float32)
    for _ in range(10):
        session.run(None, {"x": x})
    calls, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds and calls < 1_000_000:
        session.run(None, {"x": x})
        calls += 1
    return batch * calls / (time.perf_counter() - start)


def measure_model_alone(seconds: float) -> dict[str, float]:
    """Rows/s of onnxruntime in this process: batch 32 and 1, default and 1-thread options."""
    import onnxruntime as ort

    rates: dict[str, float] = {}
    for config in ("default", "1thread"):
        options = ort.SessionOptions()
        if config == "1thread":
            options.intra_op_num_threads = 1
            options.inter_op_num_threads = 1
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        session = ort.InferenceSession(str(MODEL), options, providers=["CPUExecutionProvider"])
        for batch in (32, 1):
            rates[f"{config}.b{batch}"] = _rows_per_second(session, batch, seconds)
        del session
    rates["b32"] = max(rates["default.b32"], rates["1thread.b32"])
    rates["b1"] = max(rates["default.b1"], rates["1thread.b1"])
    return rates


def time_compute(reps: int, runs: int = 150) -> float:
    """Median seconds of one S3 ``compute(reps)`` call in this process."""
    work = load_module("s3_work", PREDICTORS / "s3_io" / "work.py")
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        work.compute(reps)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def calibrate_compute() -> int:
    """The number of matmuls that makes about 5 ms of S3 compute (the quickest of 3 tries)."""
    time_compute(20, 5)
    one = min(time_compute(1, 100) for _ in range(3))
    return max(1, round(COMPUTE_TARGET_S / one))
