"""The source identity: one vector per swapper for the new face, from one or several photos."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from builder.errors import BuilderError, ImageError
from builder.faces.identity import average_identity
from builder.io import list_images, load_image, read_jsonl
from builder.models.base import Swapper


@dataclass
class SourceIdentity:
    vectors: dict[str, np.ndarray]  # swapper name -> what that swapper is conditioned on
    judge: np.ndarray | None  # L2-normalised judge embedding, for scoring results
    report: np.ndarray | None = None  # the same by faces.report_judge, for the reported scores
    used: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)

    @property
    def vector(self) -> np.ndarray:
        """The conditioning vector when a single swapper runs."""
        if len(self.vectors) != 1:
            raise BuilderError(f"several swappers ({', '.join(self.vectors)}): ask for one by name")
        return next(iter(self.vectors.values()))


# A folder made by `launch.py sources` lists its photos here; only the kept ones are sources.
SOURCES_RECORDS = "sources.jsonl"


def kept_sources(folder: Path) -> list[Path]:
    """The kept photos of a `sources` folder, in its records' order."""
    records = read_jsonl(folder / SOURCES_RECORDS)
    return [folder / r["file"] for r in records if r.get("status") == "kept" and (folder / r["file"]).is_file()]


def source_paths(sources: list[str]) -> list[Path]:
    paths: list[Path] = []
    for s in sources:
        p = Path(s)
        if p.is_dir():
            paths.extend(kept_sources(p) if (p / SOURCES_RECORDS).is_file() else list_images(p))
        elif p.is_file():
            paths.append(p)
        else:
            raise BuilderError(f"source {p}: no such file or folder")
    return paths


def source_identity(
    paths: list[Path],
    detector,
    swappers: Sequence[Swapper],
    judge=None,
    max_pixels: int = 60_000_000,
    report_judge=None,
) -> SourceIdentity:
    """Embed every source photo with each swapper's own recognizer; each swapper averages its own.

    Each photo is read and detected once, whatever the number of swappers.
    """
    raw: dict[str, list[np.ndarray]] = {s.name: [] for s in swappers}
    judged: list[np.ndarray] = []
    reported: list[np.ndarray] = []
    used: list[str] = []
    failed: list[tuple[str, str]] = []
    for path in paths:
        try:
            image = load_image(path, max_pixels)
        except ImageError as exc:
            failed.append((str(path), str(exc).removeprefix(f"{path}: ")))  # the path is the key already
            continue
        faces = detector.detect(image)
        if not faces:
            failed.append((str(path), "no face found"))
            continue
        face = faces[0]  # sources are portraits of one person; the largest face is theirs
        for swapper in swappers:
            raw[swapper.name].append(np.asarray(swapper.embed_source(image, face.kps), dtype=np.float32))
        if judge is not None:
            judged.append(judge.embed(image, face))
        if report_judge is not None and report_judge is not judge:
            reported.append(report_judge.embed(image, face))
        used.append(str(path))
    if not used:
        details = "; ".join(f"{p}: {r}" for p, r in failed) or "no source photos given"
        raise BuilderError(f"no usable source face ({details})")
    vectors = {s.name: np.asarray(s.identity(np.stack(raw[s.name])), dtype=np.float32) for s in swappers}
    judge_vec = average_identity(np.stack(judged)) if judged else None
    report_vec = average_identity(np.stack(reported)) if reported else None
    if report_judge is not None and report_judge is judge:
        report_vec = judge_vec
    return SourceIdentity(vectors=vectors, judge=judge_vec, report=report_vec, used=used, failed=failed)
