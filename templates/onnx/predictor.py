"""An ONNX predictor: run `python make_model.py` once, then `openbayes-serving run .`."""

import numpy as np

import openbayes_serving as serv


class Predictor:
    def __init__(self, onnx):
        # `onnx` is an onnxruntime.InferenceSession of the .onnx file beside this file
        # (or under --model-path). The runtime picks its threads and providers.
        self.session = onnx
        self.input_name = onnx.get_inputs()[0].name

    def preprocess(self, json):
        # Runs on a thread pool, outside the predict lock: decode and validate here.
        try:
            rows = np.asarray(json["inputs"], dtype=np.float32)
        except (KeyError, TypeError, ValueError):
            raise serv.ServingError('send {"inputs": [[4 numbers], ...]}', 422) from None
        if rows.ndim != 2 or rows.shape[1] != 4:
            raise serv.ServingError("inputs must be rows of 4 numbers", 422)
        return rows

    def predict(self, rows):
        # Runs under the predict lock (predict_concurrency at once), on a model thread.
        (outputs,) = self.session.run(None, {self.input_name: rows})
        return outputs

    def postprocess(self, outputs):
        # Runs outside the lock again; numpy arrays are encoded as lists.
        return {"outputs": outputs, "classes": outputs.argmax(axis=1)}


if __name__ == "__main__":
    serv.run(Predictor)
