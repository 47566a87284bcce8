"""Judge every generated photo against the given ones, with the judge network (not PhotoMaker's own ArcFace).

A photo is kept when it holds exactly one face whose judge cosine to the averaged source
identity reaches the threshold (``sources.min_identity``, else the judge's calibrated
same-person value). Otherwise it is dropped with its reason: ``no face``, ``N faces``, or
``identity 0.21 < 0.35``. The kept set's pairwise cosines say how tight the identity is.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

from builder.config import Config
from builder.faces.identity import average_identity, judge_thresholds
from builder.io import load_image


@dataclass(frozen=True)
class Verdict:
    kept: bool
    reason: str  # empty when kept
    faces: int
    similarity: float | None  # judge cosine to the source identity, None without exactly one face
    embedding: np.ndarray | None  # the face's judge embedding, for the spread


@dataclass(frozen=True)
class Spread:
    """Pairwise judge cosines within the kept set."""

    n: int
    min: float | None
    mean: float | None
    max: float | None

    def as_dict(self) -> dict:
        return {"n": self.n, "min": self.min, "mean": self.mean, "max": self.max}


def threshold(cfg: Config) -> float:
    if cfg.sources.min_identity is not None:
        return cfg.sources.min_identity
    return judge_thresholds(cfg.faces.judge, "sources.min_identity").same_person


class SourcesJudge:
    def __init__(self, cfg: Config, detector, judge, source_paths: list) -> None:
        self.detector = detector
        self.judge = judge
        self.threshold = threshold(cfg)
        self.max_pixels = cfg.runtime.max_pixels
        vectors = []
        for path in source_paths:
            image = load_image(path, self.max_pixels)
            faces = detector.detect(image)
            if faces:
                vectors.append(judge.embed(image, faces[0]))
        self.reference = average_identity(vectors)  # raises when no source photo has a face

    def __call__(self, image_bgr: np.ndarray) -> Verdict:
        faces = self.detector.detect(image_bgr)
        if not faces:
            return Verdict(False, "no face", 0, None, None)
        if len(faces) > 1:
            return Verdict(False, f"{len(faces)} faces", len(faces), None, None)
        embedding = self.judge.embed(image_bgr, faces[0])
        similarity = float(np.dot(embedding, self.reference))
        if similarity < self.threshold:
            return Verdict(False, f"identity {similarity:.2f} < {self.threshold:.2f}", 1, similarity, embedding)
        return Verdict(True, "", 1, similarity, embedding)


def spread(embeddings: list[np.ndarray]) -> Spread:
    sims = [float(np.dot(a, b)) for a, b in itertools.combinations(embeddings, 2)]
    if not sims:
        return Spread(len(embeddings), None, None, None)
    return Spread(len(embeddings), min(sims), float(np.mean(sims)), max(sims))
