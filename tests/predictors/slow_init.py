"""__init__ takes SLOW_INIT seconds (default 2), as a large model does to load."""

import os
import time

import openbayes_serving as serv


class Predictor:
    def __init__(self):
        time.sleep(float(os.environ.get("SLOW_INIT", "2")))

    def predict(self, json):
        return {"ok": True, "echo": json}


if __name__ == "__main__":
    serv.run(Predictor)
