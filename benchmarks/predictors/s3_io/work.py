"""The work of S3 and S6, shared by their predictors and the driver (which times `compute`).

`fetch` waits on the loopback slow server (about 50 ms); `compute` multiplies matrices
with numpy (the GIL is released; BLAS threads are pinned to 1 by the driver's environment).
"""

from __future__ import annotations

import urllib.request

import numpy as np

_MATRIX = np.random.default_rng(0).standard_normal((256, 256)).astype(np.float32)


def compute(reps: int) -> float:
    """Multiply a 256x256 matrix by itself ``reps`` times; return a number from the result."""
    out = _MATRIX
    for _ in range(reps):
        out = _MATRIX @ _MATRIX
    return float(out[0, 0])


def fetch(url: str) -> bytes:
    """GET ``url`` (the slow server on 127.0.0.1) and return its body."""
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.read()
