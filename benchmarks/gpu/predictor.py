"""The image classifier that benchmarks/gpu/bench.py serves and measures alone.

A torchvision ResNet-50 (``weights=None``: throughput does not depend on the weights) or,
with ``"model": "tiny"`` in the config, three conv layers for CPU runs. Requests are
MessagePack maps ``{"image": <H*W*3 uint8 bytes, RGB>, "shape": [H, W, 3]}``: what a
client that already resized its frames sends. ``preprocess`` turns one into a uint8 array
(off the model thread); the batched ``predict`` stacks them, copies the batch to the
instance's device, normalizes it in the model's dtype, runs the model and answers the
top-5 classes of each image.

Two more request shapes serve the benchmark:

- ``"size": S`` resizes the batch to S x S on the device before the model (a detector's
  input size, say). A size too large for the device runs out of memory: on CUDA for real;
  on other devices a batch whose resized input would exceed ``cpu_memory_limit_mib``
  raises ``torch.cuda.OutOfMemoryError`` so that the same path runs without a GPU.
- ``"model": false`` decodes the image as usual and answers its size without the model:
  what HTTP and the runtime cost a request of this size.
- ``{"stats": true}`` answers the device's memory counters (torch's on CUDA, the
  process's resident memory elsewhere); ``{"stats": "reset"}`` resets the peaks first.
"""

from __future__ import annotations

import os
import resource
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

import openbayes_serving as serv

MAX_BATCH = 32
# The batch window: the decorator's default unless the benchmark sets another to compare.
MAX_DELAY_MS = float(os.environ.get("GPU_BENCH_MAX_DELAY_MS", "5"))
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
MIB = 1024 * 1024


@dataclass(frozen=True)
class Image:
    """One decoded request: an H x W x 3 uint8 array and the side to resize it to (0: none)."""

    pixels: np.ndarray
    size: int
    model: bool = True


@dataclass(frozen=True)
class StatsQuery:
    """A request for the memory counters; ``reset`` clears the peaks first."""

    reset: bool


