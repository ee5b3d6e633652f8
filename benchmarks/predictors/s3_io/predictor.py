"""S3 I/O overlap, this project: the fetch runs in `preprocess`, outside the predict lock.

Injected parameters carry no annotation: the reference 0.5.0 looks an annotated
parameter up by its annotation, not its name.
"""

from __future__ import annotations

import os

from work import compute, fetch

import openbayes_serving as serv

URL = os.environ["BENCH_SLOW_URL"]
REPS = int(os.environ["BENCH_COMPUTE_REPS"])


class Predictor:
    def preprocess(self, json) -> int:
        return len(fetch(URL))

    def predict(self, x) -> dict:
        return {"fetched": x, "value": compute(REPS)}


if __name__ == "__main__":
    serv.run(Predictor)
