"""Write mobilenet_v2.onnx (untrained, seeded: no download) and labels.json (1000 names).

Usage: ``python make_model.py [OUT_DIR]`` (default: this directory, where predictor.py
reads labels.json). Needs torch and torchvision; the server itself needs neither.
"""

from __future__ import annotations

import itertools
import json
import sys
import warnings
from pathlib import Path

import torch
import torchvision

ADJECTIVES = (
    "red", "blue", "green", "golden", "silver", "spotted", "striped", "little", "great",
    "northern", "southern", "eastern", "western", "mountain", "river", "desert", "forest",
    "arctic", "common", "giant", "dwarf", "crested", "tufted", "long-tailed", "short-eared",
    "black", "white", "grey", "brown", "painted", "royal", "wild", "sea", "marsh", "rock",
    "island", "pale", "dusky", "ringed", "barred",
)  # fmt: skip
NOUNS = (
    "fox", "heron", "beetle", "lily", "kettle", "lantern", "finch", "moth", "otter", "fern",
    "teapot", "bicycle", "trout", "orchid", "owl", "tortoise", "violin", "sparrow", "maple",
    "lizard", "canoe", "thistle", "badger", "umbrella", "crab",
)  # fmt: skip


def labels() -> list[str]:
    """1000 made-up, ImageNet-sized class names: "red fox", "red heron", ..."""
    return [f"{a} {n}" for a, n in itertools.product(ADJECTIVES, NOUNS)]


def export(path: Path) -> None:
    """Export an untrained MobileNetV2 taking (N, 3, 224, 224) float32 images to ONNX."""
    torch.manual_seed(0)
    model = torchvision.models.mobilenet_v2(weights=None, num_classes=1000).eval()
    # dynamo=False: the TorchScript exporter writes one self-contained file in seconds and
    # needs no onnxscript; torch 2.9+ calls it deprecated, so that warning is silenced.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            model,
            (torch.randn(1, 3, 224, 224),),
            str(path),
            input_names=["image"],
            output_names=["logits"],
            dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}},
            opset_version=17,
            dynamo=False,
        )


def main() -> None:
    """Write the model and the labels into the directory given on the command line."""
    out_dir = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parent
    out_dir.mkdir(parents=True, exist_ok=True)
    export(out_dir / "mobilenet_v2.onnx")
    names = labels()
    assert len(names) == 1000
    (out_dir / "labels.json").write_text(json.dumps(names, indent=1) + "\n")
    sample(out_dir / "sample.jpg")
    print(f"wrote {out_dir / 'mobilenet_v2.onnx'}, {out_dir / 'labels.json'} and sample.jpg")


def sample(path: Path) -> None:
    """A picture to send: a sun over a green hill, drawn with Pillow."""
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (320, 240), (135, 190, 235))
    draw = ImageDraw.Draw(image)
    draw.ellipse((-80, 150, 400, 420), fill=(70, 150, 60))
    draw.ellipse((230, 30, 290, 90), fill=(250, 210, 60))
    image.save(path, quality=90)


if __name__ == "__main__":
    main()
