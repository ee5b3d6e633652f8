"""Batched predict: each request's sum, and the size of the batch it rode in."""

import time

import openbayes_serving as serv


class Predictor:
    @serv.batch(max_batch_size=8, max_delay_ms=100)
    def predict(self, json):
        time.sleep(0.02)
        return [{"sum": sum(item["values"]), "batch": len(json)} for item in json]


if __name__ == "__main__":
    serv.run(Predictor)
