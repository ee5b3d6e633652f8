"""The predictor behind the try-it page tests: echoes JSON and images, fails on request."""

import openbayes_serving as serv


class Predictor:
    def predict(self, payload, params):
        if "fail" in params:
            raise RuntimeError("<b>boom</b>")
        return payload


if __name__ == "__main__":
    serv.run(Predictor)
