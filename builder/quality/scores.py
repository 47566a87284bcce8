"""Measured scores of one swapped result: the numbers every filter decision is made from.

All functions here are pure (arrays in, numbers out). ``score_result`` gathers them into a
``Scores`` record that goes into the manifest as JSON.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Protocol

import cv2
import numpy as np

from builder.faces.identity import cosine
from builder.faces.pose import head_pose
from builder.faces.types import Face

# Face regions are resized to this square before the Laplacian, so a sharpness number
# means the same on a 4000 px photo and on a 600 px one.
BLUR_SIZE = 128
# A re-detected face counts as "where the swap was" when its box overlaps the swap box this much.
REDETECT_IOU = 0.4
# The re-detection looks at the swap box grown by this share of its size on each side:
# enough context for the detector, far less work than the whole photo.
REDETECT_MARGIN = 0.75


class Detector(Protocol):
    def detect(self, image_bgr: np.ndarray) -> list[Face]: ...


class Judge(Protocol):
    name: str

    def embed(self, image_bgr: np.ndarray, face: Face) -> np.ndarray: ...


@dataclass
class Scores:
    """Every measurement of one donor photo and its result; ``None`` where not measured."""

    face_found: bool = True
    det_score: float | None = None  # detector confidence of the donor face
    face_px: float | None = None  # shorter side of the donor face box, pixels
    blur_donor: float | None = None  # Laplacian variance of the donor face (BLUR_SIZE square)
    blur_result: float | None = None  # the same on the result
    blur_ratio: float | None = None  # blur_result / blur_donor
    source_similarity: float | None = None  # judge cosine of the result to the source identity
    donor_similarity: float | None = None  # judge cosine of the result to the donor's own face
    yaw: float | None = None  # degrees, from the landmarks
    pitch: float | None = None
    redetect_faces: int | None = None  # faces found on the result overlapping the swap box
    redetect_score: float | None = None  # best detector confidence among them
    redetect_iou: float | None = None  # best overlap with the swap box
    phash: str | None = None  # 64-bit DCT perceptual hash of the result, hex
    judge: str | None = None  # which recognition net measured the similarities (their scale differs)
    # The same two cosines by faces.report_judge: what is reported, never what is selected by.
    report_source_similarity: float | None = None
    report_donor_similarity: float | None = None
    report_judge: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: a NaN (a pose the landmarks could not give) is written as null."""
        return {
            k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in dataclasses.asdict(self).items()
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Scores:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


def face_gray(image_bgr: np.ndarray, box: np.ndarray, size: int = BLUR_SIZE) -> np.ndarray:
    """The face box (clipped to the image) in grayscale, resized to ``size`` x ``size``."""
    h, w = image_bgr.shape[:2]
    x1, y1, x2, y2 = np.asarray(box, dtype=np.float64)
    x1, y1 = max(0, int(np.floor(x1))), max(0, int(np.floor(y1)))
    x2, y2 = min(w, int(np.ceil(x2))), min(h, int(np.ceil(y2)))
    if x2 - x1 < 2 or y2 - y1 < 2:
        raise ValueError(f"face box {box} lies outside the {w}x{h} image")
    crop = image_bgr[y1:y2, x1:x2]
    gray = cv2.cvtColor(crop, cv2.COLOR_BGR2GRAY) if crop.ndim == 3 else crop
    # INTER_AREA when shrinking averages the pixels instead of aliasing, which would fake sharpness.
    interp = cv2.INTER_AREA if (x2 - x1) > size else cv2.INTER_CUBIC
    return cv2.resize(gray, (size, size), interpolation=interp)


def laplacian_variance(image_bgr: np.ndarray, box: np.ndarray, size: int = BLUR_SIZE) -> float:
    """Variance of the Laplacian of the face region: high when sharp, near zero when blurred."""
    gray = face_gray(image_bgr, box, size).astype(np.float64)
    return float(cv2.Laplacian(gray, cv2.CV_64F, ksize=1).var())


def box_iou(a: np.ndarray, b: np.ndarray) -> float:
    ax1, ay1, ax2, ay2 = (float(v) for v in a)
    bx1, by1, bx2, by2 = (float(v) for v in b)
    iw = max(0.0, min(ax2, bx2) - max(ax1, bx1))
    ih = max(0.0, min(ay2, by2) - max(ay1, by1))
    inter = iw * ih
    union = (ax2 - ax1) * (ay2 - ay1) + (bx2 - bx1) * (by2 - by1) - inter
    return inter / union if union > 0 else 0.0


def phash(image_bgr: np.ndarray, hash_size: int = 8, highfreq_factor: int = 4) -> str:
    """DCT perceptual hash (the imagehash ``phash`` recipe), 64 bits as 16 hex digits.

    Grayscale, shrink to 32x32, 2-D DCT, keep the 8x8 lowest frequencies, one bit per
    coefficient: above the median or not. Resizing, recompression and small colour
    changes move few bits; a different photo moves about half of them.
    """
    n = hash_size * highfreq_factor
    gray = cv2.cvtColor(image_bgr, cv2.COLOR_BGR2GRAY) if image_bgr.ndim == 3 else image_bgr
    small = cv2.resize(gray, (n, n), interpolation=cv2.INTER_AREA).astype(np.float64)
    low = cv2.dct(small)[:hash_size, :hash_size]
    bits = (low > np.median(low)).flatten()
    return f"{int(''.join('1' if b else '0' for b in bits), 2):0{hash_size * hash_size // 4}x}"


def hamming(a: str, b: str) -> int:
    return (int(a, 16) ^ int(b, 16)).bit_count()


def redetect(result_bgr: np.ndarray, box: np.ndarray, detector: Detector) -> tuple[int, float | None, float]:
    """Run the detector around the swap box on the result.

    Returns (faces overlapping the box by at least REDETECT_IOU, best score among them,
    best IoU of any face). This only judges the result; its boxes are never used to align.
    """
    h, w = result_bgr.shape[:2]
    x1, y1, x2, y2 = (float(v) for v in box)
    mx, my = (x2 - x1) * REDETECT_MARGIN, (y2 - y1) * REDETECT_MARGIN
    cx1, cy1 = max(0, int(x1 - mx)), max(0, int(y1 - my))
    cx2, cy2 = min(w, int(np.ceil(x2 + mx))), min(h, int(np.ceil(y2 + my)))
    faces = detector.detect(np.ascontiguousarray(result_bgr[cy1:cy2, cx1:cx2]))
    offset = np.array([cx1, cy1, cx1, cy1], dtype=np.float64)
    overlaps = [(box_iou(np.asarray(f.box, dtype=np.float64) + offset, box), f.score) for f in faces]
    good = [(iou, s) for iou, s in overlaps if iou >= REDETECT_IOU]
    best_iou = max((iou for iou, _ in overlaps), default=0.0)
    best_score = max((s for _, s in good), default=None)
    return len(good), (None if best_score is None else float(best_score)), float(best_iou)


def score_result(
    original_bgr: np.ndarray,
    result_bgr: np.ndarray | None,
    face: Face | None,
    source_identity: np.ndarray | None = None,
    judge: Judge | None = None,
    detector: Detector | None = None,
    donor_embedding: np.ndarray | None = None,
    report_judge: Judge | None = None,
    report_source_identity: np.ndarray | None = None,
) -> Scores:
    """Measure one result against its donor photo.

    ``face`` is the donor face the swap replaced (``None``: the photo had no usable face).
    The judge embeds the result at the donor face's landmarks, because the swap keeps the
    face where it was; ``donor_embedding`` saves re-embedding the original when the caller
    already has it. Scores that need a missing model are left ``None`` and not judged.
    ``report_judge`` measures the same two cosines again for the report; when it is the
    selection judge itself, its numbers are copied rather than computed twice.
    """
    if face is None:
        return Scores(face_found=False, phash=phash(original_bgr))
    result = original_bgr if result_bgr is None else result_bgr
    box = np.asarray(face.box, dtype=np.float64)
    blur_donor = laplacian_variance(original_bgr, box)
    blur_result = laplacian_variance(result, box)
    yaw, pitch = head_pose(face)
    scores = Scores(
        det_score=float(face.score),
        face_px=face.size,
        blur_donor=blur_donor,
        blur_result=blur_result,
        blur_ratio=blur_result / max(blur_donor, 1e-6),
        yaw=float(yaw),
        pitch=float(pitch),
        phash=phash(result),
    )
    if judge is not None:
        scores.judge = judge.name
        result_emb = judge.embed(result, face)
        if source_identity is not None:
            scores.source_similarity = float(cosine(result_emb, source_identity))
        donor = donor_embedding if donor_embedding is not None else judge.embed(original_bgr, face)
        scores.donor_similarity = float(cosine(result_emb, donor))
    if report_judge is not None:
        scores.report_judge = report_judge.name
        if report_judge is judge:
            scores.report_source_similarity, scores.report_donor_similarity = (
                scores.source_similarity, scores.donor_similarity,
            )
        else:
            emb = report_judge.embed(result, face)
            if report_source_identity is not None:
                scores.report_source_similarity = float(cosine(emb, report_source_identity))
            scores.report_donor_similarity = float(cosine(emb, report_judge.embed(original_bgr, face)))
    if detector is not None:
        count, best, iou = redetect(result, box, detector)
        scores.redetect_faces, scores.redetect_score, scores.redetect_iou = count, best, iou
    return scores
