"""Write detector.pt: the state dict of an untrained, seeded Faster R-CNN (no download).

Usage: ``python make_model.py [OUT_DIR]`` (default: this directory, where predictor.py
reads it).
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from torchvision.models.detection import fasterrcnn_mobilenet_v3_large_320_fpn

NUM_CLASSES = 91  # COCO's numbering: 0 is the background


def build() -> torch.nn.Module:
    """The detector's architecture; predictor.py builds the same one, then loads weights."""
    return fasterrcnn_mobilenet_v3_large_320_fpn(
        weights=None, weights_backbone=None, num_classes=NUM_CLASSES
    )


def main() -> None:
    """Write detector.pt into the directory given on the command line."""
    out_dir = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parent
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    path = out_dir / "detector.pt"
    torch.save(build().state_dict(), path)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
