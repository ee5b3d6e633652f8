"""predict sleeps as long as asked: for queue, timeout and drain tests.

``{"ran": true}`` answers the ids of every request predict has run so far.
"""

import time

import openbayes_serving as serv


class Predictor:
    def __init__(self):
        self.ran = []

    def predict(self, json):
        if json.get("ran"):
            return {"ran": self.ran}
        self.ran.append(json.get("id"))
        time.sleep(json.get("sleep", 0))
        return {"id": json.get("id")}


if __name__ == "__main__":
    serv.run(Predictor)
