"""A batched predict that stacks the batch into one tensor on the injected device."""

import torch

import openbayes_serving as serv


class Predictor:
    def __init__(self, device):
        self.device = device
        self.weight = torch.tensor([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]], device=device)

    @serv.batch(max_batch_size=8, max_delay_ms=500)
    def predict(self, json):
        x = torch.tensor([item["x"] for item in json], dtype=torch.float32, device=self.device)
        y = x @ self.weight.T  # one matrix product for the whole batch
        return [{"y": row, "batch": len(json), "device": str(y.device)} for row in y.tolist()]


if __name__ == "__main__":
    serv.run(Predictor)
