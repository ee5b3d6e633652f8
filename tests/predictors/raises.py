from flask import abort

import openbayes_serving as serv
from openbayes_serving.common import ServingError


class Predictor:
    def predict(self, json):
        kind = json.get("kind")
        if kind == "serving":
            raise ServingError("no coffee", 418, {"hint": "teapot"})
        if kind == "default_status":
            raise serv.ServingError("bad input")
        if kind == "abort":
            abort(409, "conflict here")
        raise ValueError("secret internal detail")


if __name__ == "__main__":
    serv.run(Predictor)
