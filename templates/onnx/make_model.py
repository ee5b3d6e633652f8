"""Write model.onnx: a tiny linear classifier (4 inputs, 3 classes) made with onnx's helpers."""

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

rng = np.random.default_rng(0)
weights = numpy_helper.from_array(rng.normal(size=(4, 3)).astype(np.float32), "weights")
bias = numpy_helper.from_array(np.zeros(3, dtype=np.float32), "bias")
graph = helper.make_graph(
    [
        helper.make_node("MatMul", ["x", "weights"], ["xw"]),
        helper.make_node("Add", ["xw", "bias"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1),
    ],
    "linear",
    [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 4])],
    [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, [None, 3])],
    initializer=[weights, bias],
)
model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
model.ir_version = 8
onnx.checker.check_model(model)
onnx.save(model, "model.onnx")
print("wrote model.onnx")
