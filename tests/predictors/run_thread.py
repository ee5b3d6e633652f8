"""A run() thread that updates state predict() reads."""

import threading

import openbayes_serving as serv


class Predictor:
    def __init__(self):
        self.ticks = 0
        self.changed = threading.Event()

    def run(self):
        for _ in range(3):
            self.ticks += 1
        self.changed.set()

    def predict(self, json):
        self.changed.wait(10)
        return {"ticks": self.ticks}


if __name__ == "__main__":
    serv.run(Predictor)
