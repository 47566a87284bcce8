"""Loss masks for sd-scripts' ``masked_loss``: where the training loss counts, per pixel.

sd-scripts reads one mask per training image from the subset's ``conditioning_data_dir``
(same file name, R channel, 255 = full weight; docs/masked_loss_README.md). Ours:

- the character (the person the face belongs to) at 1.0: the segmenter's person components that
  hold the face, joined with the face region of the parsing map the paste-back already used;
- other people the segmenter separates from the character (a component holding another
  detected face), and other detected faces inside the character's component, at
  ``dataset.mask_others``;
- everything else at ``dataset.mask_background``.

The character is grown by ``dataset.mask_dilate`` px (at least 8): sd-scripts shrinks the mask to
latent resolution (1/8), where a tight edge would cut into the hair and the outline.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from builder.config import DatasetConfig
from builder.errors import BuilderError
from builder.faces import align

PERSON_LEVEL = 0.5  # matte value above which a pixel is a person's


class MaskRefused(BuilderError):
    """A mask that would train (almost) nothing but background."""


def face_region(shape: tuple[int, ...], m_ffhq: np.ndarray, paste_mask: np.ndarray) -> np.ndarray:
    """The paste mask (FFHQ-crop space: the parsing map's face, or the box fallback) in the photo."""
    canvas = np.zeros(shape[:2], np.float32)
    crop = np.ones(paste_mask.shape[:2], np.float32)
    return align.paste_back(canvas, crop, m_ffhq, paste_mask.astype(np.float32))


def _box_mask(shape: tuple[int, ...], box: np.ndarray) -> np.ndarray:
    h, w = shape[:2]
    x0, y0, x1, y1 = (float(v) for v in np.asarray(box).ravel()[:4])
    out = np.zeros((h, w), bool)
    out[max(0, round(y0)) : max(0, min(h, round(y1))), max(0, round(x0)) : max(0, min(w, round(x1)))] = True
    return out


def _centre(box: np.ndarray, shape: tuple[int, ...]) -> tuple[int, int]:
    x0, y0, x1, y1 = (float(v) for v in np.asarray(box).ravel()[:4])
    h, w = shape[:2]
    return min(max(int((y0 + y1) / 2), 0), h - 1), min(max(int((x0 + x1) / 2), 0), w - 1)


def _disc(radius: int) -> np.ndarray:
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))


def compose_mask(
    matte: np.ndarray,
    face: np.ndarray,
    character_box: np.ndarray,
    other_boxes: Sequence[np.ndarray],
    d: DatasetConfig,
) -> np.ndarray:
    """uint8 (H, W) loss mask (255 = weight 1) from the segmenter's matte and the face region.

    Raises MaskRefused when the character covers less than ``dataset.mask_min_person`` of it.
    """
    shape = matte.shape
    own_face = face > 0.5
    person = (matte > PERSON_LEVEL) | own_face
    _, labels = cv2.connectedComponents(person.astype(np.uint8), connectivity=8)
    character_ids = set(np.unique(labels[own_face]).tolist())
    cy, cx = _centre(character_box, shape)
    character_ids.add(int(labels[cy, cx]))
    character_ids.discard(0)
    character = np.isin(labels, sorted(character_ids)) if character_ids else np.zeros(shape, bool)
    share = float(character.mean())
    if share < d.mask_min_person:
        raise MaskRefused(
            f"mask is all background: the segmenter found no person at the face and the face parsing no face "
            f"({share:.1%} of the image is the character, dataset.mask_min_person {d.mask_min_person:.1%})"
        )
    others = np.zeros(shape, bool)
    for box in other_boxes:
        oy, ox = _centre(box, shape)
        label = int(labels[oy, ox])
        if label and label not in character_ids:
            others |= labels == label  # a person of their own: the whole of them
        others |= _box_mask(shape, box)  # touching the character: at least their face
    grown = cv2.dilate(character.astype(np.uint8), _disc(d.mask_dilate)) > 0
    weight = np.full(shape, d.mask_background, np.float32)
    weight[grown] = 1.0
    weight[others & ~own_face] = d.mask_others
    return np.rint(weight * 255.0).astype(np.uint8)
