"""Random-weight stand-ins with the real signatures of the ONNX swappers, for ``--random-weights``
and the tests: a few convolutions, with the identity added to every feature channel.

- swapper: inputs ``target`` (1, 3, S, S) then ``source`` (1, 512), the order insightface
  reads them in (``input_names[0]`` is the image); first output ``output`` (1, 3, S, S)
  through a sigmoid for models whose output is in [0, 1] (inswapper, simswap) or a tanh
  for those in [-1, 1] (hyperswap, which also has a second output, its mask).
- inswapper: a (512, 512) emap as the graph's LAST initializer, read by no node, which is
  where insightface and FaceFusion read it from.
- crossface converter: input ``input`` (N, 512) -> (N, 512).
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from builder.faces.random_onnx import _Graph

EMBEDDING_SIZE = 512


def swapper_model(
    seed: int, size: int, activation: str = "Sigmoid", mask: bool = False, emap: bool = False, width: int = 8
) -> onnx.ModelProto:
    g = _Graph(seed)
    x = g.op("Relu", [g.conv("target", 3, width, 3, 1)])
    w = g.rng.normal(0.0, np.sqrt(1.0 / EMBEDDING_SIZE), size=(width, EMBEDDING_SIZE)).astype(np.float32)
    shift = g.op("Gemm", ["source", g.const(w, "fc"), g.const(np.zeros(width, np.float32), "fc_bias")], transB=1)
    shift = g.op("Reshape", [shift, g.const(np.array([-1, width, 1, 1], np.int64), "shape")])
    x = g.op("Add", [x, shift])
    y = g.op(activation, [g.conv(x, width, 3, 3, 1)], output="output")
    outputs = [helper.make_tensor_value_info(y, TensorProto.FLOAT, [1, 3, size, size])]
    if mask:
        m = g.op("Sigmoid", [g.conv(x, width, 1, 1, 1)], output="mask")
        outputs.append(helper.make_tensor_value_info(m, TensorProto.FLOAT, [1, 1, size, size]))
    if emap:
        matrix = g.rng.normal(0.0, np.sqrt(1.0 / EMBEDDING_SIZE), size=(EMBEDDING_SIZE, EMBEDDING_SIZE))
        g.inits.append(numpy_helper.from_array(matrix.astype(np.float32), "emap"))
    inputs = [
        helper.make_tensor_value_info("target", TensorProto.FLOAT, [1, 3, size, size]),
        helper.make_tensor_value_info("source", TensorProto.FLOAT, [1, EMBEDDING_SIZE]),
    ]
    return g.model(inputs, outputs, "swapper_random")


def inswapper_model(seed: int) -> onnx.ModelProto:
    return swapper_model(seed, 128, "Sigmoid", emap=True)


def hyperswap_model(seed: int) -> onnx.ModelProto:
    return swapper_model(seed, 256, "Tanh", mask=True)


def simswap_model(seed: int) -> onnx.ModelProto:
    return swapper_model(seed, 256, "Sigmoid")


def converter_model(seed: int) -> onnx.ModelProto:
    g = _Graph(seed)
    w = g.rng.normal(0.0, np.sqrt(1.0 / EMBEDDING_SIZE), size=(EMBEDDING_SIZE, EMBEDDING_SIZE)).astype(np.float32)
    out = g.op(
        "Gemm", ["input", g.const(w, "fc"), g.const(np.zeros(EMBEDDING_SIZE, np.float32), "fc_bias")],
        output="output", transB=1,
    )
    return g.model(
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", EMBEDDING_SIZE])],
        [helper.make_tensor_value_info(out, TensorProto.FLOAT, ["batch", EMBEDDING_SIZE])],
        "crossface_random",
    )
