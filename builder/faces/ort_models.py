"""insightface's SCRFD detector and ArcFace recognizer ONNX files, run by our own small code.

What insightface's ``model_zoo`` does around the two graphs, written out here so that
insightface (whose requirements pull in the CPU onnxruntime and ``opencv-python``) is
not needed at run time; the tests check these outputs equal insightface's own:
- SCRFD (``model_zoo/scrfd.py``): the photo letterboxed into the top-left of the input
  (bilinear resize keeping the aspect, zero padding), ``(RGB - 127.5) / 128``; per stride,
  anchor centres on the feature grid (``_num_anchors`` per cell), boxes and five points
  decoded as distances times the stride (``distance2bbox`` / ``distance2kps``), a score
  threshold, then insightface's NMS (IoU 0.4, areas counted with its +1).
- ArcFace (``model_zoo/arcface_onnx.py``): ``(RGB - 127.5) / 127.5`` on the aligned crop, or
  raw pixels for the old mxnet exports whose graph starts with its own Sub and Mul.
- Which is which, as ``model_zoo.get_model`` routes them: five or more outputs is a
  detector; one output on a square input of at least 112 px, a multiple of 16, a recognizer.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import cv2
import numpy as np
import onnx

from builder import ort
from builder.errors import BuilderError

DETECTION = "detection"
RECOGNITION = "recognition"
NMS_IOU = 0.4
# outputs -> (strides, anchors per cell, has landmarks): SCRFD's export variants.
SCRFD_LAYOUTS: dict[int, tuple[tuple[int, ...], int, bool]] = {
    6: ((8, 16, 32), 2, False),
    9: ((8, 16, 32), 2, True),
    10: ((8, 16, 32, 64, 128), 1, False),
    15: ((8, 16, 32, 64, 128), 1, True),
}


def _fixed_size(shape: list[Any]) -> tuple[int, int] | None:
    """(width, height) where an NCHW input fixes both, else None."""
    h, w = shape[2:4]
    return (w, h) if isinstance(w, int) and isinstance(h, int) and w > 0 and h > 0 else None


def anchor_centres(height: int, width: int, stride: int, anchors: int) -> np.ndarray:
    """(height * width * anchors, 2) x, y centres in input pixels, row-major, anchors per cell adjacent."""
    centres = (np.stack(np.mgrid[:height, :width][::-1], axis=-1).astype(np.float32) * stride).reshape(-1, 2)
    return np.repeat(centres, anchors, axis=0)


def distance2bbox(points: np.ndarray, distance: np.ndarray) -> np.ndarray:
    """Distances to the left, top, right, bottom sides -> x1, y1, x2, y2."""
    return np.concatenate([points - distance[:, :2], points + distance[:, 2:4]], axis=1)


def distance2kps(points: np.ndarray, distance: np.ndarray) -> np.ndarray:
    """(N, 2K) offsets from each point -> (N, K, 2) landmarks."""
    return points[:, None, :] + distance.reshape(len(distance), -1, 2)


def nms(dets: np.ndarray, iou: float = NMS_IOU) -> list[int]:
    """insightface's greedy NMS over (x1, y1, x2, y2, score) rows; indices kept, best first."""
    x1, y1, x2, y2, scores = (dets[:, i] for i in range(5))
    areas = (x2 - x1 + 1) * (y2 - y1 + 1)
    order = np.argsort(-scores, kind="stable")
    keep: list[int] = []
    while order.size:
        i, rest = order[0], order[1:]
        keep.append(int(i))
        w = np.maximum(0.0, np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]) + 1)
        h = np.maximum(0.0, np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]) + 1)
        inter = w * h
        order = rest[inter / (areas[i] + areas[rest] - inter) <= iou]
    return keep


