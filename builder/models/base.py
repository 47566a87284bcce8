"""The tiny interfaces every model sits behind: load once, run on a batch.

Images cross these interfaces as uint8 BGR arrays shaped (N, H, W, 3), the way
OpenCV reads them; each model converts to its own tensor layout and range inside.
Backends are picked by name from the registries in builder.swap.*, never by if-chains.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np


class Swapper(Protocol):
    crop_size: int  # side of the square crop the generator takes

    def alignment(self, kps: np.ndarray) -> np.ndarray:
        """(5, 2) image landmarks -> (2, 3) affine from the image into this swapper's crop."""
        ...

    def embed_source(self, crops: np.ndarray) -> np.ndarray:
        """(N, crop, crop, 3) aligned source crops -> (N, 512) raw identity vectors of the swapper's own ArcFace."""
        ...

    def swap(self, crops: np.ndarray, identity: np.ndarray) -> np.ndarray:
        """(N, crop, crop, 3) aligned donor crops + (512,) identity -> swapped crops, same shape."""
        ...


class Restorer(Protocol):
    def restore(self, crops: np.ndarray) -> np.ndarray:
        """(N, 512, 512, 3) FFHQ-aligned crops -> restored crops, same shape."""
        ...


class FaceParser(Protocol):
    def parse(self, crops: np.ndarray) -> np.ndarray:
        """(N, 512, 512, 3) FFHQ-aligned crops -> (N, 512, 512) uint8 labels in BiSeNet numbering."""
        ...
