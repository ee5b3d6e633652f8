"""A generator predict: tokens as text, dicts as NDJSON, endless on request."""

import itertools
import time

import openbayes_serving as serv


class Predictor:
    def predict(self, json):
        count = json.get("count")
        for index in itertools.count() if count is None else range(count):
            if json.get("fail_at") == index:
                raise RuntimeError("stream broke")
            yield {"index": index} if json.get("dicts") else f"tok{index} "
            time.sleep(json.get("delay", 0.05))


if __name__ == "__main__":
    serv.run(Predictor)
