"""What the review page shows, read fresh from the run folder on every request.

One card per manifest record: the status and who decided it, the scores' reasons, every
score, the caption as it is on disk (or as a person wrote it), and any further data a
stage adds to a record (e.g. per-face candidate scores), passed on as it is. The samples
view comes from ``samples/report.json``.
"""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path
from typing import Any
from urllib.parse import quote

from builder import caption_store
from builder.build import MANIFEST
from builder.caption.text import KOHYA_TOKEN_LENGTHS, TokenCounter
from builder.config import Config
from builder.errors import BuilderError
from builder.io import read_jsonl
from builder.kohya.dataset import instance_dir
from builder.manifest import KEPT, Record, Tally, result_name
from builder.overrides import Stamp, load_overrides
from builder.review.epochs import EPOCH_VERDICT_KEYS, epoch_plot_view
from builder.review.thumbs import FULL_KINDS, KINDS

# Record fields the page shows in their own place, or leaves out (geometry, timings); any other
# field (one a later stage adds, e.g. per-face candidate scores) is shown under "extra" as it is.
SHOWN = {"key", "input", "status", "reasons", "output", "face", "donor_face", "transforms", "paste_mask",
         "quality", "timings", "decided_by", "override"}  # fmt: skip
QUALITY_SHOWN = {"name", "kept", "reasons", "combined", "scores", "per_photo_reasons"}
SAMPLES_REPORT = "samples/report.json"


def card_id(key: str) -> str:
    """The result file's stem: unique per photo, URL-safe, stable across runs."""
    return Path(result_name(key)).stem


def file_url(rel: str) -> str:
    return "/files/" + quote(rel)


def raw_records(out: Path) -> list[dict[str, Any]]:
    """Manifest lines as written (a later line for the same photo wins), fields the Record class
    does not know included."""
    by_key: dict[str, dict[str, Any]] = {}
    for d in read_jsonl(Path(out) / MANIFEST):
        if isinstance(d, dict) and isinstance(d.get("key"), str):
            by_key[d["key"]] = d
    return [by_key[k] for k in sorted(by_key)]


def image_folder(out: Path, cfg: Config) -> Path | None:
    try:
        return instance_dir(out, cfg, create=False)
    except BuilderError:
        return None


def caption_path(out: Path, cfg: Config, record: dict[str, Any]) -> Path | None:
    """Where this photo's caption file is, while its image is in the training folder."""
    folder = image_folder(out, cfg)
    if folder is None or not record.get("output"):
        return None
    image = folder / Path(record["output"]).name
    return image.with_suffix(cfg.caption.extension) if image.is_file() else None


def budget(tokens: int) -> dict[str, Any]:
    """The smallest kohya max_token_length the caption fits in (None: it is cut even at 225)."""
    fits = next((n for n in KOHYA_TOKEN_LENGTHS if tokens <= n), None)
    return {"tokens": tokens, "fits": fits, "budgets": list(KOHYA_TOKEN_LENGTHS)}


def _stamp(s: Stamp | None) -> dict[str, str] | None:
    return s.to_dict() if s else None


def build_card(out: Path, cfg: Config, d: dict[str, Any], overrides: dict[str, dict[str, Stamp]], counter: TokenCounter) -> dict[str, Any]:
    key = d["key"]
    cid = card_id(key)
    mine = overrides.get(key, {})
    quality = d.get("quality") or {}
    all_scores = quality.get("scores") or {}
    scores = {k: v for k, v in all_scores.items() if isinstance(v, int | float | str | bool) or v is None}
    extra = {k: v for k, v in d.items() if k not in SHOWN}
    extra.update({k: v for k, v in quality.items() if k not in QUALITY_SHOWN})
    extra.update({k: v for k, v in all_scores.items() if k not in scores})
    if "combined" in quality:
        scores["combined"] = quality["combined"]
    path = caption_path(out, cfg, d)
    person = mine["caption"].value if "caption" in mine else None
    aside = caption_store.stored(out, result_name(key)) if d.get("output") else None
    text = None
    if path is not None and path.is_file():
        text = path.read_text(encoding="utf-8-sig").strip()
    elif person is not None:
        text = person  # not in the training folder now; written again when it is
    elif aside:
        text = aside.strip()  # kept aside while the result is out; it comes back with it
    has_result = bool(d.get("output")) and (Path(out) / d["output"]).is_file()
    has_face = bool((d.get("face") or {}).get("box"))
    thumbs = {}
    for kind in KINDS + FULL_KINDS:
        if (kind.startswith("result") and not has_result) or (kind.endswith("_face") and not has_face):
            continue
        thumbs[kind] = f"/thumb/{cid}/{kind}"
    return {
        "id": cid,
        "key": key,
        "status": d.get("status"),
        "decided_by": d.get("decided_by", ""),
        "scores_kept": bool(quality.get("kept")),
        "reasons": list(d.get("reasons") or []),
        "per_photo_reasons": list(quality.get("per_photo_reasons") or quality.get("reasons") or []),
        "donor_face": d.get("donor_face", ""),
        "scores": scores,
        "extra": extra,
        "override": _stamp(mine.get("status")),
        "caption_override": _stamp(mine.get("caption")),
        "caption": text,
        "caption_file": str(path.relative_to(out)) if path is not None else None,
        "caption_budget": budget(counter.count(text)) if text else None,
        "captioner_caption": aside if person is not None else None,
        "has_result": has_result,
        "thumbs": thumbs,
        "warnings": card_warnings(cfg, d.get("status"), has_result, text, path),
    }


