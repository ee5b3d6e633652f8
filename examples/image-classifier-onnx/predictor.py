"""Image classification with an ONNX model: preprocess, predict and postprocess stages."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import requests
from PIL import Image

import openbayes_serving as serv

LABELS = Path(__file__).resolve().parent / "labels.json"  # written by make_model.py
MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)  # ImageNet statistics
STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)
MAX_IMAGE_BYTES = 20 * 1024 * 1024


class Predictor:
    """Top-5 labels for an uploaded image or for an image URL."""

    def __init__(self, onnx: ort.InferenceSession) -> None:
        # `onnx` is injected by name: a session over the first *.onnx beside this file
        # (or under --model-path).
        self.session = onnx
        self.input_name = onnx.get_inputs()[0].name
        self.labels: list[str] = json.loads(LABELS.read_text())

    def preprocess(self, payload: dict | bytes) -> np.ndarray:
        """Runs on a request thread, outside the predict lock: fetch, decode, normalise.

        `payload` is the parsed body for JSON (and MessagePack) requests and the raw bytes
        for any other Content-Type, such as image/jpeg or application/octet-stream.
        """
        if isinstance(payload, dict):
            image_bytes = fetch(payload.get("url"))
        elif isinstance(payload, bytes) and payload:
            image_bytes = payload
        else:
            raise serv.ServingError('send image bytes, or JSON like {"url": "http://..."}')
        try:
            image = Image.open(io.BytesIO(image_bytes)).convert("RGB")
        except (OSError, Image.DecompressionBombError) as exc:
            raise serv.ServingError(f"cannot decode the image: {exc}") from exc
        image = image.resize((224, 224), Image.Resampling.BILINEAR)
        pixels = np.asarray(image, dtype=np.float32) / 255
        chw = ((pixels - MEAN) / STD).transpose(2, 0, 1)  # HWC -> CHW, as the model wants
        return chw[np.newaxis]  # a batch of one: (1, 3, 224, 224)

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Runs under the predict lock: only the model call itself."""
        return self.session.run(None, {self.input_name: x})[0][0]

    def postprocess(self, logits: np.ndarray) -> list[dict]:
        """Softmax and the five best labels. A list of dicts is sent as JSON."""
        exp = np.exp(logits - logits.max())
        scores = exp / exp.sum()
        top5 = np.argsort(scores)[::-1][:5]
        return [{"label": self.labels[i], "score": float(scores[i])} for i in top5]


def fetch(url: object) -> bytes:
    """Download an image; any failure is the client's error (400), with the reason."""
    if not isinstance(url, str) or not url.startswith(("http://", "https://")):
        raise serv.ServingError('"url" must be an http:// or https:// URL')
    try:
        response = requests.get(url, timeout=10)
        response.raise_for_status()
    except requests.RequestException as exc:
        raise serv.ServingError(f"cannot fetch the image: {exc}") from exc
    if len(response.content) > MAX_IMAGE_BYTES:
        raise serv.ServingError(f"the image is over {MAX_IMAGE_BYTES} bytes")
    return response.content


if __name__ == "__main__":
    serv.run(Predictor)
