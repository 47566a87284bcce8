"""Face detectors behind one small interface: ``make_detector(cfg).detect(image_bgr)``.

Backends register a factory in ``DETECTORS``; each imports its heavy library only when
it is chosen, so a machine without dlib can still run the insightface path and vice versa.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import numpy as np

from builder.config import Config
from builder.faces.types import Face
from builder.registry import pick


class Detector(Protocol):
    name: str

    def detect(self, image_bgr: np.ndarray) -> list[Face]:
        """Every face in a uint8 BGR image, largest box first."""
        ...


def largest_first(faces: list[Face]) -> list[Face]:
    return sorted(faces, key=lambda f: f.area, reverse=True)


def _dlib(cfg: Config) -> Detector:
    from builder.faces.detect_dlib import DlibDetector

    return DlibDetector(cfg)


def _insightface(cfg: Config) -> Detector:
    from builder.faces.detect_insightface import InsightfaceDetector

    return InsightfaceDetector(cfg)


DETECTORS: dict[str, Callable[[Config], Detector]] = {
    "insightface": _insightface,
    "dlib": _dlib,
}


def make_detector(cfg: Config) -> Detector:
    return pick(DETECTORS, cfg.faces.detector, "faces.detector")(cfg)
