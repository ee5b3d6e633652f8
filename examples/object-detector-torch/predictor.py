"""Object detection with PyTorch: weights from a state dict, the device injected by name."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torchvision.models.detection import fasterrcnn_mobilenet_v3_large_320_fpn
from werkzeug.datastructures import MultiDict

import openbayes_serving as serv

WEIGHTS = Path(__file__).resolve().parent / "detector.pt"  # written by make_model.py
NUM_CLASSES = 91


class Predictor:
    """Boxes, labels and scores above a ``?threshold=`` for an uploaded image."""

    def __init__(self, device: str) -> None:
        # `device` is injected by name: "cpu" unless serv.run(..., devices=[...]) or
        # --devices says otherwise. Use the GPU when there is one and none was named.
        if device == "cpu" and torch.cuda.is_available():
            device = "cuda"
        self.device = torch.device(device)
        # box_score_thresh=0: keep every detection here, filter by the request's threshold.
        model = fasterrcnn_mobilenet_v3_large_320_fpn(
            weights=None, weights_backbone=None, num_classes=NUM_CLASSES, box_score_thresh=0.0
        )
        model.load_state_dict(torch.load(WEIGHTS, map_location="cpu", weights_only=True))
        self.model = model.eval().to(self.device)

    def preprocess(self, data: bytes, params: MultiDict) -> tuple[torch.Tensor, float]:
        """`data` is the raw body (the image file); `params` holds the query string."""
        threshold = params.get("threshold", 0.5, type=float)  # a non-number gives the default
        if not 0.0 <= threshold <= 1.0:
            raise serv.ServingError("threshold must be between 0 and 1")
        try:
            image = Image.open(io.BytesIO(data)).convert("RGB")
        except (OSError, Image.DecompressionBombError) as exc:
            raise serv.ServingError(f"cannot decode the image: {exc}") from exc
        pixels = torch.from_numpy(np.array(image)).permute(2, 0, 1)  # HWC uint8 -> CHW
        return pixels.float().div(255), threshold

    def predict(self, x: tuple[torch.Tensor, float]) -> tuple[dict[str, torch.Tensor], float]:
        """One image through the model, on the device; results come back to the CPU."""
        image, threshold = x
        with torch.inference_mode():
            detections = self.model([image.to(self.device)])[0]
        return {k: v.cpu() for k, v in detections.items()}, threshold

    def postprocess(self, y: tuple[dict[str, torch.Tensor], float]) -> dict[str, list]:
        """Keep detections at or above the threshold; a dict of lists is sent as JSON."""
        detections, threshold = y
        keep = detections["scores"] >= threshold
        return {
            "boxes": detections["boxes"][keep].tolist(),  # [x1, y1, x2, y2] in pixels
            "labels": detections["labels"][keep].tolist(),
            "scores": detections["scores"][keep].tolist(),
        }


if __name__ == "__main__":
    # One model on one device: one predict at a time (the default, said out loud here).
    serv.run(Predictor, predict_concurrency=1)