def card_warnings(cfg: Config, status: str | None, has_result: bool, caption: str | None, caption_file: Path | None) -> list[str]:
    """What the build's terminal warns about this photo, for the page to show on its card."""
    if not has_result:
        return []
    found = []
    trigger = cfg.character.trigger.strip()
    if status == KEPT and (caption_file is None or not caption_file.is_file()):
        found.append(f"no caption file: sd-scripts trains it on '{trigger} {cfg.character.class_word}' alone")
    if caption and trigger and trigger.lower() not in re.findall(r"[^\s,]+", caption.lower()):
        found.append(f"the caption has no trigger word '{trigger}': the LoRA learns this photo without it")
    return found


def tally_view(raw: list[dict[str, Any]]) -> dict[str, Any]:
    tally = Tally.of([Record.from_dict(d) for d in raw])
    return {**dataclasses.asdict(tally), "story": tally.describe()}


def page_state(out: Path, cfg: Config, counter: TokenCounter) -> dict[str, Any]:
    raw = raw_records(out)
    overrides = load_overrides(out)
    folder = image_folder(out, cfg)
    return {
        "run": str(out),
        "image_folder": str(folder.relative_to(out)) if folder else None,
        "tally": tally_view(raw),
        "cards": [build_card(out, cfg, d, overrides, counter) for d in raw],
        "samples": samples_view(out),
        "budgets": list(KOHYA_TOKEN_LENGTHS),
        "trigger": cfg.character.trigger,
    }


def cards_answer(out: Path, cfg: Config, counter: TokenCounter, keys: list[str]) -> dict[str, Any]:
    """The cards of ``keys`` and the summary line after an edit: all an edit changes on the page."""
    raw = raw_records(out)
    overrides = load_overrides(out)
    wanted = set(keys)
    folder = image_folder(out, cfg)
    return {
        "cards": [build_card(out, cfg, d, overrides, counter) for d in raw if d["key"] in wanted],
        "tally": tally_view(raw),
        "image_folder": str(folder.relative_to(out)) if folder else None,
    }


def samples_view(out: Path) -> dict[str, Any] | None:
    """Epochs (control first) with their identity scores and images, or None before `sample` ran."""
    path = Path(out) / SAMPLES_REPORT
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(report, dict):
        return None
    images: dict[str, list[dict[str, Any]]] = {}
    for im in report.get("images", []):
        if isinstance(im, dict) and isinstance(im.get("file"), str):
            entry = {k: im.get(k) for k in ("prompt", "seed", "similarity", "face_found")}
            images.setdefault(im.get("epoch"), []).append({**entry, "url": file_url(f"samples/{im['file']}")})
    epochs = []
    for e in report.get("epochs", []):
        if isinstance(e, dict):
            epochs.append({**{k: e.get(k) for k in ("label", "kind", "number", "mean_similarity", "share_with_face", "share_above_threshold", *EPOCH_VERDICT_KEYS)}, "images": images.get(e.get("label"), [])})
    grid = Path(out) / "samples" / "grid.png"
    return {
        "best_epoch": report.get("best_epoch"),
        "threshold": report.get("identity_threshold"),
        "scored": report.get("scored"),
        "complete": report.get("complete"),
        "epochs": epochs,
        "grid": file_url("samples/grid.png") if grid.is_file() else None,
        **epoch_plot_view(out, report),
    }
