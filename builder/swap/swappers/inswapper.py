"""insightface's INSwapper, ``inswapper_128.onnx`` (FaceFusion's models-3.0.0 copy), through onnxruntime.

Everything it does to pixels, as upstream does it (insightface ``model_zoo/inswapper.py``,
FaceFusion ``face_swapper/core.py``):

- crop: 128 px on ``arcface_128``, which is insightface's ``norm_crop2(img, kps, 128)``
  template (tests/test_align_facefusion.py).
- target: BGR -> RGB, / 255 (FaceFusion's mean 0, std 1), NCHW float32, input ``target``.
- source: ArcFace w600k_r50 of buffalo_l, the only recognizer its latents are valid for.
  ``latent = n @ emap / |n @ emap|`` with ``n`` the L2-normalised embedding and ``emap`` the
  graph's last initializer. That is insightface's order. FaceFusion divides by the raw
  embedding's norm before projecting and never renormalises, so its latent keeps the norm
  of ``n @ emap``. insightface's is the reference inference of the model's own authors, the
  code the file was published with. Several source photos: their normalised embeddings are
  averaged on the unit sphere (normalise, mean, renormalise) before the projection, so each
  photo counts the same.
- output: clip to [0, 1], x 255, RGB -> BGR (rounded; upstream truncates).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from onnx import numpy_helper

from builder.config import Config
from builder.errors import BuilderError
from builder.faces.identity import average_identity
from builder.swap.swappers import random_onnx
from builder.swap.swappers.onnx_common import (
    EMBEDDING_SIZE,
    RECOGNIZER_PACK,
    OnnxSwapper,
    check_raw,
    model_files,
    no_options,
    open_swapper,
    read_model,
)

NAMES = ("inswapper_128",)
CROP_SIZE = 128
TEMPLATE = "arcface_128"
WHAT = "inswapper_128"


def read_emap(path: Path) -> np.ndarray:
    """The (512, 512) matrix from ArcFace embeddings to the swapper's latent: the last initializer."""
    inits = read_model(path).graph.initializer
    if not inits:
        raise BuilderError(f"{path}: not the {WHAT} graph: it has no initializers, so no emap")
    emap = numpy_helper.to_array(inits[-1])
    if emap.shape != (EMBEDDING_SIZE, EMBEDDING_SIZE) or not np.issubdtype(emap.dtype, np.floating):
        raise BuilderError(
            f"{path}: not the {WHAT} graph: its last initializer '{inits[-1].name}' is {emap.dtype} "
            f"{emap.shape}, not the ({EMBEDDING_SIZE}, {EMBEDDING_SIZE}) emap"
        )
    return emap.astype(np.float32)


@dataclass
class InSwapper(OnnxSwapper):
    emap: np.ndarray  # (512, 512) float32

    def identity(self, raw: np.ndarray) -> np.ndarray:
        latent = average_identity(check_raw(raw)) @ self.emap
        return (latent / np.linalg.norm(latent)).astype(np.float32)


def weights(cfg: Config, name: str) -> list[str]:
    return [name, RECOGNIZER_PACK]


def load(cfg: Config, device: torch.device, name: str = "inswapper_128", **options: str) -> InSwapper:
    no_options(name, options)
    with model_files(cfg, {name: random_onnx.inswapper_model}) as paths:
        path = paths[name]
        session = open_swapper(path, device, WHAT, CROP_SIZE)
        emap = read_emap(path)
    return InSwapper.on(
        cfg, session, path, name=name, crop_size=CROP_SIZE, template=TEMPLATE,
        mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0), denormalise=False, emap=emap,
    )
