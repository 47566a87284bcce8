"""Render every epoch's samples (and the base-model control), score them, draw the grid, write the report."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from rich.markup import escape

from builder.config import Config
from builder.console import console, progress, random_weights_banner
from builder.device import resolve_device
from builder.io import atomic_write_json, load_image, write_image
from builder.sample.epochs import CONTROL, Epoch, epochs_from_files, find_epochs
from builder.sample.grid import Row, Tile, draw_grid
from builder.sample.pipeline import (
    check_lora,
    load_pipeline,
    lora_applied,
    render,
    resolve_base_model,
)
from builder.sample.prompts import SamplePrompt, load_prompts
from builder.sample.report import (
    ImageRecord,
    build_report,
    file_fingerprint,
    image_key,
    previous_keys,
    print_table,
)
from builder.sample.score import (
    EpochSummary,
    FaceScore,
    IdentityScorer,
    best_epoch,
    identity_threshold,
    summarize,
)


@dataclass(frozen=True)
class SampleResult:
    samples_dir: Path
    grid: Path
    report: Path
    best_epoch: str | None
    rendered: int  # images rendered this run (the rest were reused)
    summaries: dict[str, EpochSummary]


@dataclass(frozen=True)
class Job:
    epoch: Epoch
    prompt_index: int
    prompt: SamplePrompt
    seed: int

    @property
    def file(self) -> str:
        return f"{self.epoch.label}/p{self.prompt_index + 1:02d}_s{self.seed}.png"


def run_samples(cfg: Config, out: Path, loras: list[Path] | None = None) -> SampleResult:
    """Sample ``loras`` (default: every LoRA in ``<out>/model/``) and the base model; see the module doc."""
    out = Path(out)
    if cfg.runtime.random_weights:
        random_weights_banner()
    epochs = [CONTROL, *(epochs_from_files(loras) if loras else find_epochs(out / "model"))]
    base = resolve_base_model(cfg)
    prompts, prompts_from = load_prompts(cfg, out)
    scorer = IdentityScorer(cfg) if cfg.sample.score else None  # before rendering: fail early, not after an hour
    if scorer is None:
        console.print("[yellow]identity scoring is off ([sample] score = false)[/yellow]")

    samples = out / "samples"
    report_path = samples / "report.json"
    base_fp = file_fingerprint(base)
    jobs = [Job(e, i, p, seed) for e in epochs for i, p in enumerate(prompts) for seed in p.seeds]
    records = {
        job.file: ImageRecord(
            epoch=job.epoch.label,
            lora=str(job.epoch.lora) if job.epoch.lora else None,
            prompt_index=job.prompt_index,
            prompt=job.prompt.text,
            negative=job.prompt.negative,
            seed=job.seed,
            steps=job.prompt.steps,
            guidance=job.prompt.guidance,
            width=job.prompt.width,
            height=job.prompt.height,
            sampler=job.prompt.sampler,
            file=job.file,
            key=image_key(base_fp, job.epoch, job.prompt, job.seed),
        )
        for job in jobs
    }
    old = previous_keys(report_path)
    todo = [j for j in jobs if not (old.get(j.file) == records[j.file].key and (samples / j.file).is_file())]
    done = {j.file for j in jobs} - {j.file for j in todo}

    def save(complete: bool, summaries: dict[str, EpochSummary] | None = None, best: str | None = None) -> None:
        # Only finished images go in the report, so an interrupted run resumes where it stopped.
        shown = [records[j.file] for j in jobs if j.file in done]
        atomic_write_json(
            report_path,
            build_report(
                base_model=str(base), prompts_from=prompts_from, threshold=identity_threshold(cfg),
                scored=scorer is not None, epochs=epochs, records=shown, summaries=summaries or {},
                best=best, complete=complete,
            ),
        )

    console.print(
        f"sampling {len(epochs) - 1} LoRA file(s) + base model, {len(prompts)} prompt(s) ({escape(prompts_from)}): "
        f"{len(jobs)} images, {len(todo)} to render"
    )
    if todo:
        _render_all(cfg, base, epochs, todo, samples, done, save)

    summaries, best = _score_all(cfg, scorer, epochs, jobs, records, samples)
    save(True, summaries, best)
    grid = samples / "grid.png"
    write_image(grid, _grid(cfg, epochs, prompts, jobs, records, samples, summaries, best))
    print_table(epochs, summaries, best, identity_threshold(cfg))
    console.print(
        f"grid: {escape(str(grid))}\nreport: {escape(str(report_path))}"
        + (f"\nbest epoch: [bold]{escape(best)}[/bold]" if best else "")
    )
    return SampleResult(samples, grid, report_path, best, len(todo), summaries)


def _render_all(
    cfg: Config, base: Path, epochs: list[Epoch], todo: list[Job], samples: Path, done: set[str], save: Any
) -> None:
    device = resolve_device(cfg.runtime.device)
    console.print(f"loading base model {escape(str(base))} on {device}")
    pipe = load_pipeline(base, cfg, device)
    base_scheduler = dict(pipe.scheduler.config)
    pending = [e for e in epochs if any(j.epoch is e for j in todo)]
    for e in pending:  # every LoRA is checked before the first render, so a bad file fails in seconds
        if e.lora is not None:
            check_lora(e.lora, pipe)
    with progress() as bar:
        task = bar.add_task("rendering", total=len(todo), status="")
        for e in pending:
            with lora_applied(pipe, e.lora):
                for job in (j for j in todo if j.epoch is e):
                    bar.update(task, status=job.file)
                    write_image(samples / job.file, render(pipe, job.prompt, job.seed, base_scheduler))
                    done.add(job.file)
                    save(False)
                    bar.advance(task)


def _score_all(
    cfg: Config,
    scorer: IdentityScorer | None,
    epochs: list[Epoch],
    jobs: list[Job],
    records: dict[str, ImageRecord],
    samples: Path,
) -> tuple[dict[str, EpochSummary], str | None]:
    if scorer is None:
        return {}, None
    scores: dict[str, list[FaceScore]] = {e.label: [] for e in epochs}
    with progress() as bar:
        task = bar.add_task("scoring", total=len(jobs), status="")
        for job in jobs:
            s = scorer.score(load_image(samples / job.file, cfg.runtime.max_pixels))
            records[job.file].face_found = s.face_found
            records[job.file].similarity = None if s.similarity is None else round(s.similarity, 4)
            scores[job.epoch.label].append(s)
            bar.advance(task)
    threshold = identity_threshold(cfg)
    summaries = {label: summarize(label, s, threshold) for label, s in scores.items()}
    best = best_epoch([summaries[e.label] for e in epochs if not e.is_control])
    return summaries, best.label if best else None


def _grid(
    cfg: Config,
    epochs: list[Epoch],
    prompts: list[SamplePrompt],
    jobs: list[Job],
    records: dict[str, ImageRecord],
    samples: Path,
    summaries: dict[str, EpochSummary],
    best: str | None,
) -> np.ndarray:
    threshold = identity_threshold(cfg)
    columns = [f"p{i + 1} seed {seed}: {p.text}" for i, p in enumerate(prompts) for seed in p.seeds]
    rows = []
    for e in epochs:
        tiles = []
        for job in (j for j in jobs if j.epoch is e):
            r = records[job.file]
            if r.face_found is None:
                caption, good = "not scored", False
            elif r.similarity is None:
                caption, good = "no face", False
            else:
                caption, good = f"{r.similarity:.2f}", r.similarity >= threshold
            tiles.append(Tile(load_image(samples / job.file, cfg.runtime.max_pixels), caption, good))
        s = summaries.get(e.label)
        summary = ["control: base model, no LoRA"] if e.is_control else []
        if s is not None:
            mean = "-" if s.mean_similarity is None else f"{s.mean_similarity:.3f}"
            summary += [f"mean similarity {mean}", f"faces {s.share_with_face:.0%}", f">= {threshold:g}: {s.share_above_threshold:.0%}"]
        rows.append(Row(label=e.label, summary=summary, tiles=tiles, best=e.label == best))
    return draw_grid(rows, columns)
