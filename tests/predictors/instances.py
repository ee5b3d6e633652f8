"""One instance per device: each sees its device; predicts run in parallel."""

import threading
import time

import openbayes_serving as serv


class Predictor:
    def __init__(self, device):
        self.device = device
        self.instance = id(self)

    def predict(self, json):
        time.sleep(json.get("sleep", 0.3))
        return {
            "device": self.device,
            "instance": self.instance,
            "thread": threading.current_thread().name,
        }


if __name__ == "__main__":
    serv.run(Predictor, devices=["cpu", "cpu"])
