"""S2 model with dynamic batching (this project only): rows of many requests, one session.run.

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

    @serv.batch(max_batch_size=32, max_delay_ms=5)
    def predict(self, json) -> list[dict]:
        x = np.asarray([item["x"] for item in json], dtype=np.float32)
        y = self.session.run(None, {self.input_name: x})[0]
        return [{"y": row.tolist()} for row in y]


if __name__ == "__main__":
    serv.run(Predictor)
