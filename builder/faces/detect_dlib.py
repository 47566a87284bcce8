"""dlib backend: HOG frontal detector + the 68-point predictor, reduced to insightface's 5 points.

It needs no download (the models ship in the ``face-recognition-models`` wheel) and runs on
CPU, so it gives tests and GPU-less users real detections on real photos. Its boxes are
HOG's tight squares (brows to chin), somewhat smaller than SCRFD's.
"""

from __future__ import annotations

import functools
import importlib.util
import math
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from builder.config import Config
from builder.errors import BuilderError
from builder.faces.detect import largest_first
from builder.faces.types import Face

# The HOG detector's SVM margin m becomes a score sigmoid(SCORE_SLOPE * m): dlib's own
# threshold (m = 0) maps to 0.5, the default faces.det_threshold, and a clear frontal face
# (m ~ 1.2, the median on the donor photos here) to about 0.9.
SCORE_SLOPE = 2.0
# HOG finds faces of about 80 px and up; a photo whose working copy is shorter than this
# on its long side is upsampled once so faces down to about 40 px are found.
UPSAMPLE_BELOW = 700


def model_file(filename: str) -> Path:
    """A model shipped in the face-recognition-models wheel.

    Found through the package's location rather than its ``*_location()`` helpers, which
    import ``pkg_resources`` (setuptools), absent from modern virtualenvs.
    """
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise BuilderError(
            "the dlib backend needs the face-recognition-models package: "
            "pip install face-recognition-models==0.3.0 dlib-bin"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "models" / filename
    if not path.is_file():
        raise BuilderError(
            f"{path} is missing from the face-recognition-models package; reinstall it"
        )
    return path


def _dlib() -> Any:
    try:
        import dlib
    except ImportError:
        raise BuilderError("the dlib backend needs dlib: pip install dlib-bin") from None
    return dlib


@functools.cache
def shape_predictor() -> Any:
    return _dlib().shape_predictor(str(model_file("shape_predictor_68_face_landmarks.dat")))


@functools.cache
def hog_detector() -> Any:
    return _dlib().get_frontal_face_detector()


def score_from_margin(margin: float) -> float:
    return 1.0 / (1.0 + math.exp(-SCORE_SLOPE * margin))


def margin_from_score(score: float) -> float:
    score = min(max(score, 1e-6), 1.0 - 1e-6)
    return math.log(score / (1.0 - score)) / SCORE_SLOPE


def five_from_68(landmarks: np.ndarray) -> np.ndarray:
    """insightface's 5 points from iBUG-68: eye centres (means of 36-41 and 42-47), nose tip 30,
    mouth corners 48 and 54, in image-left to image-right order."""
    lm = np.asarray(landmarks, dtype=np.float32)
    return np.stack(
        [lm[36:42].mean(axis=0), lm[42:48].mean(axis=0), lm[30], lm[48], lm[54]]
    ).astype(np.float32)


def predict_landmarks(image_rgb: np.ndarray, box: np.ndarray) -> np.ndarray:
    """The 68 iBUG landmarks inside ``box`` (x1, y1, x2, y2) of a contiguous uint8 RGB image."""
    dlib = _dlib()
    x1, y1, x2, y2 = (round(float(v)) for v in box)
    # dlib rectangles are inclusive of their right and bottom pixels.
    shape = shape_predictor()(image_rgb, dlib.rectangle(x1, y1, x2 - 1, y2 - 1))
    return np.array([[p.x, p.y] for p in shape.parts()], dtype=np.float32)


def to_rgb(image_bgr: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(image_bgr[:, :, ::-1])


class DlibDetector:
    name = "dlib"

    def __init__(self, cfg: Config) -> None:
        self.max_side = cfg.faces.dlib_max_side
        self.max_faces = cfg.faces.max_faces
        self.adjust_threshold = margin_from_score(cfg.faces.det_threshold)
        hog_detector()
        shape_predictor()

    def detect(self, image_bgr: np.ndarray) -> list[Face]:
        rgb = to_rgb(image_bgr)
        h, w = rgb.shape[:2]
        # HOG runs on a copy at most max_side long (its cost grows with the pixel count);
        # the landmarks are then fitted on the full-resolution photo.
        scale = min(1.0, self.max_side / max(h, w))
        work = (
            rgb
            if scale == 1.0
            else cv2.resize(rgb, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_AREA)
        )
        upsample = 1 if max(work.shape[:2]) < UPSAMPLE_BELOW else 0
        rects, margins, _ = hog_detector().run(
            np.ascontiguousarray(work), upsample, self.adjust_threshold
        )
        faces = []
        for rect, margin in zip(rects, margins, strict=True):
            box = (
                np.array([rect.left(), rect.top(), rect.right() + 1, rect.bottom() + 1], np.float32)
                / scale
            )
            landmarks = predict_landmarks(rgb, box)
            faces.append(
                Face(
                    box=box,
                    score=score_from_margin(margin),
                    kps=five_from_68(landmarks),
                    landmarks=landmarks,
                )
            )
        return largest_first(faces)[: self.max_faces]
