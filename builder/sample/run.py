"""Render every epoch's samples (and the base-model control), score them, draw the grid, write the report."""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from rich.markup import escape

from builder.config import Config
from builder.console import console, progress, random_weights_banner
from builder.device import resolve_device
from builder.io import atomic_write_json, load_image, write_image
from builder.sample.adherence import Adherence, ClipAdherence, strip_trigger
from builder.sample.epochs import CONTROL, Epoch, epochs_from_files, find_epochs
from builder.sample.grid import Row, Tile, draw_grid
from builder.sample.pipeline import (
    check_lora,
    load_pipeline,
    lora_applied,
    render,
    resolve_base_model,
)
from builder.sample.plot import PLOT_FILE, write_epoch_plot
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
    identity_threshold,
    summarize,
)
from builder.sample.verdict import BestEpoch, choose_best


@dataclass(frozen=True)
class SampleResult:
    samples_dir: Path
    grid: Path
    report: Path
    best_epoch: str | None
    rendered: int  # images rendered this run (the rest were reused)
    summaries: dict[str, EpochSummary]
    verdict: BestEpoch | None = None  # the rule's outcome; None when not scored
    score_seconds: dict[str, float] | None = None  # time spent per score kind (bench/)


@dataclass(frozen=True)
class Job:
    epoch: Epoch
    prompt_index: int
    prompt: SamplePrompt
    seed: int

    @property
    def file(self) -> str:
        return f"{self.epoch.label}/p{self.prompt_index + 1:02d}_s{self.seed}.png"


def run_samples(
    cfg: Config, out: Path, loras: list[Path] | None = None, adherence: Adherence | None = None
) -> SampleResult:
    """Sample ``loras`` (default: every LoRA in ``<out>/model/``) and the base model; see the module doc.

    ``adherence`` replaces the CLIP scorer ``[sample] adherence`` would load.
    """
    out = Path(out)
    if cfg.runtime.random_weights:
        random_weights_banner()
    epochs = [CONTROL, *(epochs_from_files(loras) if loras else find_epochs(out / "model"))]
    base = resolve_base_model(cfg)
    prompts, prompts_from = load_prompts(cfg, out)
    scorer = IdentityScorer(cfg, out) if cfg.sample.score else None  # before rendering: fail early, not after an hour
    if scorer is None:
        console.print("[yellow]identity scoring is off ([sample] score = false)[/yellow]")
    elif adherence is None and cfg.sample.adherence:
        adherence = ClipAdherence.load(cfg, str(resolve_device(cfg.runtime.device)))

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

    def save(complete: bool, summaries: dict[str, EpochSummary] | None = None, verdict: BestEpoch | None = None) -> None:
        # Only finished images go in the report, so an interrupted run resumes where it stopped.
        shown = [records[j.file] for j in jobs if j.file in done]
        atomic_write_json(
            report_path,
            build_report(
                base_model=str(base), prompts_from=prompts_from, threshold=identity_threshold(cfg),
                scored=scorer is not None, epochs=epochs, records=shown, summaries=summaries or {},
                verdict=verdict, complete=complete,
            ),
        )

    console.print(
        f"sampling {len(epochs) - 1} LoRA file(s) + base model, {len(prompts)} prompt(s) ({escape(prompts_from)}): "
        f"{len(jobs)} images, {len(todo)} to render"
    )
    if todo:
        _render_all(cfg, base, epochs, todo, samples, done, save)

    summaries, verdict, seconds = _score_all(cfg, scorer, adherence, epochs, jobs, records, samples, out)
    best = verdict.best if verdict else None
    save(True, summaries, verdict)
    grid = samples / "grid.png"
    write_image(grid, _grid(cfg, epochs, prompts, jobs, records, samples, summaries, best))
    plot = write_epoch_plot(samples / PLOT_FILE, epochs, summaries, verdict) if verdict else None
    if plot is None:  # unscored: an earlier run's curves would no longer match the report
        (samples / PLOT_FILE).unlink(missing_ok=True)
    print_table(epochs, summaries, verdict, identity_threshold(cfg))
    console.print(
        f"grid: {escape(str(grid))}\nreport: {escape(str(report_path))}"
        + (f"\nepoch plot: {escape(str(plot))}" if plot else "")
        + (f"\n[bold]{escape(verdict.sentence)}[/bold]" if verdict else "")
    )
    return SampleResult(samples, grid, report_path, best, len(todo), summaries, verdict, seconds)


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


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


def validation_losses(out: Path, epochs: list[Epoch]) -> dict[str, float]:
    """Each epoch's validation loss from the training log; the final file has the last epoch's."""
    from builder.kohya.events import epoch_scalars

    losses = epoch_scalars(out / "log")
    if not losses:
        return {}
    found = {}
    for e in epochs:
        number = e.number if e.kind == "epoch" else max(losses) if e.kind == "final" else None
        if number in losses:
            found[e.label] = losses[number]
    return found


def _score_all(
    cfg: Config,
    scorer: IdentityScorer | None,
    adherence: Adherence | None,
    epochs: list[Epoch],
    jobs: list[Job],
    records: dict[str, ImageRecord],
    samples: Path,
    out: Path,
) -> tuple[dict[str, EpochSummary], BestEpoch | None, dict[str, float]]:
    seconds = {"identity": 0.0, "adherence": 0.0}
    if scorer is None:
        return {}, None, seconds
    seconds["donor_identity"] = scorer.donor_seconds
    scores: dict[str, list[FaceScore]] = {e.label: [] for e in epochs}
    with progress() as bar:
        task = bar.add_task("scoring", total=len(jobs), status="")
        for job in jobs:
            image = load_image(samples / job.file, cfg.runtime.max_pixels)
            t0 = time.perf_counter()
            s = scorer.score(image)
            t1 = time.perf_counter()
            if adherence is not None:
                text = strip_trigger(job.prompt.text, cfg.character.trigger)
                s = dataclasses.replace(s, adherence=adherence.score(image, text))
            seconds["identity"] += t1 - t0
            seconds["adherence"] += time.perf_counter() - t1
            r = records[job.file]
            r.face_found = s.face_found
            r.similarity, r.donor_similarity, r.adherence = (
                _round(s.similarity), _round(s.donor_similarity), _round(s.adherence)
            )
            scores[job.epoch.label].append(s)
            bar.advance(task)
    threshold = identity_threshold(cfg)
    losses = validation_losses(out, epochs)
    summaries = {label: summarize(label, s, threshold, losses.get(label)) for label, s in scores.items()}
    verdict = choose_best(
        [summaries[e.label] for e in epochs if not e.is_control],
        next((summaries[e.label] for e in epochs if e.is_control), None),
        cfg.sample.max_donor_share,
        cfg.sample.adherence_margin,
    )
    return summaries, verdict, seconds


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
            if s.share_closer_to_donor is not None:
                summary.append(f"closer to donor {s.share_closer_to_donor:.0%}")
            if s.mean_adherence is not None:
                summary.append(f"adherence {s.mean_adherence:.3f}")
        rows.append(Row(label=e.label, summary=summary, tiles=tiles, best=e.label == best))
    return draw_grid(rows, columns)
