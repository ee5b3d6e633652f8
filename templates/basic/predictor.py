"""A predictor: `openbayes-serving run .` (or `python predictor.py`) serves it over HTTP."""

import openbayes_serving as serv


class Predictor:
    def __init__(self):
        # Load the model here, once. Parameters are injected by name:
        #   onnx   -> an onnxruntime session of the .onnx file beside this file
        #   config -> a dict from config.json / config.yaml beside this file
        #   device -> "cpu", "cuda:0", ... (one instance per --devices entry)
        self.greeting = "hello"

    def predict(self, json):
        # Runs for every POST /. Parameters are injected by name:
        #   json (parsed JSON or MessagePack body), payload, data (raw bytes),
        #   params / args (query), headers, request (a flask.Request).
        # A dict/list becomes JSON (or MessagePack, by Accept); str is text; bytes are
        # sent as they are; raise serv.ServingError("why", 422) for a 4xx answer.
        if not isinstance(json, dict):
            raise serv.ServingError("send a JSON object", 422)
        return {"greeting": self.greeting, "echo": json}


if __name__ == "__main__":
    serv.run(Predictor)
