"""preprocess sleeps 200 ms (I/O), predict 50 ms (compute); records predict overlap."""

import threading
import time

import openbayes_serving as serv


class Predictor:
    def __init__(self):
        self.lock = threading.Lock()
        self.running = 0
        self.max_running = 0
        self.pre_threads = set()
        self.predict_threads = set()

    def preprocess(self, json):
        self.pre_threads.add(threading.current_thread().name)
        time.sleep(json.get("pre", 0.2))
        return json

    def predict(self, x):
        with self.lock:
            self.running += 1
            self.max_running = max(self.max_running, self.running)
        self.predict_threads.add(threading.current_thread().name)
        time.sleep(x.get("compute", 0.05))
        with self.lock:
            self.running -= 1
        return {"id": x.get("id"), "max_running": self.max_running}

    def postprocess(self, y):
        y["post_on_model_thread"] = threading.current_thread().name in self.predict_threads
        y["pre_on_model_thread"] = bool(self.pre_threads & self.predict_threads)
        return y


if __name__ == "__main__":
    serv.run(Predictor)
