import gc
import sys

import openbayes_serving as serv


class Predictor:
    def predict(self, json):
        return {
            "young": gc.get_threshold()[0],
            "frozen": gc.get_freeze_count(),
            "switch": sys.getswitchinterval(),
        }


if __name__ == "__main__":
    serv.run(Predictor)
