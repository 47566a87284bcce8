"""What ``samples/report.json`` holds, the resume key of each image, and the terminal table.

An image is rendered again only when something that changes its pixels changed: the base
model's files, the LoRA file (its size and modification time), the prompt, the negative
prompt, seed, steps, guidance, size or sampler. That fingerprint is the image's ``key``.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from rich.markup import escape
from rich.table import Table

from builder.console import console
from builder.sample.epochs import Epoch
from builder.sample.prompts import SamplePrompt
from builder.sample.score import EpochSummary
from builder.sample.verdict import BestEpoch

# 2: each image's donor similarity and adherence, each epoch's leakage, adherence and
# validation loss, and the best-epoch rule with its verdict per epoch.
REPORT_VERSION = 2


@dataclass
class ImageRecord:
    epoch: str
    lora: str | None
    prompt_index: int
    prompt: str
    negative: str
    seed: int
    steps: int
    guidance: float
    width: int
    height: int
    sampler: str
    file: str  # relative to samples/
    key: str
    face_found: bool | None = None  # None: not scored
    similarity: float | None = None  # report judge cosine to the source identity
    donor_similarity: float | None = None  # the same to the donor identity
    adherence: float | None = None  # CLIP cosine to the prompt without the trigger


def file_fingerprint(path: Path) -> list[Any]:
    """Path, size and mtime of a file, or of every file in a folder (a diffusers base model)."""
    path = Path(path).resolve()
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    out: list[Any] = []
    for f in files:
        st = f.stat()
        out.append([str(f), st.st_size, st.st_mtime_ns])
    return out


def image_key(base_fingerprint: list[Any], epoch: Epoch, prompt: SamplePrompt, seed: int) -> str:
    payload = {
        "base": base_fingerprint,
        "lora": file_fingerprint(epoch.lora) if epoch.lora else None,
        "prompt": prompt.text,
        "negative": prompt.negative,
        "seed": seed,
        "steps": prompt.steps,
        "guidance": prompt.guidance,
        "size": [prompt.width, prompt.height],
        "sampler": prompt.sampler,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode("utf-8")).hexdigest()[:16]


def previous_keys(report_path: Path) -> dict[str, str]:
    """file -> key from an earlier report; an unreadable report just means nothing is reused."""
    try:
        data = json.loads(Path(report_path).read_text(encoding="utf-8"))
        return {r["file"]: r["key"] for r in data.get("images", [])}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return {}


def build_report(
    *,
    base_model: str,
    prompts_from: str,
    threshold: float,
    scored: bool,
    epochs: list[Epoch],
    records: list[ImageRecord],
    summaries: dict[str, EpochSummary],
    verdict: BestEpoch | None,
    complete: bool,
) -> dict[str, Any]:
    verdicts = verdict.to_dict()["verdicts"] if verdict else {}
    return {
        "version": REPORT_VERSION,
        "complete": complete,
        "base_model": base_model,
        "prompts_from": prompts_from,
        "identity_threshold": threshold,
        "scored": scored,
        "epochs": [
            {
                "label": e.label,
                "lora": str(e.lora) if e.lora else None,
                "kind": e.kind,
                "number": e.number,
                **({k: v for k, v in asdict(summaries[e.label]).items() if k != "label"} if e.label in summaries else {}),
                **({"verdict": verdicts[e.label]} if e.label in verdicts else {}),
            }
            for e in epochs
        ],
        "best_epoch": verdict.best if verdict else None,
        "best_epoch_rule": (
            {k: v for k, v in verdict.to_dict().items() if k not in ("verdicts", "best")} if verdict else None
        ),
        "images": [asdict(r) for r in records],
    }


def _fmt(value: float | None, pct: bool = False) -> str:
    if value is None:
        return "-"
    return f"{value * 100:.0f}%" if pct else f"{value:.3f}"


def _flags(label: str, verdict: BestEpoch | None) -> str:
    if verdict is None or label not in verdict.verdicts:
        return ""
    v = verdict.verdicts[label]
    marks = [m for m, on in (("[red]leaks donor[/]", v.leaking), ("[red]overfit[/]", v.overfit)) if on]
    if label == verdict.best:
        marks.append("[bold green]best[/]")
    elif label == verdict.closest:
        marks.append("[yellow]closest[/]")
    return " ".join(marks)


def print_table(
    epochs: list[Epoch], summaries: dict[str, EpochSummary], verdict: BestEpoch | None, threshold: float
) -> None:
    """One row per epoch: identity, donor leakage, adherence (and validation loss when logged)."""
    table = Table(title="Samples: identity to the source, leakage to the donor, prompt adherence")
    table.add_column("epoch")
    table.add_column("images", justify="right")
    table.add_column("with face", justify="right")
    table.add_column("identity", justify="right")
    table.add_column(f">= {threshold:g}", justify="right")
    table.add_column("donor sim.", justify="right")
    table.add_column("closer to donor", justify="right")
    table.add_column("adherence", justify="right")
    show_loss = any(s.validation_loss is not None for s in summaries.values())
    if show_loss:
        table.add_column("val. loss", justify="right")
    table.add_column("verdict")
    for e in epochs:
        s = summaries.get(e.label)
        name = escape(e.label) + (" (control)" if e.is_control else "")
        if s is None:
            table.add_row(name, *["-"] * (8 + show_loss))
            continue
        loss = [_fmt(s.validation_loss)] if show_loss else []
        table.add_row(
            name, str(s.images), _fmt(s.share_with_face, True), _fmt(s.mean_similarity), _fmt(s.share_above_threshold, True),
            _fmt(s.mean_donor_similarity), _fmt(s.share_closer_to_donor, True), _fmt(s.mean_adherence), *loss,
            _flags(e.label, verdict),
        )
    console.print(table)
    if verdict is not None:
        console.print(f"best epoch rule: {escape(verdict.rule)}")
