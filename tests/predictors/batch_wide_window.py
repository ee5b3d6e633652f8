"""Batched predict with a wide batch window (1 s): how long a lone client waits shows."""

import openbayes_serving as serv


class Predictor:
    @serv.batch(max_batch_size=8, max_delay_ms=1000)
    def predict(self, json):
        return [{"batch": len(json)} for _ in json]


if __name__ == "__main__":
    serv.run(Predictor)
