"""FaceFusion's HyperSwap 1a / 1b / 1c (``hyperswap_1{a,b,c}_256.onnx``, models-3.3.0), through onnxruntime.

Everything it does to pixels, as FaceFusion does it (``face_swapper/core.py``, type ``hyperswap``):

- crop: 256 px on ``arcface_128`` (FaceFusion's template scaled by 256).
- target: BGR -> RGB, (x / 255 - 0.5) / 0.5, NCHW float32, input ``target``.
- source: the L2-normalised ArcFace w600k_r50 embedding (``embedding_norm``), input ``source``.
  Several source photos: FaceFusion averages the normalised embeddings and stops there, so
  its vector shrinks below unit length as the photos disagree; here the mean is renormalised
  (one photo: the same vector), keeping the length the model sees for a single source.
- output: the first output (the second is a mask, not used: the fused pass has its own),
  x 0.5 + 0.5, clip to [0, 1], x 255, RGB -> BGR (rounded).
"""

from __future__ import annotations

import numpy as np
import torch

from builder.config import Config
from builder.faces.identity import average_identity
from builder.swap.swappers import random_onnx
from builder.swap.swappers.onnx_common import (
    RECOGNIZER_PACK,
    OnnxSwapper,
    check_raw,
    model_files,
    no_options,
    open_swapper,
)

NAMES = ("hyperswap_1a_256", "hyperswap_1b_256", "hyperswap_1c_256")
CROP_SIZE = 256
TEMPLATE = "arcface_128"
MEAN = STD = (0.5, 0.5, 0.5)


class HyperSwap(OnnxSwapper):
    def identity(self, raw: np.ndarray) -> np.ndarray:
        return average_identity(check_raw(raw)).astype(np.float32)


def weights(cfg: Config, name: str) -> list[str]:
    return [name, RECOGNIZER_PACK]


def load(cfg: Config, device: torch.device, name: str = "hyperswap_1a_256", **options: str) -> HyperSwap:
    no_options(name, options)
    with model_files(cfg, {name: random_onnx.hyperswap_model}) as paths:
        path = paths[name]
        session = open_swapper(path, device, name, CROP_SIZE)
    return HyperSwap.on(
        cfg, session, path, name=name, crop_size=CROP_SIZE, template=TEMPLATE, mean=MEAN, std=STD, denormalise=True
    )
