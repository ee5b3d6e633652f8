"""__init__ calls a library that raises: the failure names this file's line and the library's."""

import json

import openbayes_serving as serv


class Predictor:
    def __init__(self):
        self.table = json.loads("{not json")

    def predict(self, json):
        return json


if __name__ == "__main__":
    serv.run(Predictor)
