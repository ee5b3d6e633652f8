"""warmup() takes WARMUP_SECONDS (default 1); health() answers as the last request said.

``{"health": "ok" | "false" | "raise" | "hang"}`` sets what health() does from then on
(``hang`` sleeps 3 s, then passes). Every answer says whether warm-up had finished when
predict ran and how many times health() has been called.
"""

import os
import time

import openbayes_serving as serv


class Predictor:
    def __init__(self):
        self.warm = False
        self.mode = "ok"
        self.health_calls = 0

    def warmup(self):
        time.sleep(float(os.environ.get("WARMUP_SECONDS", "1")))
        self.warm = True

    def health(self):
        self.health_calls += 1
        if self.mode == "raise":
            raise RuntimeError("the device is gone")
        if self.mode == "hang":
            time.sleep(3)
        return self.mode != "false"

    def predict(self, json):
        if "health" in json:
            self.mode = json["health"]
        return {"warm": self.warm, "health_calls": self.health_calls}


if __name__ == "__main__":
    serv.run(Predictor)
