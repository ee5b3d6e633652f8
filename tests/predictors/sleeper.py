"""predict sleeps as long as asked: for queue, timeout and drain tests."""

import time

import openbayes_serving as serv


class Predictor:
    def predict(self, json):
        time.sleep(json.get("sleep", 0))
        return {"id": json.get("id")}


if __name__ == "__main__":
    serv.run(Predictor)
