"""OCR with PP-OCRv4 (ONNX): text lines, their boxes and scores, in reading order.

Chinese and English. Image bytes (any Content-Type) or JSON ``{"url": "http://..."}`` in;
``{"text": ..., "lines": [{"text", "score", "box"}, ...]}`` out. ``make_model.py`` copies
the models out of the rapidocr-onnxruntime wheel; the processing around them is
``ppocr.py``'s, on numpy and Pillow.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort
import ppocr  # this example's own processing, beside this file
import requests
from PIL import Image, ImageOps, UnidentifiedImageError

import openbayes_serving as serv

HERE = Path(__file__).resolve().parent
REC_MODEL = HERE / "rec" / "rec.onnx"  # written by make_model.py, with det.onnx
MAX_PIXELS = 50_000_000  # larger images are refused before they are decoded
MAX_DOWNLOAD = 20 * 1024 * 1024
FETCH_TIMEOUT_S = 10


@dataclass
class Page:
    """A decoded image and the detector's input made from it (preprocess's result)."""

    image: Image.Image
    det_input: np.ndarray


class Predictor:
    """Text lines of an uploaded image, or of an image URL."""

    example = "sample.png"  # the try-it page offers this file with one click

    def __init__(self, onnx: ort.InferenceSession) -> None:
        # `onnx` is the detector, det.onnx: the only .onnx beside this file. The recogniser
        # gets the same session options and providers (--onnx-threads, --devices).
        self.det = onnx
        providers = onnx.get_providers()
        options = onnx.get_provider_options()
        self.rec = ort.InferenceSession(
            str(REC_MODEL),
            sess_options=onnx.get_session_options(),
            providers=providers,
            provider_options=[options.get(name, {}) for name in providers],
        )
        self.characters = ppocr.dictionary(self.rec.get_modelmeta().custom_metadata_map)

    def preprocess(self, payload: dict | bytes) -> Page:
        """Fetch (for a URL), decode and resize, on a request thread outside the lock.

        `payload` is the parsed body for JSON (and MessagePack) requests and the raw bytes
        for any other Content-Type.
        """
        if isinstance(payload, dict):
            image = decode(fetch(payload.get("url")))
        elif isinstance(payload, bytes):
            image = decode(payload)
        else:
            raise serv.ServingError('send image bytes, or JSON like {"url": "http://..."}')
        return Page(image, ppocr.detector_input(image))

    def predict(self, page: Page) -> list[ppocr.Line]:
        """Detection, then recognition of every line in batches: the model calls."""
        probability = self.det.run(None, {"x": page.det_input})[0][0, 0]
        boxes = ppocr.text_boxes(probability, *page.image.size)
        crops = [ppocr.line_crop(page.image, box) for box in boxes]
        read: list[tuple[str, float]] = [("", 0.0)] * len(crops)
        for indices, batch in ppocr.recognizer_batches(crops):
            probabilities = self.rec.run(None, {"x": batch})[0]
            for i, result in zip(indices, ppocr.ctc_decode(probabilities, self.characters)):
                read[i] = result
        return [ppocr.Line(boxes[i], *read[i]) for i in ppocr.reading_order(boxes)]

    def postprocess(self, lines: list[ppocr.Line]) -> dict:
        """Lines read with confidence, as JSON: the text, then each line with its box."""
        kept = [line for line in lines if line.text and line.score >= ppocr.TEXT_THRESHOLD]
        return {
            "text": "\n".join(line.text for line in kept),
            "lines": [
                {
                    "text": line.text,
                    "score": round(line.score, 3),
                    "box": line.box.astype(int).tolist(),  # [[x, y] x 4], clockwise
                }
                for line in kept
            ],
        }


def decode(data: bytes) -> Image.Image:
    """An RGB image from encoded bytes; bad input is the client's error, with the reason."""
    if not data:
        raise serv.ServingError("the body is empty: send an image (PNG, JPEG, ...)")
    try:
        image = Image.open(io.BytesIO(data))  # reads the header only
    except UnidentifiedImageError as exc:
        raise serv.ServingError("the body is not an image Pillow can read", 415) from exc
    except Image.DecompressionBombError as exc:  # over twice Pillow's own limit
        raise serv.ServingError(f"the image is too large: {exc}", 413) from exc
    width, height = image.size
    if width * height > MAX_PIXELS:  # known from the header: nothing decoded yet
        raise serv.ServingError(
            f"the image is {width} x {height} pixels, over the limit of {MAX_PIXELS:,}", 413
        )
    if width == 0 or height == 0:
        raise serv.ServingError("the image is empty (0 pixels)")
    try:
        image = ImageOps.exif_transpose(image)  # a photo, turned the way it is shown
        if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
            white = Image.new("RGBA", image.size, "white")  # transparent means paper here
            image = Image.alpha_composite(white, image.convert("RGBA"))
        return image.convert("RGB")
    except (OSError, ValueError) as exc:
        raise serv.ServingError(f"cannot decode the image: {exc}") from exc


def fetch(url: object) -> bytes:
    """Download an image: 400 for a bad URL, 502 when it cannot be fetched, 413 if too big."""
    if not isinstance(url, str) or not url.startswith(("http://", "https://")):
        raise serv.ServingError('send image bytes, or JSON like {"url": "http://..."}')
    data = bytearray()
    try:
        with requests.get(url, timeout=FETCH_TIMEOUT_S, stream=True) as response:
            if response.status_code != 200:
                raise serv.ServingError(
                    f"cannot fetch {url}: it answered {response.status_code}", 502
                )
            for chunk in response.iter_content(64 * 1024):
                data += chunk
                if len(data) > MAX_DOWNLOAD:
                    raise serv.ServingError(f"{url} is over {MAX_DOWNLOAD:,} bytes", 413)
    except requests.Timeout as exc:
        raise serv.ServingError(
            f"cannot fetch {url}: no answer in {FETCH_TIMEOUT_S} s", 502
        ) from exc
    except requests.ConnectionError as exc:
        raise serv.ServingError(f"cannot fetch {url}: cannot connect", 502) from exc
    except requests.RequestException as exc:
        raise serv.ServingError(f"cannot fetch {url}: {exc}", 502) from exc
    return bytes(data)


if __name__ == "__main__":
    # The sessions use every core: one predict at a time (while the next request is decoded).
    serv.run(Predictor, predict_concurrency=1)
