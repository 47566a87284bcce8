"""Keep or reject one result from its scores, with a named reason for every failed check."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from builder.config import QualityConfig
from builder.faces.identity import judge_thresholds
from builder.quality.scores import Scores

NO_FACE = "no face"
LOW_DETECTION = "low detection score"
TOO_SMALL = "face too small"
BLURRY = "blurry"
FAR_FROM_SOURCE = "identity too far from source"
DID_NOT_TAKE = "swap did not take (still looks like donor)"
EXTREME_POSE = "extreme pose"
BROKEN = "broken face (re-detection)"
DUPLICATE = "near-duplicate of"  # followed by the better file's name
NOT_IN_BEST = "not in the best N (quality.keep)"


def identity_thresholds(q: QualityConfig, judge: str | None) -> tuple[float, float]:
    """The config's identity thresholds, each falling back to the judge's calibrated one."""
    if q.min_source_similarity is not None and q.max_donor_similarity is not None:
        return q.min_source_similarity, q.max_donor_similarity
    lo, hi = judge_thresholds(judge, "quality.min_source_similarity and quality.max_donor_similarity")
    return (
        lo if q.min_source_similarity is None else q.min_source_similarity,
        hi if q.max_donor_similarity is None else q.max_donor_similarity,
    )


@dataclass
class Decision:
    kept: bool
    reasons: list[str] = field(default_factory=list)

    def reject(self, reason: str) -> None:
        self.kept = False
        self.reasons.append(reason)


def decide(scores: Scores, q: QualityConfig) -> Decision:
    """Every check whose score was measured; all failures are listed, not only the first.

    The blur check compares the result with the donor photo's own face (``blur_ratio``),
    so a soft photo is judged by what the swap did to it, not again for being soft.
    The identity checks use the judge network, never the swapper's own ArcFace, with the
    thresholds of ``identity_thresholds``.
    """
    d = Decision(kept=True)
    if not scores.face_found:
        d.reject(NO_FACE)
        return d
    if scores.det_score is not None and scores.det_score < q.min_det_score:
        d.reject(LOW_DETECTION)
    if scores.face_px is not None and scores.face_px < q.min_face_px:
        d.reject(TOO_SMALL)
    if scores.blur_ratio is not None and scores.blur_ratio < q.max_blur_drop:
        d.reject(BLURRY)
    if scores.source_similarity is not None or scores.donor_similarity is not None:
        min_source, max_donor = identity_thresholds(q, scores.judge)
        if scores.source_similarity is not None and scores.source_similarity < min_source:
            d.reject(FAR_FROM_SOURCE)
        if scores.donor_similarity is not None and (
            scores.donor_similarity > max_donor
            # Whatever the judge's scale: a result closer to the donor than to the source is the donor.
            or (scores.source_similarity is not None and scores.donor_similarity >= scores.source_similarity)
        ):
            d.reject(DID_NOT_TAKE)
    if not _pose_ok(scores, q):
        d.reject(EXTREME_POSE)
    # Only the count: the detector already applied its own threshold, and the score of the
    # same face moves with the crop it is found in (dlib: 0.85 in a photo, 0.57 around the face).
    if scores.redetect_faces is not None and scores.redetect_faces != 1:
        d.reject(BROKEN)
    return d


def _pose_ok(scores: Scores, q: QualityConfig) -> bool:
    # NaN: the landmarks were measured but could not give a pose (collapsed eyes or mouth),
    # which is a broken face geometry. None: not measured, so not judged.
    for angle, limit in ((scores.yaw, q.max_yaw), (scores.pitch, q.max_pitch)):
        if angle is not None and (not math.isfinite(angle) or abs(angle) > limit):
            return False
    return True


def _sharpness(blur: float | None) -> float:
    # log scale: a Laplacian variance of about 30 (mush) gives 0, about 3000 (crisp) gives 1.
    return 0.0 if not blur else min(1.0, max(0.0, (math.log10(blur) - 1.5) / 2.0))


def combined_score(scores: Scores) -> float:
    """The one number ``--keep N`` and the duplicate filter rank results by, in [0, 1].

        0.45 * identity + 0.20 * sharpness + 0.10 * size + 0.10 * detection + 0.15 * frontal

    identity  = judge cosine of the result to the source, clipped to [0, 1];
    sharpness = (log10(Laplacian variance of the result face) - 1.5) / 2, clipped to [0, 1];
    size      = min(1, face_px / 512);
    detection = detector confidence of the donor face;
    frontal   = (1 - |yaw| / 90) * (1 - |pitch| / 90), clipped to [0, 1].
    A score that was not measured contributes 0.
    """
    if not scores.face_found:
        return 0.0
    identity = min(1.0, max(0.0, scores.source_similarity or 0.0))
    size = min(1.0, (scores.face_px or 0.0) / 512.0)
    det = min(1.0, max(0.0, scores.det_score or 0.0))
    frontal = 0.0
    if scores.yaw is not None and scores.pitch is not None and math.isfinite(scores.yaw + scores.pitch):
        frontal = max(0.0, 1 - abs(scores.yaw) / 90) * max(0.0, 1 - abs(scores.pitch) / 90)
    return 0.45 * identity + 0.20 * _sharpness(scores.blur_result) + 0.10 * size + 0.10 * det + 0.15 * frontal


@dataclass
class Assessment:
    """One donor photo's verdict: what the manifest stores under ``quality``."""

    name: str  # file name of the result (or the donor photo when there is none)
    scores: Scores
    decision: Decision

    @property
    def combined(self) -> float:
        return combined_score(self.scores)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kept": self.decision.kept,
            "reasons": list(self.decision.reasons),
            "combined": round(self.combined, 6),
            "scores": self.scores.to_dict(),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Assessment:
        return cls(
            name=data["name"],
            scores=Scores.from_dict(data.get("scores", {})),
            decision=Decision(kept=bool(data["kept"]), reasons=list(data.get("reasons", []))),
        )


def assess(name: str, scores: Scores, q: QualityConfig) -> Assessment:
    return Assessment(name, scores, decide(scores, q))
