"""A PyTorch predictor: `openbayes-serving run .` serves it; `--devices cuda:0` uses a GPU."""

import torch

import openbayes_serving as serv


class Predictor:
    def __init__(self, device):
        # `device` is this instance's device ("cpu" unless --devices says otherwise).
        # Load real weights here with torch.load(..., map_location=device).
        torch.manual_seed(0)
        self.device = torch.device(device)
        self.model = torch.nn.Sequential(
            torch.nn.Linear(4, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3)
        ).to(self.device)
        self.model.eval()

    def preprocess(self, json):
        # Outside the predict lock: turn the request into a tensor.
        try:
            return torch.tensor(json["inputs"], dtype=torch.float32)
        except (KeyError, TypeError, ValueError):
            raise serv.ServingError('send {"inputs": [[4 numbers], ...]}', 422) from None

    @torch.inference_mode()
    def predict(self, x):
        # Under the lock, on a model thread: the only step that touches the device.
        return self.model(x.to(self.device)).softmax(dim=1).cpu()

    def postprocess(self, probabilities):
        return {"probabilities": probabilities.tolist()}


if __name__ == "__main__":
    serv.run(Predictor)
