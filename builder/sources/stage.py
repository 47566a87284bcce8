"""`launch.py sources`: generate, judge and record a varied photo set of the new face.

The output folder is itself a source folder. The kept photos lie in it (``001_<key>.png``
...), the dropped ones in ``dropped/``, and ``sources.jsonl`` has one record per photo
(prompt, seed, file, kept or dropped, reason, face count, judge similarity). The source
loader reads a folder that has a ``sources.jsonl`` through it, so ``--source faces/`` uses
the kept photos only. The folder also holds ``contact_sheet.png`` (the kept photos) and
``contact_sheet_dropped.png`` (the dropped ones, with reasons), and ``sources_report.json``
(thresholds, counts, the kept set's pairwise identity spread).

Resumable: a photo's name carries a hash of everything that makes it (prompt, negative,
seed, steps, guidance, merge step, size, base model, PhotoMaker file, the source photos'
bytes), so a photo already on disk is never made again. Every run re-judges them all
(seconds), so a changed threshold takes effect without regenerating.
"""

from __future__ import annotations

import contextlib
import copy
import gc
import hashlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from rich.table import Table

from builder import weights as W
from builder.config import Config
from builder.console import console, progress, random_weights_banner
from builder.contact_sheet import write_contact_sheet
from builder.device import resolve_device
from builder.errors import BuilderError, ConfigError
from builder.io import (
    atomic_write_json,
    atomic_write_text,
    load_image,
    remove_stale_temps,
    write_image,
)
from builder.sources.generate import Job, PhotoMakerSDXL, clip_pixels, start_merge_step
from builder.sources.id_photos import PACK, id_photos
from builder.sources.judge import SourcesJudge, Spread, spread
from builder.swap.source import SOURCES_RECORDS, source_paths

DEFAULT_BASE = "realvisxl_v4"  # registry name of SG161222/RealVisXL_V4.0, PhotoMaker V2's base
DROPPED = "dropped"
KEPT_SHEET = "contact_sheet.png"
DROPPED_SHEET = "contact_sheet_dropped.png"
REPORT = "sources_report.json"
SEED_STRIDE = 1000  # a second round through the prompts uses seed + 1000, and so on


@dataclass
class SourcesResult:
    out: Path
    records: list[dict] = field(default_factory=list)
    generated: int = 0  # photos made this run (the rest were on disk)
    spread: Spread | None = None
    threshold: float | None = None  # the judge cosine a kept photo reaches

    @property
    def kept(self) -> int:
        return sum(r["status"] == "kept" for r in self.records)


