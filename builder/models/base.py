"""The tiny interfaces every model sits behind: load once, run on a batch.

Images cross these interfaces as uint8 BGR arrays shaped (N, H, W, 3), the way
OpenCV reads them; each model converts to its own tensor layout and range inside.
Backends are picked by name from the registries in builder.swap.swappers and
builder.swap.restorers (one module per backend), never by if-chains.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np


class Swapper(Protocol):
    name: str  # its swap.swapper config value
    crop_size: int  # side of the square crop the generator takes

    def alignment(self, kps: np.ndarray) -> np.ndarray:
        """(5, 2) image landmarks -> (2, 3) affine from the image into this swapper's crop."""
        ...

    def embed_source(self, image: np.ndarray, kps: np.ndarray) -> np.ndarray:
        """One source photo and its face's 5 landmarks -> the raw identity vector of the
        recognizer this swapper was trained with (it warps to that recognizer's own crop)."""
        ...

    def identity(self, raw: np.ndarray) -> np.ndarray:
        """(N, D) raw vectors of the source photos -> the one conditioning vector swap() takes;
        how several photos are averaged is the swapper's own rule."""
        ...

    def swap(self, crops: np.ndarray, identity: np.ndarray) -> np.ndarray:
        """(N, crop, crop, 3) aligned donor crops + identity() -> swapped crops, same shape."""
        ...


class Restorer(Protocol):
    name: str  # the spec it was loaded from ("codeformer:w=0.5")
    template: str  # the 512 crop it restores: "ffhq", or "gpen" (builder.faces.align.restorer_alignment)

    def restore(self, crops: np.ndarray) -> np.ndarray:
        """(N, 512, 512, 3) crops aligned to ``template`` -> restored crops, same shape."""
        ...


class FaceParser(Protocol):
    def parse(self, crops: np.ndarray) -> np.ndarray:
        """(N, 512, 512, 3) FFHQ-aligned crops -> (N, 512, 512) uint8 labels in BiSeNet numbering."""
        ...
