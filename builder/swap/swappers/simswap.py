"""SimSwap 256 (neuralchen; FaceFusion's ``simswap_256.onnx``, models-3.0.0) with FaceFusion's
CrossFace embedding converter (``crossface_simswap.onnx``, models-3.4.0), through onnxruntime.

Everything it does to pixels, as FaceFusion does it (``face_swapper/core.py``, type ``simswap``):

- crop: 256 px on ``arcface_112_v1``, insightface 0.2.1's frontal template, SimSwap's own.
- target: BGR -> RGB, (x / 255 - ImageNet mean) / ImageNet std, NCHW float32, input ``target``.
- source: the raw ArcFace w600k_r50 embedding through the converter (input ``input``, (N, 512)),
  which maps it into the identity space SimSwap was trained on, then L2-normalised, input
  ``source``. Several source photos: FaceFusion averages the raw embeddings; here, as for GHOST,
  their directions are averaged on the unit sphere and rescaled to their mean norm, so one
  high-contrast photo does not outvote the rest and the converter still gets raw-scale input.
- output: clip to [0, 1] (SimSwap's output is not in its input's normalised range), x 255,
  RGB -> BGR (rounded).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from builder.config import Config
from builder.faces.identity import average_raw_identity, normalise
from builder.swap.swappers import random_onnx
from builder.swap.swappers.onnx_common import (
    EMBEDDING_SIZE,
    RECOGNIZER_PACK,
    OnnxSwapper,
    Port,
    check_raw,
    model_files,
    no_options,
    open_session,
    open_swapper,
)

NAMES = ("simswap_256",)
CONVERTER = "crossface_simswap"
CROP_SIZE = 256
TEMPLATE = "arcface_112_v1"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass
class SimSwap(OnnxSwapper):
    converter: Any  # onnxruntime session of crossface_simswap.onnx

    def identity(self, raw: np.ndarray) -> np.ndarray:
        mean = average_raw_identity(check_raw(raw))
        converted = self.converter.run(None, {"input": mean[None]})[0]
        return normalise(converted)


def weights(cfg: Config, name: str) -> list[str]:
    return [name, CONVERTER, RECOGNIZER_PACK]


def load(cfg: Config, device: torch.device, name: str = "simswap_256", **options: str) -> SimSwap:
    no_options(name, options)
    stand_ins = {name: random_onnx.simswap_model, CONVERTER: random_onnx.converter_model}
    with model_files(cfg, stand_ins) as paths:
        path = paths[name]
        session = open_swapper(path, device, name, CROP_SIZE)
        converter = open_session(
            paths[CONVERTER], device, CONVERTER, [Port("input", (None, EMBEDDING_SIZE))], (None, EMBEDDING_SIZE)
        )
    return SimSwap.on(
        cfg, session, path, name=name, crop_size=CROP_SIZE, template=TEMPLATE,
        mean=IMAGENET_MEAN, std=IMAGENET_STD, denormalise=False, converter=converter,
    )
