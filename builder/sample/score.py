"""How much each sample looks like the source face, and which epoch looks most like it.

The judge is the recognition network configured in ``[faces] judge`` (not the swapper's own
ArcFace), the same one the dataset filter uses, so "similar" means the same thing in the
dataset and in the samples. The base-model control row shows what a face that is nobody in
particular scores; an epoch is only worth something above that.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from rich.markup import escape

from builder.config import Config
from builder.console import console
from builder.errors import BuilderError, ImageError
from builder.faces.identity import judge_thresholds
from builder.io import list_images, load_image


@dataclass(frozen=True)
class FaceScore:
    face_found: bool
    similarity: float | None  # cosine of the judge embeddings; None where no face was found


@dataclass(frozen=True)
class EpochSummary:
    label: str
    images: int
    faces: int
    mean_similarity: float | None  # over the images where a face was found
    share_with_face: float
    share_above_threshold: float  # over all images: no face counts as not above


class IdentityScorer:
    """Detects the largest face in an image and compares its judge embedding with the source identity."""

    def __init__(self, cfg: Config) -> None:
        from builder.faces.detect import make_detector
        from builder.faces.identity import average_identity, make_judge

        self.detector = make_detector(cfg)
        self.judge = make_judge(cfg)
        self.sources = source_files(cfg)
        vectors = []
        for path in self.sources:
            try:
                image = load_image(path, cfg.runtime.max_pixels)
            except ImageError as exc:
                console.print(f"[yellow]source photo skipped: {escape(str(exc))}[/yellow]")
                continue
            faces = self.detector.detect(image)
            if not faces:
                console.print(f"[yellow]source photo {escape(str(path))}: no face found, not used for the identity[/yellow]")
                continue
            vectors.append(self.judge.embed(image, faces[0]))
        if not vectors:
            raise BuilderError(
                f"no face found in any source photo ({', '.join(map(str, self.sources))}); "
                "the samples cannot be scored against the source identity"
            )
        self.identity = average_identity(vectors)
        self.used = len(vectors)

    def score(self, image_bgr: np.ndarray) -> FaceScore:
        from builder.faces.identity import cosine

        faces = self.detector.detect(image_bgr)
        if not faces:
            return FaceScore(face_found=False, similarity=None)
        return FaceScore(face_found=True, similarity=float(cosine(self.judge.embed(image_bgr, faces[0]), self.identity)))


def source_files(cfg: Config) -> list[Path]:
    """The source photos: each ``[paths] source`` entry is a photo or a folder of them."""
    if not cfg.paths.source:
        raise BuilderError("no source photos: pass --source FILE|DIR or set [paths] source (or --no-score)")
    files: list[Path] = []
    for entry in cfg.paths.source:
        path = Path(entry).expanduser()
        if not path.exists():
            raise BuilderError(f"source {path} does not exist ([paths] source)")
        files.extend(list_images(path))
    if not files:
        raise BuilderError(f"no images in the source ({', '.join(cfg.paths.source)})")
    return files


def identity_threshold(cfg: Config) -> float:
    """[sample] identity_threshold, else the judge's calibrated same-person cosine (as the quality filter uses)."""
    if cfg.sample.identity_threshold is not None:
        return cfg.sample.identity_threshold
    return judge_thresholds(cfg.faces.judge, "sample.identity_threshold").same_person


def summarize(label: str, scores: list[FaceScore], threshold: float) -> EpochSummary:
    n = len(scores)
    sims = [s.similarity for s in scores if s.similarity is not None]
    return EpochSummary(
        label=label,
        images=n,
        faces=sum(s.face_found for s in scores),
        mean_similarity=float(np.mean(sims)) if sims else None,
        share_with_face=sum(s.face_found for s in scores) / n if n else 0.0,
        share_above_threshold=sum(v >= threshold for v in sims) / n if n else 0.0,
    )


def best_epoch(summaries: list[EpochSummary]) -> EpochSummary | None:
    """Highest mean similarity, ties broken by the share above the threshold; None when no epoch has a face."""
    scored = [s for s in summaries if s.mean_similarity is not None]
    if not scored:
        return None
    return max(scored, key=lambda s: (round(s.mean_similarity or 0.0, 6), s.share_above_threshold))
