import gc

import openbayes_serving as serv


class Predictor:
    def predict(self, json):
        return {"young": gc.get_threshold()[0], "frozen": gc.get_freeze_count()}


if __name__ == "__main__":
    serv.run(Predictor)
