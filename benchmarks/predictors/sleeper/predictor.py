"""predict sleeps as long as asked (``{"sleep": seconds}``): keeps the queue full."""

from __future__ import annotations

import time

import openbayes_serving as serv


class Predictor:
    def predict(self, json):
        time.sleep(float(json.get("sleep", 0)))
        return {"slept": json.get("sleep", 0)}


if __name__ == "__main__":
    serv.run(Predictor)
