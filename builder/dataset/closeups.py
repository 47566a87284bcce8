"""Head-and-shoulders close-ups of results whose face is small in the training frame.

In a full-body photo the face covers a few per cent of the 512 or 1024 px frame sd-scripts
trains on, so the LoRA learns the body better than the face. Such a result also gives a
square crop around the face, cut from the full-resolution pasted-back result at the family's
training resolution: its own training image, caption and loss mask, with a manifest record
that names its parent and its crop box. The geometry is in builder.faces.align.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from builder.config import DatasetConfig
from builder.errors import ConfigError
from builder.faces import align
from builder.faces.types import Face

CLOSEUP_SUFFIX = "#closeup"  # a close-up's manifest key is its parent's key plus this
# A close-up must enlarge the face at least this much over the whole photo in the training
# frame, or it is nearly the photo itself (a small photo, or one already framed on the face).
MIN_GAIN = 1.5
NOT_IN_SHARE = "not in the close-up share (dataset.closeup_share)"
PARENT_REJECTED = "its parent photo is rejected"


@dataclass(frozen=True)
class CloseupPlan:
    """Whether a result gets a close-up; ``box`` (edge coordinates of the photo) when it does."""

    face_fraction: float  # face box side / side of the photo's area square
    box: np.ndarray | None
    size: int  # side of the written close-up: the training resolution
    upscale: float  # size / crop side (> 1: enlarged)
    reason: str  # why there is none; "" when there is one

    @property
    def made(self) -> bool:
        return self.box is not None


def check_config(d: DatasetConfig) -> None:
    """Refuse close-up and mask settings that cannot work, before any photo is touched."""
    if not 0.0 < d.closeup_face_share <= 1.0:
        raise ConfigError(f"dataset.closeup_face_share = {d.closeup_face_share}: must be in (0, 1]")
    if d.closeup_below <= 0.0:
        raise ConfigError(f"dataset.closeup_below = {d.closeup_below}: must be above 0")
    if d.closeup_max_upscale < 1.0:
        raise ConfigError(f"dataset.closeup_max_upscale = {d.closeup_max_upscale}: must be at least 1 (1 = never enlarge)")
    if not 0.0 <= d.closeup_share <= 1.0:
        raise ConfigError(f"dataset.closeup_share = {d.closeup_share}: must be in [0, 1]")
    if d.mask_dilate < 8:
        raise ConfigError(
            f"dataset.mask_dilate = {d.mask_dilate}: at least 8 px, because sd-scripts applies the mask "
            "at latent resolution (1/8), where a thinner margin vanishes"
        )
    for key in ("mask_background", "mask_others", "mask_min_person"):
        value = getattr(d, key)
        if not 0.0 <= value <= 1.0:
            raise ConfigError(f"dataset.{key} = {value}: must be in [0, 1]")


def face_fraction(face_box: np.ndarray, shape: tuple[int, ...]) -> float:
    """The face box's longer side over the side of a square of the photo's area: its share of the
    training frame's side once sd-scripts' bucketing scales the photo to the resolution's area."""
    x0, y0, x1, y1 = (float(v) for v in np.asarray(face_box).ravel()[:4])
    h, w = shape[:2]
    return max(x1 - x0, y1 - y0) / math.sqrt(w * h)


def plan_closeup(face_box: np.ndarray, shape: tuple[int, ...], resolution: int, d: DatasetConfig) -> CloseupPlan:
    fraction = face_fraction(face_box, shape)
    if not d.closeups:
        return CloseupPlan(fraction, None, resolution, 0.0, "close-ups are off (dataset.closeups)")
    if fraction >= d.closeup_below:
        return CloseupPlan(
            fraction, None, resolution, 0.0,
            f"face already large: {fraction:.0%} of the frame (dataset.closeup_below {d.closeup_below:.0%})",
        )
    box = align.head_shoulders_box(face_box, shape, d.closeup_face_share)
    side = float(box[2] - box[0])
    upscale = resolution / side
    if upscale > d.closeup_max_upscale:
        return CloseupPlan(
            fraction, None, resolution, upscale,
            f"too small for a close-up: its {side:.0f} px crop would be enlarged {upscale:.2f}x to {resolution} px "
            f"(dataset.closeup_max_upscale {d.closeup_max_upscale})",
        )
    h, w = shape[:2]
    if math.sqrt(w * h) / side < MIN_GAIN:
        return CloseupPlan(
            fraction, None, resolution, upscale,
            f"a close-up would be nearly the whole photo ({side:.0f} px of {w}x{h})",
        )
    return CloseupPlan(fraction, box, resolution, upscale, "")


def crop_matrix(plan: CloseupPlan) -> np.ndarray:
    if plan.box is None:
        raise ValueError("no close-up was planned")
    return align.box_to_square_crop(plan.box, plan.size)


def cut(image: np.ndarray, plan: CloseupPlan) -> np.ndarray:
    """The close-up of ``image`` (the donor photo or its result): same box, same resampling."""
    return align.warp(image, crop_matrix(plan), plan.size, border="replicate")


def face_in_crop(face: Face, plan: CloseupPlan) -> Face:
    """The donor face as it sits in the close-up, so the crop is scored like any result."""
    assert plan.box is not None
    m = crop_matrix(plan)
    return Face(
        box=align.edge_box_in_crop(face.box, plan.box, plan.size).astype(np.float32),
        score=face.score,
        kps=align.transform_points(m, face.kps).astype(np.float32),
        landmarks=None if face.landmarks is None else align.transform_points(m, face.landmarks).astype(np.float32),
        embedding=face.embedding,
    )


def closeup_key(parent_key: str) -> str:
    return parent_key + CLOSEUP_SUFFIX


def allowed_closeups(full_images: int, share: float) -> int:
    """How many close-ups ``full_images`` training photos take so close-ups are at most ``share``
    of the training images: c <= share * (n + c)."""
    if share >= 1.0:
        return 10**9
    return math.floor(share * full_images / (1.0 - share) + 1e-9)
