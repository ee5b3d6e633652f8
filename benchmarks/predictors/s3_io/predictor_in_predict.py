"""The 0.5.0 shape of an I/O predictor: the fetch and the compute both inside predict.

S3 runs it on the reference (which has no preprocess); S6 runs this same file on both
runtimes with default settings. Injected parameters carry no annotation: the reference
0.5.0 looks an annotated parameter up by its annotation, not its name.
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
