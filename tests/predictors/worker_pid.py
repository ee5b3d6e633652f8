"""predict answers the id of the worker process that ran it: for recycling tests."""

import os
import time

import openbayes_serving as serv


class Predictor:
    def __init__(self):
        time.sleep(float(os.environ.get("LOAD_SECONDS", "0")))  # a model that takes a while

    def predict(self, json):
        time.sleep(json.get("sleep", 0))
        return {"pid": os.getpid()}


if __name__ == "__main__":
    serv.run(Predictor)
