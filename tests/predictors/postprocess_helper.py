"""A 0.5.0 predictor with a one-argument postprocess() that predict() calls itself.

Running it as a pipeline stage too would apply it twice.
"""

import openbayes_serving as serv


class Predictor:
    def postprocess(self, y):
        return {"doubled": y * 2}

    def predict(self, json):
        return self.postprocess(json["x"])


if __name__ == "__main__":
    serv.run(Predictor)
