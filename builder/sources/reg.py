"""``--reg-generate N``: class images rendered with the base model into ``reg/<repeats>_<class>/``.

Image i renders ``[dataset] reg_prompts[i % len]`` (``{class_word}`` filled in) with seed
``reg_seed + i`` through the sampler's own pipeline (builder.sample.pipeline), so every model
family renders with its pipeline class and, with --random-weights, from its random base. The
prompt is the image's caption: the class, never the trigger. A file's name carries a hash of
everything that makes it (prompt, seed, steps, guidance, size, sampler, base model), so a
re-run skips what is written, and a changed setting makes new files; our own ``gen_`` files
that no longer belong are removed, images a person put there are not touched. Every file is
written atomically; ``reg_generated.json`` records each image and ``contact_sheet_reg.png``
shows them.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path

from builder.config import Config
from builder.console import console, progress
from builder.contact_sheet import write_contact_sheet
from builder.errors import BuilderError
from builder.io import atomic_write_json, atomic_write_text, write_image
from builder.kohya.dataset import CAPTION_EXTENSIONS, kohya_images, reg_dir

PREFIX = "gen_"
RECORD = "reg_generated.json"
SHEET = "contact_sheet_reg.png"


@dataclass(frozen=True)
class RegImage:
    file: str  # relative to the run folder
    prompt: str
    seed: int
    steps: int
    guidance: float
    width: int
    height: int
    sampler: str
    base_model: str


@dataclass
class RegSummary:
    folder: Path
    images: list[RegImage]
    rendered: int  # this run; the rest were on disk

    def describe(self) -> str:
        return f"{len(self.images)} class images in {self.folder} ({self.rendered} rendered this run)"


def reg_prompts(cfg: Config, n: int) -> list[tuple[str, int]]:
    """(prompt, seed) of each of the ``n`` images."""
    templates = cfg.dataset.reg_prompts
    if not templates:
        raise BuilderError("[dataset] reg_prompts is empty: --reg-generate needs at least one class prompt")
    word = cfg.character.class_word
    return [(templates[i % len(templates)].replace("{class_word}", word), cfg.dataset.reg_seed + i) for i in range(n)]


def _name(index: int, payload: dict) -> str:
    digest = hashlib.sha1(json.dumps(payload, sort_keys=True).encode("utf-8")).hexdigest()[:8]
    return f"{PREFIX}{index + 1:04d}_{digest}.png"


def plan_reg_images(cfg: Config, out: Path, base_model: Path, family: str) -> list[RegImage]:
    from builder.families import sample_settings
    from builder.kohya.toml import resolution_for
    from builder.sample.prompts import sampler_name

    size = resolution_for(cfg, family)
    folder = reg_dir(out, cfg)
    d = sample_settings(cfg, family)  # [sample] over the family's defaults, as the sampler reads them
    images = []
    for i, (prompt, seed) in enumerate(reg_prompts(cfg, cfg.dataset.reg_generate)):
        spec = {
            "prompt": prompt, "seed": seed, "steps": d.steps, "guidance": d.guidance, "width": size,
            "height": size, "sampler": sampler_name(d.sampler) if d.sampler else "", "base_model": str(base_model),
        }
        images.append(RegImage(file=str((folder / _name(i, spec)).relative_to(out)), **spec))
    return images


def generate_reg(cfg: Config, out: Path) -> RegSummary:
    """Render the missing class images (the base model is ``paths.base_model``, made local by the pipeline)."""
    from builder.device import resolve_device
    from builder.sample.pipeline import load_pipeline, pipeline_family, render, resolve_base_model
    from builder.sample.prompts import SamplePrompt

    if cfg.dataset.reg_generate < 0:
        raise BuilderError(f"--reg-generate {cfg.dataset.reg_generate}: give a number of images, 0 or more")
    out = Path(out)
    base = resolve_base_model(cfg)
    family = pipeline_family(base, cfg)
    images = plan_reg_images(cfg, out, base, family)
    folder = reg_dir(out, cfg)
    wanted = {Path(im.file).name for im in images}
    for stale in kohya_images(folder):
        if stale.name.startswith(PREFIX) and stale.name not in wanted:
            stale.unlink()
            for ext in CAPTION_EXTENSIONS:
                stale.with_suffix(ext).unlink(missing_ok=True)
    todo = [im for im in images if not (out / im.file).is_file()]
    if todo:
        device = resolve_device(cfg.runtime.device)
        console.print(f"reg images: rendering {len(todo)} of {len(images)} with {base} on {device}")
        pipe = load_pipeline(base, cfg, device)
        scheduler = dict(pipe.scheduler.config)
        with progress() as bar:
            task = bar.add_task("reg images", total=len(todo), status="")
            for im in todo:
                bar.update(task, status=Path(im.file).name)
                prompt = SamplePrompt(im.prompt, width=im.width, height=im.height, steps=im.steps,
                                      guidance=im.guidance, sampler=im.sampler, seeds=(im.seed,))
                write_image(out / im.file, render(pipe, prompt, im.seed, scheduler))
                bar.advance(task)
    for im in images:  # the caption is the class prompt, rewritten only when it differs
        caption = (out / im.file).with_suffix(cfg.caption.extension)
        if not caption.is_file() or caption.read_text(encoding="utf-8") != im.prompt:
            atomic_write_text(caption, im.prompt)
    atomic_write_json(out / RECORD, {"folder": str(folder.relative_to(out)), "images": [asdict(im) for im in images]})
    write_contact_sheet([(out / im.file, f"seed {im.seed}: {im.prompt}") for im in images], out / SHEET,
                        max_pixels=cfg.runtime.max_pixels)
    return RegSummary(folder, images, len(todo))
