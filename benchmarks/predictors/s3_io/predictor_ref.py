"""S3 I/O overlap, reference 0.5.0: no preprocess there, so the fetch runs inside predict.

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
    def predict(self, json) -> dict:
        fetched = len(fetch(URL))
        return {"fetched": fetched, "value": compute(REPS)}


if __name__ == "__main__":
    serv.run(Predictor)
