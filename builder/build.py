"""The build stage: donor photos -> swapped, restored, scored results -> the kohya image folder.

Data flows one way: decode (in a thread, ahead of the models) -> detect once -> choose
the donor face -> batch faces of several photos through the fused pass -> score ->
manifest record. Only ``swap.batch_size`` photos (plus a short decode queue) are in
memory at once, so memory stays flat however large the donor folder is.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from builder import caption_store
from builder.config import Config
from builder.console import console, progress
from builder.errors import BuilderError, ImageError
from builder.faces.detect import make_detector
from builder.faces.identity import judge_thresholds, make_judge, make_report_judge
from builder.faces.select import select_donor_face
from builder.faces.types import Face
from builder.io import (
    atomic_write_bytes,
    atomic_write_json,
    list_images,
    load_image,
    remove_stale_temps,
    write_image,
)
from builder.kohya.dataset import CAPTION_EXTENSIONS, instance_dir, kohya_images
from builder.manifest import (
    BY_OVERRIDE,
    BY_RANDOM_WEIGHTS,
    BY_SCORES,
    FAILED,
    KEPT,
    REJECTED,
    Manifest,
    Record,
    result_name,
)
from builder.overrides import load_overrides
from builder.quality.decide import NO_FACE, Assessment, assess, identity_thresholds
from builder.quality.dedup import finalize
from builder.quality.scores import Scores, score_result
from builder.swap.fused import FaceJob, FusedPass, FusedResult
from builder.swap.parsing import load_parser
from builder.swap.restorers import load_restorers
from builder.swap.source import SourceIdentity, source_identity, source_paths
from builder.swap.swappers import load_swappers

MANIFEST = "manifest.jsonl"
RESULTS = "results"
SOURCE_REPORT = "source_identity.json"


@dataclass
class Models:
    """Every network the build uses, loaded once per run."""

    detector: object
    judge: object
    fused: FusedPass
    report_judge: object | None = None  # faces.report_judge; the judge itself where both are one network


def load_models(cfg: Config) -> Models:
    from builder.device import resolve_device

    device = resolve_device(cfg.runtime.device)
    swappers = load_swappers(cfg, device)
    restorers = load_restorers(cfg, device)
    parser = load_parser(cfg, device) if cfg.swap.needs_parser else None
    judge = make_judge(cfg)
    report_judge = make_report_judge(cfg, judge)
    # the swapper best-of skips a swap that "did not take" by the quality filter's own threshold
    _, max_donor = identity_thresholds(cfg.quality, cfg.faces.judge)
    report_max_donor = judge_thresholds(cfg.faces.report_judge, "faces.report_judge").still_donor
    fused = FusedPass(swappers, restorers, parser, cfg.swap, judge, max_donor, report_judge, report_max_donor)
    return Models(make_detector(cfg), judge, fused, report_judge)


@dataclass
class Pending:
    """One donor photo between decoding and its manifest record."""

    key: str
    path: Path
    image: np.ndarray
    face: Face
    donor_face: str
    timings: dict[str, float] = field(default_factory=dict)


@dataclass
class BuildSummary:
    out: Path
    photos: int
    processed: int  # this run; the rest were already done
    kept: int
    rejected: int
    failed: int
    image_dir: Path | None
    source: SourceIdentity | None
    seconds: float
    records: list[Record]


def _prefetch(paths: list[Path], load: Callable[[Path], np.ndarray], depth: int) -> Iterator[tuple[Path, Future]]:
    """Decode up to ``depth`` photos ahead in a thread while the models work on earlier ones."""
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="decode") as pool:
        queue: list[tuple[Path, Future]] = []
        it = iter(paths)
        for path in it:
            queue.append((path, pool.submit(load, path)))
            if len(queue) >= depth:
                break
        while queue:
            head = queue.pop(0)
            nxt = next(it, None)
            if nxt is not None:
                queue.append((nxt, pool.submit(load, nxt)))
            yield head


def _key(path: Path, root: Path) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return path.name


def _face_dict(face: Face) -> dict:
    return {"box": np.round(face.box, 2).tolist(), "score": round(float(face.score), 4), "kps": np.round(face.kps, 2).tolist()}


def _check_inputs(cfg: Config) -> tuple[Path, Path]:
    if not cfg.paths.out:
        raise BuilderError("no output folder: pass --out DIR (or set [paths] out)")
    if not cfg.paths.donors:
        raise BuilderError("no donor photos: pass --donors DIR (or set [paths] donors)")
    if not cfg.paths.source:
        raise BuilderError("no source face: pass --source PATH (or set [paths] source)")
    donors = Path(cfg.paths.donors)
    if not donors.exists():
        raise BuilderError(f"donor folder {donors} does not exist")
    return Path(cfg.paths.out), donors


def run_build(cfg: Config, models: Models | None = None) -> BuildSummary:
    """Process every donor photo not yet in the manifest, then settle the final selection."""
    start = time.perf_counter()
    out, donors = _check_inputs(cfg)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise BuilderError(f"cannot create the output folder {out}: {exc.strerror or exc}") from None
    remove_stale_temps(out)  # a killed run's half-written files; their finished twins are intact
    manifest = Manifest(out / MANIFEST)
    photos = list_images(donors)
    todo = [p for p in photos if not manifest.done(_key(p, donors), out)]
    processed = 0
    source = None
    if todo:  # a finished build only re-settles: no model is loaded
        models = models or load_models(cfg)
        source = _source(cfg, models, out)
        processed = _process(todo, photos, donors, source, cfg, models, manifest, out)

    image_dir = settle(out, cfg, manifest)
    records = list(manifest.records.values())
    return BuildSummary(
        out=out,
        photos=len(photos),
        processed=processed,
        kept=sum(r.status == KEPT for r in records),
        rejected=sum(r.status == REJECTED for r in records),
        failed=sum(r.status == FAILED for r in records),
        image_dir=image_dir,
        source=source,
        seconds=time.perf_counter() - start,
        records=records,
    )


def _source(cfg: Config, models: Models, out: Path) -> SourceIdentity:
    source = source_identity(
        source_paths(cfg.paths.source), models.detector, models.fused.swappers, models.judge, cfg.runtime.max_pixels,
        report_judge=models.report_judge,
    )
    atomic_write_json(out / SOURCE_REPORT, {"used": source.used, "failed": [list(f) for f in source.failed]})
    for path, reason in source.failed:
        console.print(f"[yellow]source {path} skipped: {reason}[/yellow]")
    return source


def _process(
    todo: list[Path],
    photos: list[Path],
    donors: Path,
    source: SourceIdentity,
    cfg: Config,
    models: Models,
    manifest: Manifest,
    out: Path,
) -> int:
    # Over every photo, not just the pending ones, so a resumed run picks the same faces.
    reference, detected = None, {}
    if cfg.faces.donor_face == "consistent":
        reference, detected = _donor_reference(photos, cfg, models)
    processed = 0
    with progress() as bar:
        task = bar.add_task("swap + restore", total=len(photos), completed=len(photos) - len(todo), status="")
        batch: list[Pending] = []

        def flush() -> None:
            nonlocal processed
            for record in _run_batch(batch, source, cfg, models, out):
                manifest.add(record)
                processed += 1
                bar.update(task, advance=1, status=f"{record.key}: {record.status}")
            batch.clear()

        for path, future in _prefetch(todo, lambda p: load_image(p, cfg.runtime.max_pixels), depth=2 * cfg.swap.batch_size):
            key = _key(path, donors)
            t0 = time.perf_counter()
            try:
                image = future.result()
            except ImageError as exc:
                manifest.add(Record(key=key, input=str(path), status=FAILED, reasons=[str(exc)]))
                bar.update(task, advance=1, status=f"{key}: unreadable")
                continue
            t1 = time.perf_counter()
            faces = detected[path] if path in detected else models.detector.detect(image)
            face, why = select_donor_face(
                faces, cfg.faces.donor_face, reference=reference, judge=models.judge, image=image,
                ambiguous_ratio=cfg.faces.ambiguous_ratio,
            )
            t2 = time.perf_counter()
            if face is None:
                quality = assess(key, Scores(face_found=False), cfg.quality)
                manifest.add(
                    Record(key=key, input=str(path), status=FAILED, reasons=[why or NO_FACE], donor_face=why, quality=quality.to_dict())
                )
                bar.update(task, advance=1, status=f"{key}: {why}")
                continue
            batch.append(Pending(key, path, image, face, why, {"decode": t1 - t0, "detect": t2 - t1}))
            if len(batch) >= cfg.swap.batch_size:
                flush()
        flush()
    return processed


def _donor_reference(paths: Iterable[Path], cfg: Config, models: Models) -> tuple[np.ndarray | None, dict[Path, list[Face]]]:
    """Median judge embedding of the largest face of every donor photo (--donor-face consistent).

    Runs over every photo, not only the pending ones, so a resumed run picks the same
    faces. The detections are returned so the main pass does not detect a second time.
    """
    from builder.faces.identity import median_identity

    vectors, detected = [], {}
    with progress() as bar:
        task = bar.add_task("donor reference", total=None, status="")
        for path in paths:
            bar.update(task, advance=1, status=path.name)
            try:
                image = load_image(path, cfg.runtime.max_pixels)
            except ImageError:
                continue
            detected[path] = faces = models.detector.detect(image)
            if faces:
                vectors.append(models.judge.embed(image, faces[0]))
    if not vectors:
        return None, detected
    return median_identity(vectors), detected


def _run_batch(batch: list[Pending], source: SourceIdentity, cfg: Config, models: Models, out: Path) -> list[Record]:
    if not batch:
        return []
    results: list[FusedResult] = models.fused.run([FaceJob(p.image, p.face) for p in batch], source)
    records = []
    for p, res in zip(batch, results, strict=True):
        name = result_name(p.key)
        t0 = time.perf_counter()
        scores = score_result(
            p.image, res.image, p.face, source.judge, models.judge, models.detector,
            report_judge=models.report_judge, report_source_identity=source.report,
        )
        quality = assess(name, scores, cfg.quality)
        t1 = time.perf_counter()
        write_image(out / RESULTS / name, res.image)
        t2 = time.perf_counter()
        records.append(
            Record(
                key=p.key,
                input=str(p.path),
                status=KEPT if quality.decision.kept else REJECTED,
                reasons=list(quality.decision.reasons),
                output=f"{RESULTS}/{name}",
                face=_face_dict(p.face),
                donor_face=p.donor_face,
                transforms={"swap": np.round(res.m_swap, 6).tolist(), "ffhq": np.round(res.m_ffhq, 6).tolist()},
                paste_mask=res.paste_mask,
                choice=res.choice_dict(),
                quality=quality.to_dict(),
                timings={k: round(v, 4) for k, v in {**p.timings, **res.timings, "score": t1 - t0, "write": t2 - t1}.items()},
            )
        )
    return records


def settle(out: Path, cfg: Config, manifest: Manifest) -> Path | None:
    """Final decisions that need every photo (duplicates, --keep N), then the image folder.

    Deterministic from the manifest and overrides.json alone, so a resumed run settles
    exactly like an uninterrupted one. Per-photo rejections stay; only kept results can
    become rejected. A person's keep/reject (overrides.json) wins over everything, and a
    photo they rejected leaves the ranking, so its near-duplicate twin can come back.
    """
    overrides = load_overrides(out)
    scored = [r for r in manifest.records.values() if r.status != FAILED and r.quality]
    items = []
    for r in scored:
        a = Assessment.from_dict(r.quality)
        # Start again from the per-photo verdict so removing a photo can bring its twin back.
        a.decision.reasons = _per_photo_reasons(r)
        a.decision.kept = not a.decision.reasons
        items.append((r, a, overrides.get(r.key, {}).get("status")))
    finalize([a for _, a, o in items if o is None or o.value != REJECTED], cfg.quality.dedup_hamming, cfg.quality.keep)
    for r, a, o in items:
        r.reasons = list(a.decision.reasons)  # always what the scores found, whoever decided
        r.override = o.to_dict() if o else None
        if o is not None:
            r.status, r.decided_by = o.value, BY_OVERRIDE
        elif cfg.runtime.random_weights and not a.decision.kept:
            # Random-weight results are noise by construction: they are scored and the verdicts
            # are recorded, but all are kept so the later stages have a dataset to carry.
            r.status, r.decided_by = KEPT, BY_RANDOM_WEIGHTS
        else:
            r.status, r.decided_by = (KEPT if a.decision.kept else REJECTED), BY_SCORES
        r.quality = {**a.to_dict(), "per_photo_reasons": _per_photo_reasons(r)}
    manifest.rewrite()
    captions = {Path(r.output).name: overrides[r.key]["caption"].value for r, _, _ in items if "caption" in overrides.get(r.key, {})}
    return _sync_image_folder(out, cfg, [r for r, _, _ in items if r.status == KEPT], captions)


def _per_photo_reasons(record: Record) -> list[str]:
    q = record.quality or {}
    if "per_photo_reasons" in q:
        return list(q["per_photo_reasons"])
    return list(q.get("reasons", []))


def _sync_image_folder(out: Path, cfg: Config, kept: list[Record], captions: dict[str, str]) -> Path | None:
    """Make img/<N>_<trigger> <class>/ hold exactly the kept results, under their stable names.

    Names come from the donor photo's path, so a caption stays attached to its image
    across runs. A result that stops being kept loses its image and its caption file, whose
    text waits in caption_store/ until the result comes back. A caption a person wrote
    (``captions``: image name -> text) is written whenever its image is here.
    """
    folder = instance_dir(out, cfg)
    wanted = {Path(r.output).name: out / r.output for r in kept if r.output}
    for existing in kohya_images(folder):
        if existing.name not in wanted:
            caption_store.leave(out, existing.with_suffix(cfg.caption.extension), captions.get(existing.name))
            existing.unlink()
            for ext in CAPTION_EXTENSIONS:
                existing.with_suffix(ext).unlink(missing_ok=True)
    for name, src in sorted(wanted.items()):
        dst = folder / name
        if not dst.exists() or dst.stat().st_size != src.stat().st_size:
            atomic_write_bytes(dst, src.read_bytes())
        caption_store.follow(out, dst.with_suffix(cfg.caption.extension), captions.get(name))
    return folder
