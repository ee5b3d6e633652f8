"""Each instance keeps a tensor on its injected device and computes on it per request."""

import threading
import time

import torch

import openbayes_serving as serv


class Predictor:
    def __init__(self, device):
        self.device = device
        self.weight = torch.arange(1, 5, dtype=torch.float32, device=device)  # 1, 2, 3, 4

    def predict(self, json):
        time.sleep(json.get("sleep", 0))
        x = torch.tensor(json["x"], dtype=torch.float32, device=self.device)
        return {
            "device": self.device,
            "tensor_device": str(self.weight.device),
            "dot": float((x * self.weight).sum()),
            "instance": id(self),
            "thread": threading.current_thread().name,
        }


if __name__ == "__main__":
    serv.run(Predictor)
