"""Dynamic batching: many one-row requests become one ``session.run`` over a stacked array."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort

import openbayes_serving as serv

N_FEATURES = 512


class Predictor:
    """A 512-2048-2048-10 MLP behind the dynamic batcher."""

    def __init__(self, onnx: ort.InferenceSession) -> None:
        # `onnx` is injected by name: a session over the first *.onnx beside this file
        # (or under --model-path), with execution options chosen by the runtime.
        self.session = onnx
        self.input_name = onnx.get_inputs()[0].name

    def preprocess(self, json: dict) -> np.ndarray:
        # Runs once per request, before batching: a bad row fails only its own request.
        row = json.get("x") if isinstance(json, dict) else None
        try:
            x = np.asarray(row, dtype=np.float32)
        except (TypeError, ValueError):
            x = None
        if x is None or x.shape != (N_FEATURES,):
            raise serv.ServingError(f'send {{"x": [{N_FEATURES} numbers]}}')
        return x

    @serv.batch(max_batch_size=32, max_delay_ms=5)
    def predict(self, rows: list[np.ndarray]) -> list[dict]:
        # With @serv.batch, `rows` holds one preprocess result per waiting request (up to 32,
        # collected for at most 5 ms). Return one answer per row, in the same order.
        logits = self.session.run(None, {self.input_name: np.stack(rows)})[0]
        return [{"logits": y, "label": int(y.argmax()), "batch_size": len(rows)} for y in logits]


if __name__ == "__main__":
    serv.run(Predictor)
