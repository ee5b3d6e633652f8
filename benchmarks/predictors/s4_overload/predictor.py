"""S4 overload: about 10 ms of numpy compute per request, then echo. Both runtimes.

Injected parameters carry no annotation: the reference 0.5.0 looks an annotated
parameter up by its annotation, not its name.
"""

from __future__ import annotations

import os

import numpy as np

import openbayes_serving as serv

REPS = 2 * int(os.environ["BENCH_COMPUTE_REPS"])
_MATRIX = np.random.default_rng(0).standard_normal((256, 256)).astype(np.float32)


class Predictor:
    def predict(self, json) -> dict:
        out = _MATRIX
        for _ in range(REPS):
            out = _MATRIX @ _MATRIX
        return {"echo": json, "value": float(out[0, 0])}


if __name__ == "__main__":
    serv.run(Predictor)
