"""The build stage: donor photos -> swapped, restored, scored results -> the kohya image folder.

Data flows one way: decode (in a thread, ahead of the models) -> detect once -> choose
the donor face -> batch faces of several photos through the fused pass -> score ->
manifest record. Only ``swap.batch_size`` photos (plus a short decode queue) are in
memory at once, so memory stays flat however large the donor folder is.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from builder import caption_store, families
from builder.config import Config
from builder.console import console, progress
from builder.dataset import closeups, loss_masks
from builder.dataset.plan import TRAIN, VALIDATION, DatasetPlan, plan_dataset, write_plan
from builder.dataset.validation import check_before_work
from builder.errors import BuilderError, ImageError
from builder.faces import align
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
from builder.kohya.validation import validation_dir
from builder.manifest import (
    BY_OVERRIDE,
    BY_PARENT,
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
MASKS = f"{RESULTS}/masks"  # one loss mask per result and close-up, under the image's own name
SOURCE_REPORT = "source_identity.json"


@dataclass
class Models:
    """Every network the build uses, loaded once per run."""

    detector: object
    judge: object
    fused: FusedPass
    report_judge: object | None = None  # faces.report_judge; the judge itself where both are one network
    segmenter: object | None = None  # the loss masks' person segmenter (dataset.masks)


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
    segmenter = None
    if cfg.dataset.masks:
        from builder.dataset.segmenter import load_segmenter

        segmenter = load_segmenter(cfg)
    return Models(make_detector(cfg), judge, fused, report_judge, segmenter)


@dataclass
class Pending:
    """One donor photo between decoding and its manifest record."""

    key: str
    path: Path
    image: np.ndarray
    face: Face
    donor_face: str
    timings: dict[str, float] = field(default_factory=dict)
    others: list[Face] = field(default_factory=list)  # the photo's other detected faces (loss masks)


@dataclass
class BuildSummary:
    out: Path
    photos: int
    processed: int  # this run; the rest were already done
    kept: int  # photos; close-ups are counted apart
    rejected: int
    failed: int
    image_dir: Path | None
    source: SourceIdentity | None
    seconds: float
    records: list[Record]
    plan: DatasetPlan | None = None  # which kept results train, validate or are left out


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
    closeups.check_config(cfg.dataset)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise BuilderError(f"cannot create the output folder {out}: {exc.strerror or exc}") from None
    remove_stale_temps(out)  # a killed run's half-written files; their finished twins are intact
    manifest = Manifest(out / MANIFEST)
    photos = list_images(donors)
    check_before_work(len(photos), cfg.dataset)  # a set validation share that cannot work fails now
    todo = [p for p in photos if not manifest.done(_key(p, donors), out)]
    processed = 0
    source = None
    if todo:  # a finished build only re-settles: no model is loaded
        models = models or load_models(cfg)
        source = _source(cfg, models, out)
        processed = _process(todo, photos, donors, source, cfg, models, manifest, out)

    image_dir, plan = settle(out, cfg, manifest)
    records = list(manifest.records.values())
    return BuildSummary(
        out=out,
        photos=len(photos),
        processed=processed,
        kept=sum(r.status == KEPT for r in records if not r.parent),
        rejected=sum(r.status == REJECTED for r in records if not r.parent),
        failed=sum(r.status == FAILED for r in records),
        image_dir=image_dir,
        source=source,
        seconds=time.perf_counter() - start,
        records=records,
        plan=plan,
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
                manifest.add(record)  # a photo's close-up comes before it, so a resumed run redoes both
                if record.parent is None:
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
            others = [f for f in faces if f is not face]
            batch.append(Pending(key, path, image, face, why, {"decode": t1 - t0, "detect": t2 - t1}, others))
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
        shaped = _shape_result(p, res, name, quality, source, cfg, models, out)
        records += shaped.closeups
        t_shape = time.perf_counter()
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
                transforms={
                    "swap": np.round(res.m_swap, 6).tolist(),
                    "ffhq": np.round(res.m_ffhq, 6).tolist(),
                    "restore": np.round(res.m_restore, 6).tolist(),
                },
                paste_mask=res.paste_mask,
                choice=res.choice_dict(),
                quality=quality.to_dict(),
                timings={k: round(v, 4) for k, v in {
                    **p.timings, **res.timings, "score": t1 - t0, **shaped.timings, "write": t2 - t_shape,
                }.items()},
                closeup=shaped.closeup,
                mask=shaped.mask,
                mask_note=shaped.mask_note,
            )
        )
    return records


def training_resolution(cfg: Config) -> int:
    """The side the family trains at: what "small" and the close-up size are measured against."""
    return cfg.kohya.resolution or families.family(families.resolve_family(cfg.kohya.model_family, cfg.paths.base_model)).RESOLUTION


@dataclass
class Shaped:
    """What one result adds to the dataset besides itself: its loss mask and its close-up."""

    closeups: list[Record]
    closeup: str  # the close-up's key, or why there is none
    mask: str | None
    mask_note: str
    timings: dict[str, float]


def _write_mask(
    out: Path, name: str, image: np.ndarray, face: np.ndarray, character: Face, others: list[np.ndarray],
    cfg: Config, models: Models, quality: Assessment,
) -> tuple[str | None, str]:
    """Segment ``image``, compose its loss mask and write it; a refused mask rejects the image."""
    assert models.segmenter is not None
    try:
        mask = loss_masks.compose_mask(models.segmenter.segment(image), face, character.box, others, cfg.dataset)
    except loss_masks.MaskRefused as exc:
        quality.decision.reject(str(exc))
        return None, str(exc)
    rel = f"{MASKS}/{name}"
    write_image(out / rel, mask)
    return rel, ""


def _shape_result(
    p: Pending, res: FusedResult, name: str, quality: Assessment, source: SourceIdentity, cfg: Config,
    models: Models, out: Path,
) -> Shaped:
    t0 = time.perf_counter()
    face = others = None
    mask, note = None, "loss masks are off (dataset.masks)"
    if models.segmenter is not None:
        face = loss_masks.face_region(res.image.shape, res.m_ffhq, res.mask)
        others = [o.box for o in p.others]
        mask, note = _write_mask(out, name, res.image, face, p.face, others, cfg, models, quality)
    t1 = time.perf_counter()
    plan = closeups.plan_closeup(p.face.box, res.image.shape, training_resolution(cfg), cfg.dataset)
    crops = []
    if plan.made:
        crops.append(_closeup_record(p, res, plan, face, others, source, cfg, models, out))
    timings = {"mask": t1 - t0, "closeup": time.perf_counter() - t1}
    return Shaped(crops, closeups.closeup_key(p.key) if plan.made else plan.reason, mask, note, timings)


def _closeup_record(
    p: Pending, res: FusedResult, plan: closeups.CloseupPlan, face: np.ndarray | None, others: list[np.ndarray] | None,
    source: SourceIdentity, cfg: Config, models: Models, out: Path,
) -> Record:
    """The close-up as a result of its own: cut from the donor photo and the result alike, scored
    and filtered like any result, with its own loss mask (the segmenter runs on the crop)."""
    t0 = time.perf_counter()
    assert plan.box is not None
    key = closeups.closeup_key(p.key)
    name = result_name(key)
    donor, result = closeups.cut(p.image, plan), closeups.cut(res.image, plan)
    cface = closeups.face_in_crop(p.face, plan)
    scores = score_result(donor, result, cface, source.judge, models.judge, models.detector)
    quality = assess(name, scores, cfg.quality)
    mask, note = None, "loss masks are off (dataset.masks)"
    if face is not None and others is not None:
        m = closeups.crop_matrix(plan)
        crop_face = align.warp(face, m, plan.size)
        crop_others = [align.edge_box_in_crop(b, plan.box, plan.size) for b in others]
        mask, note = _write_mask(out, name, result, crop_face, cface, crop_others, cfg, models, quality)
    write_image(out / RESULTS / name, result)
    return Record(
        key=key,
        input=str(p.path),
        status=KEPT if quality.decision.kept else REJECTED,
        reasons=list(quality.decision.reasons),
        output=f"{RESULTS}/{name}",
        face=_face_dict(cface),
        donor_face=p.donor_face,
        transforms={"crop": np.round(closeups.crop_matrix(plan), 6).tolist()},
        quality=quality.to_dict(),
        timings={"closeup": round(time.perf_counter() - t0, 4)},
        parent=p.key,
        crop_box=np.round(plan.box, 2).tolist(),
        mask=mask,
        mask_note=note,
    )


def settle(out: Path, cfg: Config, manifest: Manifest) -> tuple[Path | None, DatasetPlan]:
    """Final decisions that need every photo (duplicates, --keep N), then the image folders.

    Deterministic from the manifest and overrides.json alone, so a resumed run settles
    exactly like an uninterrupted one. Per-photo rejections stay; only kept results can
    become rejected. A person's keep/reject (overrides.json) wins over everything, and a
    photo they rejected leaves the ranking, so its near-duplicate twin can come back.
    Of the kept results, the dataset plan (builder.dataset) says which train and which
    validate; each record's ``dataset`` field and dataset_plan.json record it.
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
    _settle_closeups(manifest.records, cfg)
    kept = [r for r, _, _ in items if r.status == KEPT]
    plan = plan_dataset(kept, cfg)
    for r, _, _ in items:
        r.dataset = plan.record_field(r.key)
    manifest.rewrite()
    write_plan(out, plan)
    captions = {Path(r.output).name: overrides[r.key]["caption"].value for r, _, _ in items if "caption" in overrides.get(r.key, {})}
    folders = {
        instance_dir(out, cfg): [r for r in kept if plan.roles.get(r.key) == TRAIN],
        validation_dir(out, cfg): [r for r in kept if plan.roles.get(r.key) == VALIDATION],
    }
    _sync_image_folders(out, cfg, folders, captions)
    return next(iter(folders)), plan


