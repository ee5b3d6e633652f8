"""The platform docs' second predictor shape: predict(json) calls its own helpers.

preprocess(self, v) and postprocess(self, v) are the predictor's methods, not pipeline
stages: predict takes the request (json) and calls both itself, as 0.5.0 served it.
"""

import openbayes_serving as serv


class Predictor:
    def __init__(self):
        self.scale = 10

    def preprocess(self, v):
        return [float(x) * self.scale for x in v]

    def postprocess(self, v):
        return {"total": v, "scale": self.scale}

    def predict(self, json):
        values = self.preprocess(json["values"])
        return self.postprocess(sum(values))


if __name__ == "__main__":
    serv.run(Predictor)
