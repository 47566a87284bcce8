"""Random-weight ONNX stand-ins with the exact signatures of insightface's pack models.

``--random-weights`` must exercise insightface's own loading and decoding, so these are
small convolutional nets built with onnx.helper whose inputs and outputs are what
insightface inspects: for SCRFD, input ``input.1`` (1, 3, H, W) and nine rank-2 outputs
(scores, boxes, keypoints for strides 8, 16, 32, two anchors per location), which makes
its class pick ``fmc=3``, ``_num_anchors=2``, ``use_kps=True``; for ArcFace, a square
112 input and one 512-d output, which its model router sends to ArcFaceONNX.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

SCRFD_STRIDES = (8, 16, 32)
SCRFD_ANCHORS = 2
# A negative score bias with a wide spread of logits keeps a random net's detections to
# a few per cent of anchors, with some confident ones, so thresholds and NMS are exercised.
SCRFD_SCORE_BIAS = -3.0
SCRFD_SCORE_GAIN = 4.0
OPSET = 17


class _Graph:
    def __init__(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.count = 0

    def _name(self, kind: str) -> str:
        self.count += 1
        return f"{kind}_{self.count}"

    def const(self, array: np.ndarray, kind: str = "const") -> str:
        name = self._name(kind)
        self.inits.append(numpy_helper.from_array(array, name))
        return name

    def op(
        self, op_type: str, inputs: list[str], output: str | None = None, **attrs: object
    ) -> str:
        out = output or self._name(op_type.lower())
        self.nodes.append(
            helper.make_node(
                op_type, inputs, [out], name=self._name(f"node_{op_type.lower()}"), **attrs
            )
        )
        return out

    def conv(
        self, x: str, cin: int, cout: int, k: int, stride: int, bias: float = 0.0, gain: float = 1.0
    ) -> str:
        std = gain * np.sqrt(2.0 / (cin * k * k))
        w = self.rng.normal(0.0, std, size=(cout, cin, k, k)).astype(np.float32)
        b = np.full(cout, bias, np.float32)
        pad = k // 2
        return self.op(
            "Conv",
            [x, self.const(w, "weight"), self.const(b, "bias")],
            kernel_shape=[k, k],
            strides=[stride, stride],
            pads=[pad] * 4,
        )

    def model(
        self, inputs: list[onnx.ValueInfoProto], outputs: list[onnx.ValueInfoProto], name: str
    ) -> onnx.ModelProto:
        graph = helper.make_graph(self.nodes, name, inputs, outputs, initializer=self.inits)
        model = helper.make_model(
            graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="lora-builder"
        )
        model.ir_version = 8  # readable by every onnxruntime still in use
        onnx.checker.check_model(model)
        return model


def scrfd_model(seed: int, width: int = 32) -> onnx.ModelProto:
    """SCRFD's signature with random weights."""
    g = _Graph(seed)
    x = g.op("Relu", [g.conv("input.1", 3, width // 2, 3, 2)])
    x = g.op("Relu", [g.conv(x, width // 2, width, 3, 2)])
    levels = []
    for _ in SCRFD_STRIDES:
        x = g.op("Relu", [g.conv(x, width, width, 3, 2)])
        levels.append(x)
    outputs: dict[str, list[str]] = {"score": [], "bbox": [], "kps": []}
    for feat, stride in zip(levels, SCRFD_STRIDES, strict=True):
        for kind, per_anchor in (("score", 1), ("bbox", 4), ("kps", 10)):
            score = kind == "score"
            y = g.conv(
                feat,
                width,
                SCRFD_ANCHORS * per_anchor,
                1,
                1,
                bias=SCRFD_SCORE_BIAS if score else 0.0,
                gain=SCRFD_SCORE_GAIN if score else 1.0,
            )
            if score:
                y = g.op("Sigmoid", [y])
            elif kind == "bbox":
                y = g.op("Softplus", [y])  # distances to the box sides are positive
            y = g.op(
                "Transpose", [y], perm=[0, 2, 3, 1]
            )  # (1, h, w, anchors * k): anchor-major per cell
            shape = g.const(np.array([-1, per_anchor], np.int64), "shape")
            outputs[kind].append(g.op("Reshape", [y, shape], output=f"{kind}_{stride}"))
    names = outputs["score"] + outputs["bbox"] + outputs["kps"]
    widths = [1] * 3 + [4] * 3 + [10] * 3
    inp = helper.make_tensor_value_info("input.1", TensorProto.FLOAT, [1, 3, "height", "width"])
    outs = [
        helper.make_tensor_value_info(n, TensorProto.FLOAT, [f"n_{n}", k])
        for n, k in zip(names, widths, strict=True)
    ]
    return g.model([inp], outs, "scrfd_random")


def arcface_model(seed: int, size: int = 112, dim: int = 512) -> onnx.ModelProto:
    """An ArcFace recognition net's signature (square ``size`` input, ``dim`` output) with random weights."""
    g = _Graph(seed)
    x = "input.1"
    for cin, cout in ((3, 16), (16, 32), (32, 64)):
        x = g.op("Relu", [g.conv(x, cin, cout, 3, 2)])
    x = g.op("Flatten", [g.op("GlobalAveragePool", [x])])
    w = g.rng.normal(0.0, np.sqrt(1.0 / 64), size=(dim, 64)).astype(np.float32)
    out = g.op(
        "Gemm",
        [x, g.const(w, "fc"), g.const(np.zeros(dim, np.float32), "fc_bias")],
        output="fc1",
        transB=1,
    )
    inp = helper.make_tensor_value_info("input.1", TensorProto.FLOAT, ["batch", 3, size, size])
    return g.model(
        [inp],
        [helper.make_tensor_value_info(out, TensorProto.FLOAT, ["batch", dim])],
        "arcface_random",
    )


def save(model: onnx.ModelProto, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path
