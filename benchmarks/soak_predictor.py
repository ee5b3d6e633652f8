"""The soak test's predictor: a little compute, and failures on request."""

import time

import openbayes_serving as serv


class Predictor:
    def preprocess(self, json):
        if json.get("bad"):
            raise serv.ServingError("bad input on purpose", 422)
        return json

    def predict(self, x):
        if x.get("crash"):
            raise RuntimeError("crash on purpose")
        time.sleep(x.get("work", 0.002))
        return {"echo": x.get("n")}


if __name__ == "__main__":
    serv.run(Predictor)
