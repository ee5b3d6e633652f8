"""S2 model on LitServe, one row per request: the MLP on a `{"x": [512 numbers]}` body."""

from __future__ import annotations

from typing import Any

import litserve as ls
import numpy as np
import onnxruntime as ort
from runner import first_onnx, flags, serve


class MLP(ls.LitAPI):
    def __init__(self, model_path: str, **settings: Any) -> None:
        super().__init__(**settings)
        self.model_path = model_path

    def setup(self, device: str) -> None:
        self.session = ort.InferenceSession(
            first_onnx(self.model_path), providers=["CPUExecutionProvider"]
        )
        self.input_name = self.session.get_inputs()[0].name

    def decode_request(self, request) -> np.ndarray:
        return np.asarray(request["x"], dtype=np.float32)

    def predict(self, x: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input_name: x.reshape(1, -1)})[0][0]

    def encode_response(self, output: np.ndarray):
        return {"y": output.tolist()}


if __name__ == "__main__":
    args = flags()
    serve(MLP(args.model_path), args)