def build_model(name: str) -> nn.Module:
    """ResNet-50 without pretrained weights, or the tiny CNN for CPU runs."""
    torch.manual_seed(0)
    if name == "resnet50":
        import torchvision  # imported here: a few seconds that tiny CPU runs do without

        return torchvision.models.resnet50(weights=None)
    if name == "tiny":
        return nn.Sequential(
            nn.Conv2d(3, 16, 3, stride=2, padding=1),
            nn.BatchNorm2d(16),
            nn.ReLU(),
            nn.Conv2d(16, 32, 3, stride=2, padding=1),
            nn.BatchNorm2d(32),
            nn.ReLU(),
            nn.Conv2d(32, 64, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(64, 1000),
        )
    raise ValueError(f"unknown model {name!r}: resnet50 or tiny")


class Predictor:
    def __init__(self, device: str, config: dict) -> None:
        self.device = torch.device(device)
        if config.get("threads"):  # CPU runs: the cores are shared with the server and clients
            torch.set_num_threads(int(config["threads"]))
        self.dtype = getattr(torch, config.get("dtype", "float16"))
        self.image_size = int(config.get("image_size", 224))
        self.cpu_memory_limit = int(config.get("cpu_memory_limit_mib", 1024)) * MIB
        model = build_model(config.get("model", "resnet50")).eval()
        self.model = model.to(self.device, self.dtype, memory_format=torch.channels_last)
        shape = (1, 3, 1, 1)
        self.mean = torch.tensor(MEAN, device=self.device, dtype=self.dtype).view(shape)
        self.std = torch.tensor(STD, device=self.device, dtype=self.dtype).view(shape)
        side = self.image_size
        for batch in (1, MAX_BATCH):  # kernels chosen and memory pools grown before serving
            self._classify(np.zeros((batch, side, side, 3), np.uint8), 0)

    def preprocess(self, json: Any) -> Image | StatsQuery:
        """Decode one request into an image array (or a stats query); 400 when malformed."""
        if not isinstance(json, dict):
            raise serv.ServingError("send a MessagePack map {image, shape}")
        if "stats" in json:
            return StatsQuery(reset=json["stats"] == "reset")
        data, shape = json.get("image"), json.get("shape")
        if not isinstance(data, bytes) or not isinstance(shape, list) or len(shape) != 3:
            raise serv.ServingError("image must be bytes and shape [height, width, 3]")
        height, width, channels = (int(v) for v in shape)
        if channels != 3 or height * width * 3 != len(data):
            raise serv.ServingError(f"shape {shape} does not match {len(data)} bytes of RGB")
        pixels = np.frombuffer(data, dtype=np.uint8).reshape(height, width, 3)
        return Image(pixels, int(json.get("size", 0)), json.get("model", True) is not False)

    @serv.batch(max_batch_size=MAX_BATCH, max_delay_ms=MAX_DELAY_MS)
    def predict(self, items: list) -> list:
        """Classify every image of the batch: one model call per (shape, size) group."""
        answers: list[Any] = [None] * len(items)
        groups: dict[tuple[tuple[int, ...], int], list[int]] = {}
        for index, item in enumerate(items):
            if isinstance(item, StatsQuery):
                answers[index] = self.memory(item.reset)
            elif not item.model:
                answers[index] = {"bytes": item.pixels.nbytes}
            else:
                groups.setdefault((item.pixels.shape, item.size), []).append(index)
        for (_, size), indices in groups.items():
            batch = np.stack([items[i].pixels for i in indices])
            scores, classes = self._classify(batch, size)
            for row, index in enumerate(indices):
                answers[index] = {"top5": classes[row].tolist(), "scores": scores[row].tolist()}
        return answers

    def _classify(self, batch: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
        with torch.inference_mode():
            x = torch.from_numpy(batch).to(self.device)  # N, H, W, 3 uint8
            x = x.permute(0, 3, 1, 2).to(self.dtype)  # NCHW view with channels-last strides
            if size:
                self._check_room(x.shape[0], size)
                x = nn.functional.interpolate(x, size=(size, size), mode="bilinear")
            x = (x / 255 - self.mean) / self.std
            logits = self.model(x.contiguous(memory_format=torch.channels_last))
            top = torch.topk(logits.float().softmax(dim=1), 5)
            return top.values.cpu().numpy(), top.indices.cpu().numpy()

    def _check_room(self, batch: int, size: int) -> None:
        needed = batch * 3 * size * size * self.mean.element_size()
        if self.device.type != "cuda" and needed > self.cpu_memory_limit:
            raise torch.cuda.OutOfMemoryError(
                f"out of memory: the resized batch needs {needed / MIB:.0f} MiB, over the "
                f"{self.cpu_memory_limit / MIB:.0f} MiB set for {self.device} "
                "(cpu_memory_limit_mib stands in for a GPU's memory)"
            )

    def memory(self, reset: bool = False) -> dict[str, Any]:
        """Memory counters in MiB: torch's for a CUDA device, the process's RSS otherwise."""
        if self.device.type == "cuda":
            if reset:
                torch.cuda.reset_peak_memory_stats(self.device)
            return {
                "counter": "torch.cuda",
                "allocated_mib": torch.cuda.memory_allocated(self.device) / MIB,
                "reserved_mib": torch.cuda.memory_reserved(self.device) / MIB,
                "peak_allocated_mib": torch.cuda.max_memory_allocated(self.device) / MIB,
                "peak_reserved_mib": torch.cuda.max_memory_reserved(self.device) / MIB,
            }
        with open("/proc/self/statm") as statm:
            rss = int(statm.read().split()[1]) * resource.getpagesize()
        peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return {
            "counter": "process RSS",
            "allocated_mib": rss / MIB,
            "reserved_mib": rss / MIB,
            "peak_allocated_mib": peak_kib / 1024,
            "peak_reserved_mib": peak_kib / 1024,
        }


if __name__ == "__main__":
    serv.run(Predictor)
