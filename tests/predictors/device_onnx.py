"""Reports the execution providers the runtime chose for its instance's device."""

import numpy as np

import openbayes_serving as serv


class Predictor:
    def __init__(self, onnx, device):
        self.session = onnx
        self.device = device

    def predict(self, json):
        y = self.session.run(None, {"x": np.asarray(json["x"], dtype=np.float32)})[0]
        cuda = self.session.get_provider_options().get("CUDAExecutionProvider", {})
        return {
            "device": self.device,
            "providers": self.session.get_providers(),
            "cuda_device_id": cuda.get("device_id"),
            "y": y.tolist(),
        }


if __name__ == "__main__":
    serv.run(Predictor)
