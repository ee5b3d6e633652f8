"""predict waits 50 ms on I/O (a sleep) and says how many predicts ran at once at most."""

import threading
import time

import openbayes_serving as serv


class Predictor:
    def __init__(self):
        self.lock = threading.Lock()
        self.running = 0
        self.peak = 0

    def predict(self, json):
        with self.lock:
            self.running += 1
            self.peak = max(self.peak, self.running)
        time.sleep(json.get("sleep", 0.05))
        with self.lock:
            self.running -= 1
        return {"peak": self.peak}


if __name__ == "__main__":
    serv.run(Predictor)
