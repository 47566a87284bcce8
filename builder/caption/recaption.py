"""Captioning images on disk: the ``caption`` command and the build stage (``recaption``).

Modes: ``skip`` captions only images without a caption file (existing files are not
touched), ``overwrite`` captions every image, ``prefix-only`` puts the trigger and class
word in front of existing captions without loading a captioning model (running it
again changes nothing). Each caption file is written atomically as soon as it is made,
so an interrupted run resumes with ``skip``. In every mode, a caption a person wrote (on the
review page, kept in the run folder's overrides.json) is left as it is.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from rich.table import Table

from builder.caption.base import CaptionBackend, load_captioner
from builder.caption.dataset_scan import CaptionTarget, scan_dataset
from builder.caption.text import (
    CaptionRules,
    TokenCounter,
    fit_caption,
    load_clip_counter,
    remove_prefix,
)
from builder.config import Config
from builder.console import console, progress
from builder.device import resolve_device
from builder.errors import BuilderError, ImageError
from builder.io import atomic_write_text, load_image
from builder.overrides import OVERRIDES, caption_overrides

CaptionerFactory = Callable[[Config, torch.device], CaptionBackend]


@dataclass
class CaptionSummary:
    captioned: list[Path] = field(default_factory=list)
    skipped: list[Path] = field(default_factory=list)
    prefixed: list[Path] = field(default_factory=list)
    failed: list[tuple[Path, str]] = field(default_factory=list)

    def merge(self, other: CaptionSummary) -> None:
        for name in ("captioned", "skipped", "prefixed", "failed"):
            getattr(self, name).extend(getattr(other, name))

    @property
    def done(self) -> int:
        return len(self.captioned) + len(self.skipped) + len(self.prefixed)

    def table(self) -> Table:
        table = Table(title="caption summary")
        for column in ("captioned", "skipped", "prefixed", "failed"):
            table.add_column(column, justify="right")
        table.add_row(*(str(len(getattr(self, c))) for c in ("captioned", "skipped", "prefixed", "failed")))
        return table


def _batches(items: Sequence, size: int) -> Iterator[Sequence]:
    for start in range(0, len(items), max(size, 1)):
        yield items[start : start + size]


def _load_batch(paths: Sequence[Path], max_pixels: int) -> tuple[list[int], list[np.ndarray], list[tuple[int, str]]]:
    """Decode what can be decoded; the rest come back as (index, reason)."""
    ok, images, bad = [], [], []
    for i, path in enumerate(paths):
        try:
            images.append(load_image(path, max_pixels))
            ok.append(i)
        except ImageError as exc:
            bad.append((i, str(exc)))
    return ok, images, bad


def _read_caption(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise BuilderError(f"{path}: caption is not UTF-8 text ({exc.reason})") from None
    except OSError as exc:
        raise BuilderError(f"{path}: cannot read caption ({exc.strerror or exc})") from None


def _warn(summary: CaptionSummary, path: Path, reason: str) -> None:
    reason = reason.removeprefix(f"{path}: ")
    summary.failed.append((path, reason))
    console.print(f"[yellow]failed[/yellow] {path}: {reason}")


def _write(summary: CaptionSummary, target: CaptionTarget, text: str) -> bool:
    try:
        atomic_write_text(target.caption, text)
    except BuilderError as exc:
        _warn(summary, target.image, str(exc))
        return False
    return True


def _person_captions(targets: list[CaptionTarget]) -> dict[Path, str]:
    """image -> caption text from overrides.json, for images inside a run folder's img/ or val/<N>_<tokens>/."""
    out: dict[Path, str] = {}
    by_run: dict[Path, dict[str, str]] = {}
    for t in targets:
        run_dir = t.image.parents[2] if len(t.image.parents) > 2 and t.image.parents[1].name in ("img", "val") else None
        if run_dir is None or not (run_dir / OVERRIDES).is_file():
            continue
        if run_dir not in by_run:
            by_run[run_dir] = caption_overrides(run_dir)
        if t.image.name in by_run[run_dir]:
            out[t.image] = by_run[run_dir][t.image.name]
    return out


def recaption(
    folder: Path,
    cfg: Config,
    trigger: str | None = None,
    class_word: str | None = None,
    captioner_factory: CaptionerFactory = load_captioner,
    counter: TokenCounter | None = None,
) -> CaptionSummary:
    """Caption (or prefix) every image under ``folder`` according to cfg.caption.mode.

    ``trigger``/``class_word`` given explicitly override the kohya folder names. The
    captioning model is loaded only if some image needs a new caption.
    """
    c = cfg.caption
    rules = CaptionRules.from_config(c)
    targets, problems = scan_dataset(
        folder, c.extension, trigger, class_word, cfg.character.trigger, cfg.character.class_word
    )
    summary = CaptionSummary()
    for path, reason in problems:
        _warn(summary, path, reason)
    if not targets and not problems:
        raise BuilderError(f"{folder}: no images found")
    origins = sorted({t.origin for t in targets})
    console.print(f"{len(targets)} images under {folder}; trigger and class from {', '.join(origins) or '-'}")

    def tokens() -> TokenCounter:
        nonlocal counter
        counter = counter or load_clip_counter(c.clip_tokenizer, cfg.runtime.weights_dir)
        return counter

    written = _person_captions(targets)
    todo: list[CaptionTarget] = []
    for t in targets:
        exists = t.caption.exists()
        if t.image in written:
            # A person's caption is never replaced, whatever the mode; settle wrote it already.
            if (not exists or _read_caption(t.caption) != written[t.image]) and not _write(summary, t, written[t.image]):
                continue
            summary.skipped.append(t.image)
        elif c.mode == "skip" and exists:
            summary.skipped.append(t.image)
        elif c.mode == "prefix-only":
            try:
                old = _read_caption(t.caption) if exists else ""
                new = fit_caption(t.trigger, t.class_word, remove_prefix(old, t.trigger, t.class_word, rules), rules, tokens())
            except BuilderError as exc:
                _warn(summary, t.image, str(exc))
                continue
            if exists and old.strip() == new:
                summary.skipped.append(t.image)
            elif _write(summary, t, new):
                summary.prefixed.append(t.image)
        else:
            todo.append(t)

    if written:
        console.print(f"{len(written)} caption(s) written by a person ({OVERRIDES}) are kept as they are")
    if todo:
        _caption_targets(todo, cfg, rules, tokens(), captioner_factory, summary)
    console.print(summary.table())
    return summary


def _caption_targets(
    todo: list[CaptionTarget],
    cfg: Config,
    rules: CaptionRules,
    counter: TokenCounter,
    captioner_factory: CaptionerFactory,
    summary: CaptionSummary,
) -> None:
    captioner = captioner_factory(cfg, resolve_device(cfg.runtime.device))
    with progress() as bar:
        task = bar.add_task("captioning", total=len(todo), status="")
        for batch in _batches(todo, cfg.caption.batch_size):
            ok, images, bad = _load_batch([t.image for t in batch], cfg.runtime.max_pixels)
            for i, reason in bad:
                _warn(summary, batch[i].image, reason)
            captions = captioner.caption(images) if images else []
            for i, c in zip(ok, captions, strict=True):
                t = batch[i]
                if _write(summary, t, fit_caption(t.trigger, t.class_word, c.sentence, rules, counter, c.tags)):
                    summary.captioned.append(t.image)
            bar.update(task, advance=len(batch), status=batch[-1].image.name)
