"""onnxruntime sessions for ``onnx`` injection: where the model is found, how it runs.

Model search (``model_path``, else beside predictor.py, then the working directory, or
in production the platform's folders), execution providers by device, and the thread
options measured in ``benchmarks/``.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from .errors import PredictorError
from .settings import PRODUCTION_MODEL_DIRS, Settings

logger = logging.getLogger(__name__)

ONNX_INSTALL = (
    "pip install 'openbayes-serving[onnx]' (CPU) or 'openbayes-serving[gpu]' (CUDA; "
    "uninstall onnxruntime first)"
)


def model_dirs(settings: Settings, predictor_dir: Path) -> list[Path]:
    """Where ``onnx`` looks, in order.

    ``model_path`` when set; else beside predictor.py, then the working directory; in
    production beside predictor.py, then /openbayes/home, /mnt/project and
    /openbayes/input/input0..4 (``settings.PRODUCTION_MODEL_DIRS``).
    """
    if settings.model_path:
        return [Path(settings.model_path)]
    if settings.is_production:
        places = [predictor_dir, *(Path(p) for p in PRODUCTION_MODEL_DIRS)]
    else:
        places = [predictor_dir, Path.cwd()]
    return list(dict.fromkeys(places))  # each place once, in order


def locate_onnx_model(settings: Settings, predictor_dir: Path) -> tuple[Path, list[Path]]:
    """The .onnx file to load and the places searched to find it (the first by name wins).

    Raises:
        PredictorError: no .onnx file is found; the message names every place searched.
    """
    searched: list[Path] = []
    for place in model_dirs(settings, predictor_dir):
        searched.append(place)
        if place.is_file():
            return place, searched
        found = sorted(place.glob("*.onnx")) if place.is_dir() else []
        if found:
            if len(found) > 1:
                logger.warning(
                    "found %d .onnx files in %s; loading %s (set --model-path to choose): %s",
                    len(found),
                    place,
                    found[0].name,
                    ", ".join(p.name for p in found[1:]),
                )
            return found[0], searched
    raise PredictorError(
        "__init__ asks for 'onnx' but no .onnx file was found in "
        + ", ".join(str(p) for p in searched)
        + ". Put the model beside predictor.py or pass --model-path."
    )


def find_onnx_model(settings: Settings, predictor_dir: Path) -> Path:
    """The .onnx file to load (see ``locate_onnx_model``).

    Raises:
        PredictorError: no .onnx file is found.
    """
    return locate_onnx_model(settings, predictor_dir)[0]


def import_onnxruntime() -> Any:
    """Import onnxruntime, or fail with the install line."""
    try:
        import onnxruntime
    except ImportError:
        raise PredictorError(
            f"__init__ asks for 'onnx' but onnxruntime is not installed: {ONNX_INSTALL}"
        ) from None
    return onnxruntime


def onnx_providers(ort: Any, device: str) -> list[Any]:
    """CUDA with the device's id when the device is CUDA and the provider exists, else CPU."""
    if device.startswith("cuda") and "CUDAExecutionProvider" in ort.get_available_providers():
        index = int(device.split(":", 1)[1]) if ":" in device else 0
        return [("CUDAExecutionProvider", {"device_id": index}), "CPUExecutionProvider"]
    if device.startswith("cuda"):
        logger.warning(
            "device %s asked for, but onnxruntime has no CUDA provider: using CPU", device
        )
    return ["CPUExecutionProvider"]


def available_cores() -> int:
    """The cores this process may run on (its CPU affinity, else the machine's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def intra_op_threads(settings: Settings, cores: int) -> int:
    """Intra-op threads for one session: ``onnx_threads`` when set, else a share of ``cores``.

    The cores are split among the calls that may run at once: the server's workers, the
    model instances in each, and the predict calls of an instance. A pinned
    ``predict_concurrency`` N counts as N calls, so that one at a time (the GPU lock) gets
    every core. ``auto`` counts as 2: a lone call still runs on half the cores, and the
    limiter, which runs calls side by side when that pays, fills the rest with a second
    call instead of two calls each asking for every core. On 2 cores (``benchmarks/``
    S2, one-row MLP calls, 8 runs side by side) one thread per call served 1,816 req/s
    at 899 us of server CPU each against 1,480 at 1,066 us with every core per call:
    threads of calls side by side spend the difference handing work to each other.
    """
    if settings.onnx_threads:
        return settings.onnx_threads
    calls = settings.concurrency_pin or 2
    return max(1, cores // (settings.workers * len(settings.devices) * calls))


def open_session(settings: Settings, predictor_dir: Path, device: str) -> Any:
    """An InferenceSession of the model found for ``predictor_dir``, tuned by settings."""
    ort = import_onnxruntime()
    path, searched = locate_onnx_model(settings, predictor_dir)
    options = ort.SessionOptions()
    threads = intra_op_threads(settings, available_cores())
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    spinning = "1" if settings.onnx_spinning else "0"
    options.add_session_config_entry("session.intra_op.allow_spinning", spinning)
    options.add_session_config_entry("session.inter_op.allow_spinning", spinning)
    session = ort.InferenceSession(
        str(path), sess_options=options, providers=onnx_providers(ort, device)
    )
    logger.info(
        "loaded %s (searched %s; providers: %s; intra-op threads: %d; spinning: %s)",
        path,
        ", ".join(str(p) for p in searched),
        ", ".join(session.get_providers()),
        threads,
        "on" if settings.onnx_spinning else "off",
    )
    return session
