"""How much each sample looks like the source face, and how much like the donor.

The judge is ``[faces] report_judge``: a recognizer outside InsightFace's ArcFace family,
which the swappers and the best-of were steered by, so the sample report is not graded by
what the pipeline maximised. Each sample face is compared with the source identity (the
mean of the source photos' embeddings) and with the donor identity (the median of the donor
photos' own faces): a LoRA that learnt the donor, or a blend, is closer to the donor than a
LoRA that learnt the new face. The base-model control row shows what a face that is nobody
in particular scores; an epoch is only worth something above that.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from rich.markup import escape

from builder.config import Config
from builder.console import console
from builder.errors import BuilderError, ImageError
from builder.faces.identity import judge_thresholds
from builder.io import list_images, load_image

# The donor identity is the median of at most this many donor photos, spread over the folder:
# enough for a stable median, and seconds rather than minutes on a large donor folder.
DONOR_PHOTOS = 32


@dataclass(frozen=True)
class FaceScore:
    face_found: bool
    similarity: float | None  # cosine to the source identity; None where no face was found
    donor_similarity: float | None = None  # cosine to the donor identity; None without one
    adherence: float | None = None  # CLIP cosine of the image and its prompt without the trigger

    @property
    def closer_to_donor(self) -> bool:
        return self.similarity is not None and self.donor_similarity is not None and self.donor_similarity > self.similarity


@dataclass(frozen=True)
class EpochSummary:
    label: str
    images: int
    faces: int
    mean_similarity: float | None  # over the images where a face was found
    share_with_face: float
    share_above_threshold: float  # over all images: no face counts as not above
    mean_donor_similarity: float | None = None  # over the faces, where a donor identity was there
    share_closer_to_donor: float | None = None  # over the faces: donor cosine above source cosine
    mean_adherence: float | None = None  # over all images
    validation_loss: float | None = None  # sd-scripts' loss/validation/epoch_average, when logged


class IdentityScorer:
    """Detects the largest face in an image and compares its report-judge embedding with the
    source identity and, where donor photos are configured, the donor identity."""

    def __init__(self, cfg: Config, out: Path | None = None) -> None:
        from builder.faces.detect import make_detector
        from builder.faces.identity import average_identity, make_report_judge

        self.detector = make_detector(cfg)
        self.judge = make_report_judge(cfg)
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
        start = time.perf_counter()
        self.donor, self.donor_used = donor_identity(cfg, self.detector, self.judge, out)
        self.donor_seconds = time.perf_counter() - start  # what the leakage scores cost once (bench/)

    def score(self, image_bgr: np.ndarray) -> FaceScore:
        from builder.faces.identity import cosine

        faces = self.detector.detect(image_bgr)
        if not faces:
            return FaceScore(face_found=False, similarity=None)
        emb = self.judge.embed(image_bgr, faces[0])
        return FaceScore(
            face_found=True,
            similarity=float(cosine(emb, self.identity)),
            donor_similarity=None if self.donor is None else float(cosine(emb, self.donor)),
        )


def spread(paths: list[Path], limit: int = DONOR_PHOTOS) -> list[Path]:
    """At most ``limit`` of ``paths``, evenly spread over their sorted order."""
    paths = sorted(paths)
    if len(paths) <= limit:
        return paths
    return [paths[round(i * (len(paths) - 1) / (limit - 1))] for i in range(limit)]


def donor_photos(cfg: Config, out: Path | None) -> tuple[list[Path], str]:
    """The donor photos (``[paths] donors``, else those the run's manifest lists), and where from."""
    if cfg.paths.donors:
        folder = Path(cfg.paths.donors).expanduser()
        if not folder.exists():
            raise BuilderError(f"donor folder {folder} does not exist ([paths] donors / --donors)")
        return spread(list_images(folder)), str(folder)
    if out is not None:
        from builder.io import read_jsonl

        inputs = {Path(r["input"]) for r in read_jsonl(Path(out) / "manifest.jsonl") if r.get("input")}
        found = [p for p in inputs if p.is_file()]
        if found:
            return spread(found), f"the photos {Path(out) / 'manifest.jsonl'} lists"
    return [], ""


def donor_identity(cfg: Config, detector, judge, out: Path | None = None) -> tuple[np.ndarray | None, int]:
    """The median judge embedding of the donor photos' largest faces, and how many photos made it.

    (None, 0) with a warning when there are no donor photos or none holds a face: the leakage
    columns are then left empty rather than guessed.
    """
    from builder.faces.identity import median_identity

    paths, origin = donor_photos(cfg, out)
    if not paths:
        console.print("[yellow]donor leakage not measured: no donor photos (pass --donors DIR)[/yellow]")
        return None, 0
    vectors = []
    for path in paths:
        try:
            image = load_image(path, cfg.runtime.max_pixels)
        except ImageError:
            continue
        faces = detector.detect(image)
        if faces:
            vectors.append(judge.embed(image, faces[0]))
    if not vectors:
        console.print(f"[yellow]donor leakage not measured: no face in {escape(origin)}[/yellow]")
        return None, 0
    return median_identity(vectors), len(vectors)


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
    """[sample] identity_threshold, else the report judge's calibrated same-person cosine
    (the table the quality filter's thresholds come from)."""
    if cfg.sample.identity_threshold is not None:
        return cfg.sample.identity_threshold
    return judge_thresholds(cfg.faces.report_judge, "sample.identity_threshold").same_person


def _mean(values: list[float]) -> float | None:
    return float(np.mean(values)) if values else None


def summarize(
    label: str, scores: list[FaceScore], threshold: float, validation_loss: float | None = None
) -> EpochSummary:
    n = len(scores)
    sims = [s.similarity for s in scores if s.similarity is not None]
    donor = [s for s in scores if s.similarity is not None and s.donor_similarity is not None]
    return EpochSummary(
        label=label,
        images=n,
        faces=sum(s.face_found for s in scores),
        mean_similarity=_mean(sims),
        share_with_face=sum(s.face_found for s in scores) / n if n else 0.0,
        share_above_threshold=sum(v >= threshold for v in sims) / n if n else 0.0,
        mean_donor_similarity=_mean([s.donor_similarity for s in donor]),  # type: ignore[misc]
        share_closer_to_donor=sum(s.closer_to_donor for s in donor) / len(donor) if donor else None,
        mean_adherence=_mean([s.adherence for s in scores if s.adherence is not None]),
        validation_loss=validation_loss,
    )
