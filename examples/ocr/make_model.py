"""Copy the PP-OCRv4 ONNX models out of the installed rapidocr-onnxruntime wheel.

Usage: ``python make_model.py [OUT_DIR]`` (default: this directory). Writes ``det.onnx``
(text detection) beside predictor.py and ``rec/rec.onnx`` (text-line recognition, its
dictionary in the model's metadata). Nothing is downloaded: the weights come from the
wheel, which ``pip install --no-deps rapidocr-onnxruntime==1.4.4`` installs without
rapidocr's own dependencies (OpenCV and others), which the predictor does not need.
"""

from __future__ import annotations

import importlib.util
import shutil
import sys
from pathlib import Path

PACKAGE = "rapidocr-onnxruntime==1.4.4"
MODELS = {  # file in the wheel's models/ folder -> where the predictor reads it
    "ch_PP-OCRv4_det_infer.onnx": Path("det.onnx"),
    "ch_PP-OCRv4_rec_infer.onnx": Path("rec") / "rec.onnx",
}


def wheel_models() -> Path:
    """The models/ folder of the installed rapidocr_onnxruntime package (not imported)."""
    spec = importlib.util.find_spec("rapidocr_onnxruntime")  # finds, does not import it
    if spec is None or not spec.submodule_search_locations:
        sys.exit(f"rapidocr_onnxruntime is not installed: pip install --no-deps {PACKAGE}")
    return Path(next(iter(spec.submodule_search_locations))) / "models"


def copy_models(out: Path) -> list[Path]:
    """Copy each model to ``out`` unless an identical copy is there; return the paths."""
    source = wheel_models()
    written = []
    for name, target in MODELS.items():
        src, dest = source / name, out / target
        if not src.is_file():
            sys.exit(f"{src} is missing: reinstall with pip install --no-deps {PACKAGE}")
        if not dest.is_file() or dest.stat().st_size != src.stat().st_size:
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, dest)
        written.append(dest)
    return written


if __name__ == "__main__":
    out_dir = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parent
    for path in copy_models(out_dir):
        print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB)")