def jobs(cfg: Config, n: int) -> list[Job]:
    """``n`` pictures from the configured prompts and seeds, in order."""
    s = cfg.sources
    if not s.prompts:
        raise ConfigError("sources.prompts is empty: give at least one prompt")
    if len(s.seeds) != len(s.prompts):
        raise ConfigError(f"sources.seeds has {len(s.seeds)} seeds for {len(s.prompts)} prompts: give one seed per prompt")
    merge = start_merge_step(s.style_strength, s.steps)
    out = []
    for i in range(n):
        k = i % len(s.prompts)
        prompt = s.prompts[k].replace("{class_word}", cfg.character.class_word)
        seed = s.seeds[k] + SEED_STRIDE * (i // len(s.prompts))
        out.append(Job(prompt, s.negative, seed, s.steps, s.guidance, merge, s.width, s.height))
    return out


def base_spec(cfg: Config) -> str:
    """sources.base_model, else RealVisXL V4.0, or with --random-weights the generated random SDXL."""
    from builder.base_model import random_spec

    if cfg.sources.base_model:
        return cfg.sources.base_model
    return random_spec("sdxl") if cfg.runtime.random_weights else DEFAULT_BASE


def base_model_path(cfg: Config) -> Path:
    """The SDXL base, from any base-model source (builder.base_model); default RealVisXL V4.0."""
    from builder.base_model import resolve_base_model
    from builder.families import detect_family, title

    spec = base_spec(cfg)
    resolved = resolve_base_model(spec, cfg)
    family = resolved.family_hint or detect_family(resolved.path)
    if family not in ("sdxl", None):
        raise BuilderError(f"sources.base_model {spec} is an {title(family)} model; PhotoMaker V2 needs an SDXL base")
    return resolved.path


def photomaker_origin(cfg: Config) -> str:
    if cfg.runtime.random_weights:
        return f"random:{cfg.runtime.seed}"
    return str(Path(cfg.sources.photomaker).expanduser()) if cfg.sources.photomaker else str(W.require("photomaker_v2", cfg.runtime.weights_dir))


def needed_weights(cfg: Config) -> list[str]:
    """Registry names the sources stage reads (the base model is the user's: random weights keep it)."""
    base = base_spec(cfg)
    names = [base] if base in W.REGISTRY else []
    if cfg.runtime.random_weights:
        return names
    if not cfg.sources.photomaker:
        names.append("photomaker_v2")
    names.append(PACK)
    if "insightface" in (cfg.faces.detector, cfg.faces.judge) and cfg.faces.insightface_pack not in names:
        names.append(cfg.faces.insightface_pack)
    return names


def image_key(job: Job, base: Path, photomaker: str, ids_digest: str, trigger: str) -> str:
    blob = json.dumps({"job": job.__dict__, "base": str(base), "photomaker": photomaker, "ids": ids_digest, "trigger": trigger}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def load_sdxl(path: Path, cfg: Config, device: torch.device):
    """The SDXL pipeline through the sampler's loader (a folder, or a single file with its configs)."""
    from diffusers import StableDiffusionXLPipeline

    from builder.sample.pipeline import load_pipeline

    scfg = copy.deepcopy(cfg)
    scfg.kohya.model_family = "sdxl"  # decides only for a .ckpt, whose family cannot be read
    scfg.sample.model_config = cfg.sources.model_config
    pipe = load_pipeline(path, scfg, device)
    if not isinstance(pipe, StableDiffusionXLPipeline):
        raise BuilderError(f"{path} loaded as {type(pipe).__name__}; PhotoMaker V2 needs an SDXL base")
    return pipe


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """No info chatter from diffusers while the LoRA goes in ("no LoRA keys for the text
    encoders": PhotoMaker's LoRA is for the UNet only)."""
    from diffusers.utils import logging as dlog

    level = dlog.get_verbosity()
    dlog.set_verbosity_error()
    try:
        yield
    finally:
        dlog.set_verbosity(level)


def load_photomaker(cfg: Config, pipe, origin: str) -> PhotoMakerSDXL:
    from builder.sources.photomaker import config_for, random_checkpoint, read_checkpoint

    if cfg.runtime.random_weights:
        random_weights_banner()
        checkpoint, enc_cfg = random_checkpoint(pipe.unet, seed=cfg.runtime.seed), config_for(int(pipe.unet.config.cross_attention_dim))
    else:
        checkpoint, enc_cfg = read_checkpoint(Path(origin)), None
    with _quiet():
        return PhotoMakerSDXL.load(pipe, checkpoint, origin, cfg.sources.trigger, enc_cfg)


def make_sources(cfg: Config, out: Path, n: int | None = None) -> SourcesResult:
    """Generate what is missing, judge everything, write records, sheets and the report."""
    from builder.faces.detect import make_detector
    from builder.faces.identity import make_judge

    out = Path(out)
    n = cfg.sources.n if n is None else n
    if n < 1:
        raise ConfigError(f"sources.n = {n}: generate at least one photo")
    try:
        (out / DROPPED).mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise BuilderError(f"cannot write {out}: {exc.strerror or exc}") from None
    remove_stale_temps(out)
    ids = id_photos(source_paths(cfg.paths.source), cfg)
    for path, reason in ids.failed:
        console.print(f"source {path} skipped: {reason}")
    base, origin = base_model_path(cfg), photomaker_origin(cfg)
    planned = []
    for i, job in enumerate(jobs(cfg, n)):
        name = f"{i + 1:03d}_{image_key(job, base, origin, ids.digest, cfg.sources.trigger)[:12]}.png"
        planned.append((job, name))
    on_disk = {name for _, name in planned if (out / name).is_file() or (out / DROPPED / name).is_file()}
    todo = [(job, name) for job, name in planned if name not in on_disk]
    result = SourcesResult(out=out)
    if todo:
        result.generated = _generate(cfg, base, origin, ids, todo, out)
    _judge_all(cfg, make_detector(cfg), make_judge(cfg), ids.used, planned, result)
    _write_outputs(cfg, result)
    return result


def _generate(cfg: Config, base: Path, origin: str, ids, todo: list[tuple[Job, str]], out: Path) -> int:
    device = resolve_device(cfg.runtime.device)
    pipe = load_sdxl(base, cfg, device)
    maker = load_photomaker(cfg, pipe, origin)
    pixels = clip_pixels(ids.images_rgb)
    embeds = torch.from_numpy(np.stack(ids.embeds))
    try:
        with progress() as bar:
            task = bar.add_task("PhotoMaker", total=len(todo), status="")
            for job, name in todo:
                # Written beside the kept photos first; judging moves it where it belongs.
                write_image(out / name, maker.generate(job, pixels, embeds))
                bar.update(task, advance=1, status=name)
    finally:
        del maker, pipe
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return len(todo)


def _judge_all(cfg: Config, detector, judge, source_files: list[str], planned: list[tuple[Job, str]], result: SourcesResult) -> None:
    out = result.out
    check = SourcesJudge(cfg, detector, judge, [Path(p) for p in source_files])
    enforce = not cfg.runtime.random_weights  # random weights draw noise: judged, recorded, kept
    kept_vectors = []
    for i, (job, name) in enumerate(planned):
        path = out / name if (out / name).is_file() else out / DROPPED / name
        verdict = check(load_image(path, cfg.runtime.max_pixels))
        kept = verdict.kept or not enforce
        target = out / name if kept else out / DROPPED / name
        if path != target:
            os.replace(path, target)
        if kept and verdict.embedding is not None:
            kept_vectors.append(verdict.embedding)
        result.records.append({
            "index": i + 1,
            "passed": verdict.kept,  # the judge's verdict; random weights keep what fails it
            "file": str(target.relative_to(out)),
            "status": "kept" if kept else "dropped",
            "reason": verdict.reason,
            "faces": verdict.faces,
            "similarity": None if verdict.similarity is None else round(verdict.similarity, 4),
            "prompt": job.prompt,
            "negative": job.negative,
            "seed": job.seed,
            "steps": job.steps,
            "guidance": job.guidance,
            "start_merge_step": job.start_merge_step,
        })
    result.spread = spread(kept_vectors)
    result.threshold = check.threshold


def _write_outputs(cfg: Config, result: SourcesResult) -> None:
    out = result.out
    atomic_write_text(out / SOURCES_RECORDS, "".join(json.dumps(r) + "\n" for r in result.records))

    def label(r: dict) -> str:
        sim = "-" if r["similarity"] is None else f"{r['similarity']:.2f}"
        return f"{r['index']:03d} {sim}" + (f": {r['reason']}" if r["reason"] else "")

    for status, sheet in (("kept", KEPT_SHEET), ("dropped", DROPPED_SHEET)):
        items = [(out / r["file"], label(r)) for r in result.records if r["status"] == status]
        if items:
            write_contact_sheet(items, out / sheet, max_pixels=cfg.runtime.max_pixels)
        elif (out / sheet).is_file():
            (out / sheet).unlink()  # a sheet of an earlier run would show photos no longer in that state
    report = {
        "judge": cfg.faces.judge,
        "threshold": result.threshold,
        "kept": result.kept,
        "dropped": len(result.records) - result.kept,
        "generated_this_run": result.generated,
        "pairwise_identity": result.spread.as_dict() if result.spread else None,
        "random_weights": cfg.runtime.random_weights,
    }
    atomic_write_json(out / REPORT, report)
    print_summary(result, report)


def print_summary(result: SourcesResult, report: dict) -> None:
    t = Table(title=f"sources in {result.out}")
    for col in ("#", "status", "similarity", "reason", "prompt"):
        t.add_column(col)
    for r in result.records:
        sim = "-" if r["similarity"] is None else f"{r['similarity']:.3f}"
        t.add_row(str(r["index"]), r["status"], sim, r["reason"], r["prompt"][:50])
    console.print(t)
    pair = report["pairwise_identity"]
    spread_text = (
        f"pairwise identity of the kept set ({pair['n']}): min {pair['min']:.3f}, mean {pair['mean']:.3f}, max {pair['max']:.3f}"
        if pair and pair["mean"] is not None else "pairwise identity: fewer than two kept photos with a face"
    )
    console.print(
        f"[bold]sources[/bold]: {result.kept} kept, {len(result.records) - result.kept} dropped "
        f"({result.generated} made this run; {report['judge']} judge, threshold {report['threshold']:.2f}); {spread_text}"
    )