def _settle_closeups(records: dict[str, Record], cfg: Config) -> None:
    """A close-up follows its parent out, and at most dataset.closeup_share of the training
    images are close-ups (the best by combined score stay; a person's keep stays too)."""
    kept = []
    for r in records.values():
        if not r.parent or r.status == FAILED:
            continue
        parent = records.get(r.parent)
        if parent is None or parent.status != KEPT:
            r.reasons.append(f"{closeups.PARENT_REJECTED} ({r.parent})")
            r.status, r.decided_by = REJECTED, BY_PARENT
        elif r.status == KEPT and r.decided_by != BY_OVERRIDE:
            kept.append(r)
    photos = sum(r.status == KEPT for r in records.values() if not r.parent)
    held = sum(r.status == KEPT and r.decided_by == BY_OVERRIDE for r in records.values() if r.parent)
    room = max(0, closeups.allowed_closeups(photos, cfg.dataset.closeup_share) - held)
    ranked = sorted(kept, key=lambda r: (-(r.quality or {}).get("combined", 0.0), r.key))
    for r in ranked[room:]:
        r.reasons.append(closeups.NOT_IN_SHARE)
        r.status = REJECTED


def _per_photo_reasons(record: Record) -> list[str]:
    q = record.quality or {}
    if "per_photo_reasons" in q:
        return list(q["per_photo_reasons"])
    return list(q.get("reasons", []))


