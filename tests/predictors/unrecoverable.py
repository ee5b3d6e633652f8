import time

import openbayes_serving as serv


class Predictor:
    def predict(self, json):
        if json.get("fail"):
            raise serv.UnrecoverableError("GPU fell off the bus")
        time.sleep(json.get("sleep", 0))
        return {"ok": True}


if __name__ == "__main__":
    serv.run(Predictor)
