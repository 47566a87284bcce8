"""Masks in FFHQ-crop space, built from the donor's face-parsing map.

All masks are float32 in [0, 1]. They are computed on the donor's ORIGINAL crop:
the swapper keeps the donor's head shape and expression, so the donor's parsing
says where the face, and the mouth, are in the swapped crop too.
"""

from __future__ import annotations

import cv2
import numpy as np


def _feather(mask: np.ndarray, dilate: int, feather: int) -> np.ndarray:
    if dilate > 0:
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * dilate + 1, 2 * dilate + 1))
        mask = cv2.dilate(mask, kernel)
    elif dilate < 0:
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (-2 * dilate + 1, -2 * dilate + 1))
        mask = cv2.erode(mask, kernel)
    if feather > 0:
        k = 2 * feather + 1
        mask = cv2.GaussianBlur(mask, (k, k), feather / 2.0)
    return np.clip(mask, 0.0, 1.0).astype(np.float32)


def label_mask(labels: np.ndarray, classes: tuple[int, ...], dilate: int = 0, feather: int = 0) -> np.ndarray:
    """Soft mask of the given parsing classes, grown by ``dilate`` px and blurred over ``feather`` px."""
    hard = np.isin(labels, classes).astype(np.float32)
    return _feather(hard, dilate, feather)


def blend(base: np.ndarray, overlay: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """base where mask is 0, overlay where it is 1; uint8 in and out."""
    m = mask[..., None] if mask.ndim == 2 else mask
    out = base.astype(np.float32) * (1.0 - m) + overlay.astype(np.float32) * m
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)
