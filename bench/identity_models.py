"""Swap and restore models that return their input.

They isolate what the pipeline's geometry does to the pixels: with them, any change to
the face region comes from warps and paste-back alone (the PSNR comparison of the
fused and chained passes). Never used by the product.
"""

from __future__ import annotations

import numpy as np

from builder.faces import align
from builder.swap.fused import FusedPass
from builder.swap.source import SourceIdentity


class IdentitySwapper:
    name = "identity"
    crop_size = 256

    def alignment(self, kps: np.ndarray) -> np.ndarray:
        return align.ghost_alignment(kps, self.crop_size)

    def embed_source(self, image: np.ndarray, kps: np.ndarray) -> np.ndarray:
        return np.ones(512, dtype=np.float32)

    def identity(self, raw: np.ndarray) -> np.ndarray:
        return np.asarray(raw, dtype=np.float32).mean(axis=0)

    def swap(self, crops: np.ndarray, identity: np.ndarray) -> np.ndarray:
        return crops.copy()


class IdentityRestorer:
    name = "identity"
    template = "ffhq"

    def restore(self, crops: np.ndarray) -> np.ndarray:
        return crops.copy()


def fixed_source(fused: FusedPass, vector: np.ndarray) -> SourceIdentity:
    """The same conditioning vector for every swapper of ``fused``, and no judge embedding."""
    return SourceIdentity({s.name: vector for s in fused.swappers}, None)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10.0 * np.log10(255.0**2 / mse)


def face_region(image: np.ndarray, box: np.ndarray) -> tuple[slice, slice]:
    h, w = image.shape[:2]
    x0, y0, x1, y1 = (int(np.rint(v)) for v in box)
    return slice(max(y0, 0), min(y1, h)), slice(max(x0, 0), min(x1, w))
