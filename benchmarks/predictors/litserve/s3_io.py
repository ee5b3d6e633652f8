"""S3 I/O on LitServe: the fetch in decode_request (LitServe's input stage), then compute."""

from __future__ import annotations

import os

import litserve as ls
from runner import flags, load_work, serve

work = load_work()
URL = os.environ["BENCH_SLOW_URL"]
REPS = int(os.environ["BENCH_COMPUTE_REPS"])


class FetchCompute(ls.LitAPI):
    def decode_request(self, request) -> int:
        return len(work.fetch(URL))

    def predict(self, x: int) -> dict:
        return {"fetched": x, "value": work.compute(REPS)}

    def encode_response(self, output: dict):
        return output


if __name__ == "__main__":
    serve(FetchCompute(), flags())
