"""A batched predictor: concurrent requests are grouped into one predict call."""

import numpy as np

import openbayes_serving as serv


class Predictor:
    def __init__(self):
        rng = np.random.default_rng(0)
        self.weights = rng.normal(size=(4, 2)).astype(np.float32)

    def preprocess(self, json):
        # One request's row, checked outside the lock.
        row = np.asarray(json.get("x"), dtype=np.float32)
        if row.shape != (4,):
            raise serv.ServingError('send {"x": [4 numbers]}', 422)
        return row

    @serv.batch(max_batch_size=32, max_delay_ms=5)
    def predict(self, rows):
        # `rows` holds one preprocess result per request; return one answer per request,
        # in the same order. A batch starts when full or 5 ms after its first request.
        outputs = np.stack(rows) @ self.weights
        return [{"y": out, "batch_size": len(rows)} for out in outputs]


if __name__ == "__main__":
    serv.run(Predictor)
