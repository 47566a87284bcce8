"""The Face record every stage passes along."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Face:
    box: np.ndarray  # (4,) float32: x1, y1, x2, y2 in image pixels
    score: float  # detector confidence in [0, 1]
    kps: np.ndarray  # (5, 2) float32, insightface order: left eye, right eye, nose, left mouth, right mouth
    landmarks: np.ndarray | None = None  # (68, 2) dense landmarks where the backend has them
    embedding: np.ndarray | None = None  # L2-normalised judge embedding

    @property
    def size(self) -> float:
        """Shorter side of the box: what the face-size filter compares."""
        return float(min(self.box[2] - self.box[0], self.box[3] - self.box[1]))

    @property
    def area(self) -> float:
        return float((self.box[2] - self.box[0]) * (self.box[3] - self.box[1]))
