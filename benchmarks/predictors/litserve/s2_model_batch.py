"""S2 model on LitServe with its dynamic batching: LitAPI stacks the decoded rows."""

from __future__ import annotations

import numpy as np
from runner import flags, serve
from s2_model import MLP


class BatchedMLP(MLP):
    def predict(self, x: np.ndarray) -> np.ndarray:  # (rows, 512): one row per request
        return self.session.run(None, {self.input_name: x})[0]


if __name__ == "__main__":
    args = flags()
    serve(BatchedMLP(args.model_path, max_batch_size=32, batch_timeout=0.005), args)
