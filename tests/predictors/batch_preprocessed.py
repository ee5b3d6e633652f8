"""Batched predict after preprocess: predict gets the list of preprocess results."""

import openbayes_serving as serv


class Predictor:
    def preprocess(self, json):
        return json["x"] * 10

    @serv.batch(max_batch_size=4, max_delay_ms=20)
    def predict(self, xs):
        if any(x < 0 for x in xs):
            return xs[:-1]  # a wrong-length answer
        return [x + 1 for x in xs]


if __name__ == "__main__":
    serv.run(Predictor)
