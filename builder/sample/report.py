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

REPORT_VERSION = 1


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
    similarity: float | None = None


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
    best: str | None,
    complete: bool,
) -> dict[str, Any]:
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
            }
            for e in epochs
        ],
        "best_epoch": best,
        "images": [asdict(r) for r in records],
    }


def _fmt(value: float | None, pct: bool = False) -> str:
    if value is None:
        return "-"
    return f"{value * 100:.0f}%" if pct else f"{value:.3f}"


def print_table(epochs: list[Epoch], summaries: dict[str, EpochSummary], best: str | None, threshold: float) -> None:
    table = Table(title="Samples: identity similarity to the source")
    table.add_column("epoch")
    table.add_column("images", justify="right")
    table.add_column("with face", justify="right")
    table.add_column("mean similarity", justify="right")
    table.add_column(f">= {threshold:g}", justify="right")
    for e in epochs:
        s = summaries.get(e.label)
        name = escape(e.label) + (" (control)" if e.is_control else "") + (" [bold green]best[/]" if e.label == best else "")
        if s is None:
            table.add_row(name, "-", "-", "-", "-")
            continue
        table.add_row(
            name, str(s.images), _fmt(s.share_with_face, True), _fmt(s.mean_similarity), _fmt(s.share_above_threshold, True)
        )
    console.print(table)