def _sync_image_folders(out: Path, cfg: Config, folders: dict[Path, list[Record]], captions: dict[str, str]) -> None:
    """Make each folder (img/<N>_<trigger> <class>/, val/1_<trigger> <class>/) hold exactly its results.

    A result moving between them (a validation photo that trains again) takes its caption
    file along, so it is not captioned twice and a hand edit stays with it.
    """
    for folder, records in folders.items():
        names = {Path(r.output).name for r in records if r.output}
        for other in folders:
            if other == folder or not other.is_dir():
                continue
            for name in names:
                for ext in CAPTION_EXTENSIONS:
                    src, dst = (other / name).with_suffix(ext), (folder / name).with_suffix(ext)
                    if src.is_file() and not dst.exists():
                        folder.mkdir(parents=True, exist_ok=True)
                        os.replace(src, dst)
    for folder, records in folders.items():
        if records or folder.is_dir():
            _sync_image_folder(out, cfg, folder, records, captions)


def _sync_image_folder(out: Path, cfg: Config, folder: Path, kept: list[Record], captions: dict[str, str]) -> None:
    """Make ``folder`` hold exactly the results ``kept``, under their stable names.

    Names come from the donor photo's path, so a caption stays attached to its image
    across runs. A result that stops being kept loses its image and its caption file, whose
    text waits in caption_store/ until the result comes back. A caption a person wrote
    (``captions``: image name -> text) is written whenever its image is here.
    """
    folder.mkdir(parents=True, exist_ok=True)
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