class Scrfd:
    """An SCRFD detector graph: ``detect(image_bgr)`` -> (N, 5) boxes with scores, (N, 5, 2) points."""

    taskname = DETECTION

    def __init__(self, path: Path, session: Any, det_size: int, det_thresh: float) -> None:
        self.model_file = str(path)
        self.session = session
        outputs = session.get_outputs()
        if len(outputs) not in SCRFD_LAYOUTS:
            raise BuilderError(f"{path}: {len(outputs)} outputs; an SCRFD graph has 6, 9, 10 or 15")
        self.strides, self.anchors, self.use_kps = SCRFD_LAYOUTS[len(outputs)]
        self.batched = len(outputs[0].shape) == 3
        first = session.get_inputs()[0]
        self.input_name = first.name
        self.output_names = [o.name for o in outputs]
        # A graph exported at a fixed size is run at that size, as insightface does.
        self.input_size = _fixed_size(first.shape) or (det_size, det_size)
        self.det_thresh = det_thresh

    def letterbox(self, image_bgr: np.ndarray) -> tuple[np.ndarray, float]:
        """The photo resized into the input's top-left corner, and its scale."""
        in_w, in_h = self.input_size
        ratio = image_bgr.shape[0] / image_bgr.shape[1]
        if ratio > in_h / in_w:
            new_h, new_w = in_h, int(in_h / ratio)
        else:
            new_w, new_h = in_w, int(in_w * ratio)
        canvas = np.zeros((in_h, in_w, 3), np.uint8)
        canvas[:new_h, :new_w] = cv2.resize(image_bgr, (new_w, new_h))
        return canvas, new_h / image_bgr.shape[0]

    def forward(self, canvas: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Scores, boxes and points (input pixels) of every anchor at or above the threshold."""
        blob = np.ascontiguousarray(((canvas[..., ::-1].astype(np.float32) - 127.5) / 128.0).transpose(2, 0, 1)[None])
        outs = self.session.run(self.output_names, {self.input_name: blob})
        if self.batched:
            outs = [o[0] for o in outs]
        n = len(self.strides)
        scores, boxes, points = [], [], []
        for i, stride in enumerate(self.strides):
            centres = anchor_centres(blob.shape[2] // stride, blob.shape[3] // stride, stride, self.anchors)
            hit = np.where(outs[i] >= self.det_thresh)[0]
            scores.append(outs[i][hit])
            boxes.append(distance2bbox(centres, outs[i + n] * stride)[hit])
            if self.use_kps:
                points.append(distance2kps(centres, outs[i + 2 * n] * stride)[hit])
        kps = np.concatenate(points) if self.use_kps else np.empty((0, 5, 2), np.float32)
        return np.concatenate(scores).reshape(-1), np.concatenate(boxes), kps

    def detect(self, image_bgr: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        canvas, scale = self.letterbox(image_bgr)
        scores, boxes, kps = self.forward(canvas)
        order = np.argsort(-scores, kind="stable")
        dets = np.hstack([boxes / scale, scores[:, None]]).astype(np.float32)[order]
        keep = nms(dets)
        if not self.use_kps:
            return dets[keep], None
        return dets[keep], (kps / scale)[order][keep]


class ArcFace:
    """An ArcFace recognition graph: ``get_feat(crops)`` -> raw (N, D) embeddings."""

    taskname = RECOGNITION

    def __init__(self, path: Path, session: Any, graph: onnx.GraphProto) -> None:
        self.model_file = str(path)
        self.session = session
        names = [node.name for node in graph.node[:8]]
        mxnet = any(n.startswith(("Sub", "_minus")) for n in names) and any(n.startswith(("Mul", "_mul")) for n in names)
        # The mxnet exports normalise inside the graph.
        self.input_mean, self.input_std = (0.0, 1.0) if mxnet else (127.5, 127.5)
        first = session.get_inputs()[0]
        self.input_name = first.name
        self.output_names = [o.name for o in session.get_outputs()]
        self.input_size = (first.shape[3], first.shape[2])

    def get_feat(self, crops: np.ndarray | list[np.ndarray]) -> np.ndarray:
        """Raw embeddings of uint8 BGR crops at the input size (one (S, S, 3) or a list)."""
        batch = np.stack(crops if isinstance(crops, list) else [crops])
        if batch.shape[1:3] != self.input_size[::-1]:
            raise BuilderError(
                f"{self.model_file}: takes {self.input_size[0]} px crops, got {batch.shape[2]}x{batch.shape[1]}"
            )
        blob = (batch[..., ::-1].astype(np.float32) - self.input_mean) / self.input_std
        return self.session.run(self.output_names, {self.input_name: np.ascontiguousarray(blob.transpose(0, 3, 1, 2))})[0]


def kind_of(session: Any) -> str | None:
    """What ``model_zoo.get_model`` would make of a graph (None: neither)."""
    outputs, shape = session.get_outputs(), session.get_inputs()[0].shape
    if len(outputs) >= 5:
        return DETECTION
    h, w = shape[2:4]
    if len(outputs) == 1 and isinstance(h, int) and h == w and h >= 112 and h % 16 == 0:
        return RECOGNITION
    return None


def load(path: Path, device: str, kind: str, det_size: int = 640, det_thresh: float = 0.5) -> Scrfd | ArcFace:
    """The pack file at ``path`` as a ``kind`` model, on ``ort.providers(device)``."""
    try:
        model = onnx.load(str(path))
    except Exception as exc:  # protobuf's DecodeError and friends
        raise BuilderError(f"{path}: cannot read as an ONNX model ({exc})") from exc
    session = ort.session(path, device)
    got = kind_of(session)
    if got != kind:
        raise BuilderError(f"{path}: not a {kind} model (its inputs and outputs are those of {got or 'neither'})")
    if kind == DETECTION:
        return Scrfd(path, session, det_size, det_thresh)
    return ArcFace(path, session, model.graph)
