"""Thumbnails and face close-ups for the review page, made once and cached in the run folder.

A donor photo lives outside the run folder; the page never gets its path, only the
thumbnail the server made of it under ``review_cache/``. A cached file is made again when
its picture is newer than it.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from builder.faces.align import closeup_box
from builder.io import load_image, write_image

CACHE = "review_cache"
KINDS = ("donor", "result", "donor_face", "result_face")
SIZES = {"donor": 640, "result": 640, "donor_face": 256, "result_face": 256}  # longest side, pixels


def _shrink(image: np.ndarray, longest: int) -> np.ndarray:
    h, w = image.shape[:2]
    scale = longest / max(h, w)
    if scale >= 1:
        return image
    return cv2.resize(image, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)


def thumbnail(run_dir: Path, card_id: str, kind: str, picture: Path, face_box: list[float] | None, max_pixels: int) -> Path:
    """The cached JPEG of ``picture`` (a close-up of ``face_box`` for the *_face kinds)."""
    if kind not in KINDS:
        raise ValueError(f"unknown thumbnail kind {kind!r}")
    cached = Path(run_dir) / CACHE / f"{card_id}_{kind}.jpg"
    if cached.is_file() and cached.stat().st_mtime_ns >= picture.stat().st_mtime_ns:
        return cached
    image = load_image(picture, max_pixels)
    if kind.endswith("_face"):
        if face_box is None:
            raise ValueError("no face box for a close-up")
        x0, y0, x1, y1 = closeup_box(np.asarray(face_box), image.shape)
        image = image[y0:y1, x0:x1]
    write_image(cached, _shrink(image, SIZES[kind]))
    return cached
