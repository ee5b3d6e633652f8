"""S2 model, one row per request: the MLP on a `{"x": [512 numbers]}` body. Both runtimes.

Injected parameters carry no annotation: the reference 0.5.0 looks an annotated
parameter up by its annotation, not its name.
"""

from __future__ import annotations

import numpy as np

import openbayes_serving as serv


class Predictor:
    def __init__(self, onnx) -> None:
        self.session = onnx
        self.input_name = onnx.get_inputs()[0].name

    def predict(self, json) -> dict:
        x = np.asarray(json["x"], dtype=np.float32).reshape(1, -1)
        y = self.session.run(None, {self.input_name: x})[0]
        return {"y": y[0].tolist()}


if __name__ == "__main__":
    serv.run(Predictor)
