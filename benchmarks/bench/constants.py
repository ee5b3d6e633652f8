"""Where the benchmarks keep their files, the runtimes' names and fixed parameters."""

from __future__ import annotations

from pathlib import Path

HERE = Path(__file__).resolve().parent.parent  # benchmarks/
WORK = HERE / ".work"
LOGS = WORK / "logs"
MODEL = WORK / "model" / "mlp.onnx"
PREDICTORS = HERE / "predictors"
SECTIONS = WORK / "sections"
EXAMPLE_MODEL = HERE.parent / "examples" / "mlp-batch" / "make_model.py"
HOST = "127.0.0.1"

REF, LIT, NEW, MODEL_ALONE = "reference", "litserve", "new", "model"
RUNTIMES = (REF, LIT, NEW)
LABELS = {REF: "0.5.0", LIT: "LitServe", NEW: "this runtime", MODEL_ALONE: "model alone"}
VENVS = {REF: "venv-ref", LIT: "venv-litserve", NEW: "venv-new"}

# Which runtimes each scenario runs on, in the order of the report.
SCENARIOS: dict[str, tuple[str, ...]] = {
    "s1": (REF, LIT, NEW),
    "s2": (REF, LIT, NEW),
    "s3": (REF, LIT, NEW),
    "s6": (REF, NEW),
    "s4": (REF, NEW),
    "s4d": (NEW,),  # the reference has no queue settings: its S4 run is its default
    "s5": (REF, NEW),
}

MLP_SIZES = (512, 2048, 2048, 10)
SLOW_DELAY_S = 0.05
COMPUTE_TARGET_S = 0.005
S2_BATCH = 32
S2_BATCH_DELAY_MS = 5
S4_MAX_QUEUE = 8
S4_MAX_CONNECTIONS = 512
S4_MAX_REQUESTS = 20000
