"""Write mlp.onnx: a 512-2048-2048-10 ReLU MLP with seeded random weights (no download).

Usage: ``python make_model.py [OUT_DIR]`` (default: this directory).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

SIZES = [512, 2048, 2048, 10]


def build(seed: int = 0) -> onnx.ModelProto:
    """Build the MLP graph: (Gemm -> Relu) x 2, then a last Gemm to 10 logits."""
    rng = np.random.default_rng(seed)
    nodes, weights = [], []
    name = "x"
    for i, (n_in, n_out) in enumerate(zip(SIZES, SIZES[1:])):
        w = (rng.standard_normal((n_in, n_out)) * np.sqrt(2.0 / n_in)).astype(np.float32)
        b = np.zeros(n_out, dtype=np.float32)
        weights += [numpy_helper.from_array(w, f"w{i}"), numpy_helper.from_array(b, f"b{i}")]
        if i == len(SIZES) - 2:  # the last layer gives the logits, no ReLU
            nodes.append(helper.make_node("Gemm", [name, f"w{i}", f"b{i}"], ["y"]))
        else:
            nodes.append(helper.make_node("Gemm", [name, f"w{i}", f"b{i}"], [f"g{i}"]))
            nodes.append(helper.make_node("Relu", [f"g{i}"], [f"h{i}"]))
            name = f"h{i}"
    graph = helper.make_graph(
        nodes,
        "mlp",
        # "batch" is a symbolic dimension: one session.run serves any number of rows.
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", SIZES[0]])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", SIZES[-1]])],
        weights,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8  # readable by every onnxruntime of the last years
    onnx.checker.check_model(model)
    return model


def main() -> None:
    """Write mlp.onnx into the directory given on the command line."""
    out_dir = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parent
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "mlp.onnx"
    onnx.save(build(), str(path))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
