"""The stages in order, each skipped when its outputs are complete: `launch.py run` and `build`.

sources -> only with sources.generate (run --generate-sources N): PhotoMaker photos of the face
           in <out>/sources/, judged; the kept ones join the given source photos
build   -> swapped, filtered results in img/<N>_<trigger> <class>/, manifest, contact sheets
caption -> a caption beside every kept image; then the TOMLs, prompts and GUI JSON
train   -> sd-scripts' LoRA files in model/ (skipped when the final LoRA exists)
sample  -> samples/grid.png and report.json (images already rendered are reused)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from rich.markup import escape
from rich.table import Table

from builder.build import MANIFEST, BuildSummary, run_build
from builder.caption.recaption import CaptionSummary, recaption
from builder.config import Config
from builder.console import console
from builder.contact_sheet import write_quality_sheets
from builder.errors import BuilderError
from builder.faces.identity import judges_sentence, same_network
from builder.kohya.files import KohyaFiles, write_kohya_files
from builder.manifest import FAILED, KEPT, Tally
from builder.quality.decide import Assessment
from builder.quality.summary import agreement_sentence, judge_agreement, summarize

STAGES = ("sources", "build", "caption", "train", "sample")


@dataclass
class RunSummary:
    out: Path
    stages: dict[str, str] = field(default_factory=dict)  # stage -> what happened
    build: BuildSummary | None = None
    captions: CaptionSummary | None = None
    kohya: KohyaFiles | None = None
    best_epoch: str | None = None


SOURCES_DIR = "sources"


def stage_sources(cfg: Config, run: RunSummary) -> None:
    """PhotoMaker photos of the face; the kept ones are averaged with the given photos by build.

    The given photos stay in: they are the face itself, the generated ones add its views.
    """
    from builder.sources.stage import make_sources

    folder = run.out / SOURCES_DIR
    result = make_sources(cfg, folder)
    if result.kept == 0:
        raise BuilderError(f"none of the {len(result.records)} generated photos passed the judge; see {folder / 'contact_sheet_dropped.png'}")
    cfg.paths.source = [*cfg.paths.source, str(folder)]
    made = f"{result.generated} made this run" if result.generated else "all made before"
    run.stages["sources"] = f"{result.kept} kept of {len(result.records)} ({made}) in {folder}"


def stage_build(cfg: Config, run: RunSummary) -> None:
    summary = run_build(cfg)
    run.build = summary
    write_sheets(summary, cfg)
    print_build_summary(summary, cfg)
    if summary.kept == 0:
        raise BuilderError(
            f"no result passed the quality filters ({summary.rejected} rejected, {summary.failed} unusable); "
            f"see {summary.out / MANIFEST} and {summary.out / 'contact_sheet_rejects.png'}"
        )
    run.stages["build"] = f"{summary.kept} kept of {summary.photos} ({summary.processed} processed this run)"


def stage_caption(cfg: Config, run: RunSummary) -> None:
    out = Path(cfg.paths.out)
    captions = recaption(out, cfg, trigger=cfg.character.trigger, class_word=cfg.character.class_word)
    run.captions = captions
    if captions.failed:
        raise BuilderError(f"{len(captions.failed)} image(s) could not be captioned, e.g. {captions.failed[0][0]}: {captions.failed[0][1]}")
    run.kohya = write_kohya_files(out, cfg, cfg.caption.extension)
    run.stages["caption"] = (
        f"{len(captions.captioned)} captioned, {len(captions.skipped)} already had one; "
        f"TOMLs in {out} (repeats {run.kohya.dataset.repeats})"
    )


def final_lora(cfg: Config, out: Path) -> Path:
    name = cfg.kohya.output_name or cfg.character.trigger
    return out / "model" / f"{name}.safetensors"


def stage_train(cfg: Config, run: RunSummary) -> None:
    from builder.kohya.train import train_lora

    out = Path(cfg.paths.out)
    done = final_lora(cfg, out)
    if done.is_file():
        run.stages["train"] = f"skipped: {done} exists (delete it to train again)"
        return
    rc = train_lora(out, cfg, write_configs=True)
    if rc != 0:
        raise BuilderError(f"training failed (exit code {rc}); everything before it is kept in {out}")
    run.stages["train"] = f"LoRA files in {out / 'model'}"


def stage_sample(cfg: Config, run: RunSummary) -> None:
    from builder.sample import run_samples

    result = run_samples(cfg, Path(cfg.paths.out))
    run.best_epoch = result.best_epoch
    run.stages["sample"] = f"{result.grid} ({result.rendered} rendered this run), best epoch: {result.best_epoch or '-'}"


RUNNERS = {"sources": stage_sources, "build": stage_build, "caption": stage_caption, "train": stage_train, "sample": stage_sample}


def missing_weights(cfg: Config, stages: tuple[str, ...]) -> list[str]:
    """Registry files these stages will read that are not in the cache yet.

    A base model given by registry name (or the default one) counts only when training or
    sampling is among the stages.
    """
    from builder import weights as W
    from builder.caption.clip_tokenizer import open_clip_bpe
    from builder.needs import needed_for

    names = needed_for(cfg)
    if not {"train", "sample"} & set(stages):
        names = [n for n in names if not W.REGISTRY[n].family]
    if "sample" in stages:
        from builder.sample.adherence import needed_weights as sample_weights

        names += [n for n in sample_weights(cfg) if n not in names]
    if "sources" in stages:  # after the filter: the sources' SDXL base is needed without training
        from builder.sources.stage import needed_weights

        names += [n for n in needed_weights(cfg) if n not in names]
    missing = [n for n in names if W.state(n, cfg.runtime.weights_dir).state == W.MISSING]
    # An installed open-clip-torch carries the same BPE file; nothing to download then.
    return [n for n in missing if not (n == "clip_bpe" and open_clip_bpe() is not None)]


def preflight(cfg: Config, stages: tuple[str, ...]) -> None:
    """What the stages need, checked in seconds before the first one touches a photo.

    The trainer (sd-scripts and accelerate) when train is among them; the base model's
    source (present, or its host answers) when train or sample is. Missing weight files
    are fetched by ensure_weights, which fails fast naming each one when offline.
    """
    from builder.base_model import base_model_spec, check_base_model

    if "train" in stages and not final_lora(cfg, Path(cfg.paths.out)).is_file():
        from builder.kohya.train import check_sd_scripts, find_accelerate

        find_accelerate(check_sd_scripts(cfg.paths.sd_scripts), cfg.kohya.accelerate)
    if {"train", "sample"} & set(stages):
        check_base_model(base_model_spec(cfg), cfg)


def ensure_weights(cfg: Config, stages: tuple[str, ...]) -> None:
    """Fetch (resumable, checksum-verified) what is missing before any work starts, so a run
    never stops halfway for a file; offline, the error names each file, its URL and its place.
    Then the base model is made local (downloaded, or generated for --random-weights) and
    ``paths.base_model`` becomes its path, which the kohya files and the sampler read."""
    from builder.base_model import base_model_spec, local_copy, parse_spec, resolve_base_model
    from builder.fetch import fetch

    missing = missing_weights(cfg, stages)
    if missing:
        console.print(f"fetching {len(missing)} model file(s) this run needs: {', '.join(missing)}")
        fetch(missing, cfg.runtime.weights_dir)
    if {"train", "sample"} & set(stages):
        base = resolve_base_model(base_model_spec(cfg), cfg)
        console.print(f"base model: {base.path} ({base.source}{', ' + base.family_hint if base.family_hint else ''})")
        cfg.paths.base_model = str(base.path)
    elif cfg.paths.base_model:
        # config.toml names a base model only as a local path: never a URL (which may carry a
        # token) or a name sd-scripts cannot read; `train` resolves those later. A local path
        # that is not there yet stays, and `train` reports it.
        try:
            src = parse_spec(cfg.paths.base_model)
        except BuilderError:
            return
        if src.kind != "local":
            local = local_copy(src, cfg)
            if local is None:
                console.print(f"base model {src.spec} is not here yet; `train` fetches it")
            cfg.paths.base_model = str(local or "")


def ensure_sources_weights(cfg: Config) -> None:
    """`launch.py sources`: fetch what the sources stage alone needs."""
    ensure_weights(cfg, ("sources",))


def stages_for(cfg: Config, until: str) -> tuple[str, ...]:
    """The stages up to ``until``; sources only when asked for (run --generate-sources N)."""
    return tuple(s for s in STAGES[: STAGES.index(until) + 1] if s != "sources" or cfg.sources.generate)


def run_stages(cfg: Config, until: str = "sample") -> RunSummary:
    if until not in STAGES:
        raise BuilderError(f"--until {until!r} is not one of {', '.join(STAGES)}")
    if not cfg.paths.out:
        raise BuilderError("no output folder: pass --out DIR (or set [paths] out)")
    run = RunSummary(out=Path(cfg.paths.out))
    stages = stages_for(cfg, until)
    preflight(cfg, stages)
    ensure_weights(cfg, stages)
    for stage in stages:
        console.rule(f"[bold]{stage}")
        try:
            RUNNERS[stage](cfg, run)
        except BuilderError:
            run.stages[stage] = "[red]failed[/red]"
            print_run_summary(run)
            raise
    if until == "build":  # the caption stage writes them otherwise, once the captions are final
        run.kohya = write_kohya_files(run.out, cfg)
    print_run_summary(run)
    return run


def write_sheets(summary: BuildSummary, cfg: Config) -> None:
    pictures, made_by = [], {}
    for r in sorted(summary.records, key=lambda r: r.key):
        if not r.quality:
            continue
        shown = summary.out / r.output if r.output else Path(r.input)
        assessment = Assessment.from_dict(r.quality)
        assessment.decision.kept = r.status == KEPT  # --random-weights keeps what the scores reject
        pictures.append((shown, assessment))
        if label := chosen_label(r.choice):
            made_by[assessment.name] = label
    write_quality_sheets(pictures, summary.out, max_pixels=cfg.runtime.max_pixels, made_by=made_by)


def chosen_label(choice: dict | None) -> str:
    """"hyperswap_1a_256 + gfpgan": the stages whose "best" mode picked among candidates; where the
    report judge would have kept another candidate, "(report: ghost)" follows the pick."""
    picked = []
    for c in (choice or {}).values():
        if c.get("candidates"):
            other = c.get("report_chosen")
            picked.append(c["chosen"] + (f" (report: {other})" if other and other != c["chosen"] else ""))
    return " + ".join(picked)


def print_build_summary(summary: BuildSummary, cfg: Config) -> None:
    tally = Tally.of(summary.records)
    scored = [r.quality for r in summary.records if r.quality and r.status != FAILED]
    console.print(summarize(scored, title=f"Quality filter: the scores kept {tally.scores_kept} of {len(scored)} results"))
    failures = [r for r in summary.records if r.status == FAILED]
    if failures:
        t = Table(title=f"{len(failures)} photo(s) could not be used")
        t.add_column("photo")
        t.add_column("reason")
        for r in failures[:20]:
            t.add_row(r.key, "; ".join(r.reasons))
        console.print(t)
    console.print(
        f"[bold]build[/bold]: {summary.photos} photos ({summary.processed} this run): {escape(tally.describe())}; "
        f"in {summary.seconds:.1f}s"
    )
    console.print(f"[bold]judges[/bold]: {escape(judges_sentence(cfg))}")
    agreement = agreement_sentence(
        judge_agreement([r.choice for r in summary.records]), cfg.faces.report_judge, same_network(cfg)
    )
    if agreement:
        console.print(escape(agreement))


def print_run_summary(run: RunSummary) -> None:
    t = Table(title=f"run folder {run.out}")
    t.add_column("stage")
    t.add_column("result")
    for stage in STAGES:
        if stage in run.stages:
            t.add_row(stage, run.stages[stage])
    out = run.out
    for label, path in (
        ("training images", run.kohya.dataset.image_dir if run.kohya else None),
        ("generated sources", out / SOURCES_DIR / "contact_sheet.png"),
        ("manifest", out / MANIFEST),
        ("contact sheet", out / "contact_sheet.png"),
        ("dataset TOML", run.kohya.dataset_config if run.kohya else None),
        ("training TOML", run.kohya.config if run.kohya else None),
        ("sample grid", out / "samples" / "grid.png"),
    ):
        if path is not None and Path(path).exists():
            t.add_row(label, str(path))
    console.print(t)
