"""Person segmenters for the loss masks: MODNet through onnxruntime, as FaceFusion runs it.

MODNet (ZHKKKe, Apache-2.0) is FaceFusion's ``modnet`` background remover (``models-3.5.0/
modnet.onnx``). Chosen over BiRefNet portrait (MIT): it is a portrait-matting network (the
person, hair included, is what it was trained to cut out) at 512 px, a ~25 MB graph that runs in
a fraction of a second per photo on a CPU, where BiRefNet takes 1024 px through a Swin backbone
(~900 MB, seconds per photo on a CPU) for edges finer than a loss mask at 1/8 resolution keeps.

Pre- and post-processing are FaceFusion's (background_remover/core.py prepare_temp_frame,
normalize_vision_mask): the photo squashed to 512 x 512 (cv2.resize, bilinear), BGR -> RGB,
``(x / 255 - 0.5) / 0.5``, NCHW float32, input ``input``; the first output squeezed, clipped to
[0, 1] and resized back to the photo. FaceFusion rounds the matte to uint8 before resizing it
back; here it stays float (the loss mask is quantised once, at the end).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import onnx
from onnx import TensorProto, helper

from builder.config import Config
from builder.faces.random_onnx import _Graph
from builder.registry import pick

MODNET = "modnet"
MODNET_SIZE = 512
MODNET_MEAN = (0.5, 0.5, 0.5)
MODNET_STD = (0.5, 0.5, 0.5)
MODNET_INPUT = "input"


def prepare(image: np.ndarray, size: int = MODNET_SIZE) -> np.ndarray:
    """uint8 BGR (H, W, 3) -> float32 (1, 3, size, size), FaceFusion's prepare_temp_frame."""
    x = cv2.resize(image, (size, size))[:, :, ::-1].astype(np.float32) / 255.0
    x = (x - np.asarray(MODNET_MEAN, np.float32)) / np.asarray(MODNET_STD, np.float32)
    return np.ascontiguousarray(x.transpose(2, 0, 1)[None])


def finish(raw: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """The graph's output -> float32 (H, W) matte in [0, 1] at the photo's size."""
    matte = np.clip(np.squeeze(np.asarray(raw, dtype=np.float32)), 0.0, 1.0)
    if matte.ndim != 2:
        raise ValueError(f"a segmenter output squeezes to {matte.shape}, not one (H, W) matte")
    h, w = shape[:2]
    return np.clip(cv2.resize(matte, (w, h)), 0.0, 1.0)


@dataclass
class OnnxSegmenter:
    name: str
    session: Any
    path: Path

    def segment(self, image: np.ndarray) -> np.ndarray:
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"segment takes a uint8 (H, W, 3) BGR image, got {image.dtype} {image.shape}")
        output = self.session.get_outputs()[0].name
        raw = self.session.run([output], {MODNET_INPUT: prepare(image)})[0]
        return finish(raw, image.shape)


def modnet_graph(seed: int) -> onnx.ModelProto:
    """A random-weight stand-in with MODNet's signature as FaceFusion feeds it: ``input``
    (1, 3, 512, 512) float32 -> (1, 1, 512, 512) matte in (0, 1)."""
    g = _Graph(seed)
    x = g.op("Relu", [g.conv(MODNET_INPUT, 3, 8, 3, 1)])
    x = g.op("Relu", [g.conv(x, 8, 8, 3, 1)])
    g.op("Sigmoid", [g.conv(x, 8, 1, 3, 1)], output="output")
    size = MODNET_SIZE
    return g.model(
        [helper.make_tensor_value_info(MODNET_INPUT, TensorProto.FLOAT, [1, 3, size, size])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 1, size, size])],
        "modnet_random",
    )


def _load_modnet(cfg: Config) -> OnnxSegmenter:
    from builder.device import resolve_device
    from builder.swap.swappers.onnx_common import Port, model_files, open_session

    with model_files(cfg, {MODNET: modnet_graph}) as files:
        session = open_session(
            files[MODNET], resolve_device(cfg.runtime.device), "MODNet segmenter",
            [Port(MODNET_INPUT, (None, 3, None, None))], (None, 1, None, None),
        )
        return OnnxSegmenter(MODNET, session, files[MODNET])


# name -> (registry weight files, loader)
SEGMENTERS: dict[str, tuple[tuple[str, ...], Callable[[Config], OnnxSegmenter]]] = {
    MODNET: ((MODNET,), _load_modnet),
}
KEY = "dataset.segmenter"


def weights(cfg: Config) -> list[str]:
    """Registry files the masks need (none with masks off)."""
    return list(pick(SEGMENTERS, cfg.dataset.segmenter, KEY)[0]) if cfg.dataset.masks else []


def load_segmenter(cfg: Config) -> OnnxSegmenter:
    return pick(SEGMENTERS, cfg.dataset.segmenter, KEY)[1](cfg)
