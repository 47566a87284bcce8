"""``launch.py faces DIR --out DIR``: detect and align every photo, to look before spending GPU time.

For each detected face it writes ``<photo stem>_face<k>.png``: the GHOST swap crop beside
the FFHQ crop the restorers get, both 512 high (the swap crop is warped straight to 512
with GHOST's alignment, the same region its 256 crop covers), and one ``faces.jsonl``
record per photo: every face's box, score, landmarks and pose, the chosen donor face and
why. A rerun skips photos already recorded whose crops exist.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np

from builder.cli.common import add_shared_flags, build_config
from builder.config import Config
from builder.console import console, progress, random_weights_banner
from builder.errors import BuilderError, ImageError
from builder.faces import align
from builder.faces.detect import make_detector
from builder.faces.identity import Judge, make_judge, median_identity
from builder.faces.pose import head_pose
from builder.faces.select import select_donor_face
from builder.faces.types import Face
from builder.io import append_jsonl, list_images, load_image, read_jsonl, write_image
from builder.manifest import result_name

PREVIEW = 512
MANIFEST = "faces.jsonl"


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "faces",
        help="detect and align faces, write the swap/restore crops side by side",
        description="Detect every face in a folder of photos, write the GHOST and FFHQ crops "
        "side by side for each, and faces.jsonl with boxes, landmarks and the chosen donor face.",
    )
    p.add_argument("folder", type=Path, help="photo or folder of photos")
    p.add_argument("--out", type=Path, required=True, help="folder for the crops and faces.jsonl")
    add_shared_flags(p, "--detector", "--judge", "--donor-face")
    return p


def crop_pair(image: np.ndarray, face: Face) -> np.ndarray:
    swap = align.warp(image, align.ghost_alignment(face.kps, PREVIEW), PREVIEW)
    ffhq = align.warp(image, align.estimate_ffhq(face.kps, PREVIEW), PREVIEW)
    return np.hstack([swap, ffhq])


def face_record(face: Face, crop: str) -> dict[str, Any]:
    yaw, pitch = head_pose(face)
    record: dict[str, Any] = {
        "box": [round(float(v), 2) for v in face.box],
        "score": round(face.score, 4),
        "kps": np.round(face.kps.astype(float), 2).tolist(),
        "yaw": round(yaw, 1),
        "pitch": round(pitch, 1),
        "crop": crop,
    }
    if face.embedding is not None:
        record["embedding"] = np.round(face.embedding.astype(float), 5).tolist()
    return record


def _done(out: Path, record: dict[str, Any]) -> bool:
    return "error" in record or all((out / f["crop"]).is_file() for f in record.get("faces", []))


def _from_record(f: dict[str, Any]) -> Face:
    return Face(
        box=np.array(f["box"], np.float32),
        score=float(f["score"]),
        kps=np.array(f["kps"], np.float32),
        embedding=np.array(f["embedding"], np.float32) if "embedding" in f else None,
    )


def process_photo(
    path: Path, cfg: Config, detector: Any, judge: Judge | None, out: Path
) -> dict[str, Any]:
    image = load_image(path, cfg.runtime.max_pixels)
    faces = detector.detect(image)
    if judge is not None:
        faces = [Face(f.box, f.score, f.kps, f.landmarks, judge.embed(image, f)) for f in faces]
    records = []
    for k, face in enumerate(faces):
        # The path's hash in the name: face.png in two subfolders must not share crop files.
        name = result_name(path.as_posix(), f"_face{k}.png")
        write_image(out / name, crop_pair(image, face))
        records.append(face_record(face, name))
    return {"path": str(path), "size": [int(image.shape[1]), int(image.shape[0])], "faces": records}


def choose(record: dict[str, Any], cfg: Config, reference: np.ndarray | None) -> None:
    faces = [_from_record(f) for f in record["faces"]]
    chosen, reason = select_donor_face(
        faces, cfg.faces.donor_face, reference=reference, ambiguous_ratio=cfg.faces.ambiguous_ratio
    )
    record["chosen"] = (
        None if chosen is None else next(i for i, f in enumerate(faces) if f is chosen)
    )
    record["reason"] = reason


def run(args: argparse.Namespace) -> int:
    cfg = build_config(args)
    if cfg.runtime.random_weights:
        random_weights_banner()
    out: Path = args.out
    photos = list_images(args.folder)
    if not photos:
        raise BuilderError(f"{args.folder}: no photos found")
    manifest = out / MANIFEST
    previous = {r["path"]: r for r in read_jsonl(manifest) if "path" in r and _done(out, r)}
    consistent = cfg.faces.donor_face == "consistent"
    detector = make_detector(cfg)
    judge = make_judge(cfg) if consistent else None
    pending: list[dict[str, Any]] = []
    failed = 0
    with progress() as bar:
        task = bar.add_task("faces", total=len(photos), status="")
        for path in photos:
            if str(path) in previous:
                bar.update(task, advance=1, status=f"{path.name}: already done")
                continue
            try:
                record = process_photo(path, cfg, detector, judge, out)
            except ImageError as exc:
                failed += 1
                console.print(f"[yellow]skipped[/yellow] {path.name}: {exc}")
                append_jsonl(manifest, {"path": str(path), "error": str(exc)})
                bar.update(task, advance=1, status=f"{path.name}: unreadable")
                continue
            if consistent:
                pending.append(record)
            else:
                choose(record, cfg, None)
                append_jsonl(manifest, record)
            bar.update(task, advance=1, status=f"{path.name}: {len(record['faces'])} face(s)")
    if consistent and pending:
        # The donor is whoever the largest faces mostly are: their median embedding.
        largest = [r["faces"][0] for r in [*previous.values(), *pending] if r.get("faces")]
        reference = median_identity(
            [np.array(f["embedding"], np.float32) for f in largest if "embedding" in f]
        )
        for record in pending:
            choose(record, cfg, reference)
            append_jsonl(manifest, record)
    records = [r for r in read_jsonl(manifest) if "faces" in r]
    found = sum(1 for r in records if r["faces"])
    chosen = sum(1 for r in records if r.get("chosen") is not None)
    console.print(
        f"{len(photos)} photos: {found} with a face, {chosen} with a chosen donor face, {failed} unreadable "
        f"-> {out}/{MANIFEST}"
    )
    return 0
