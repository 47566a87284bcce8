"""`launch.py sources`: more photos of the new face, made with PhotoMaker V2 and judged by identity."""

from __future__ import annotations

import argparse
from pathlib import Path

from builder.cli.common import add_shared_flags, build_config, config_flag
from builder.console import console
from builder.errors import BuilderError


def register(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "sources",
        help="generate a varied photo set of the new face with PhotoMaker V2 (SDXL), judged by identity",
        description="Make N photos of the source face (prompts and seeds from [sources]) with "
        "PhotoMaker V2 on an SDXL base, judge each against the given photos, keep the ones that "
        "are the same person with one face, and write sources.jsonl and contact sheets. "
        "The folder then works as --source for build and run. Re-running resumes.",
    )
    add_shared_flags(p, "--source")
    config_flag(p, "--out", dest="paths.out", metavar="DIR", help="folder for the photos (then: build --source DIR)")
    config_flag(p, "--n", dest="sources.n", type=int, metavar="N", help="photos to generate ([sources] n)")
    config_flag(p, "--base-model", dest="sources.base_model", metavar="PATH",
                help="SDXL base: any base-model source, as --base-model takes ([sources] base_model; default RealVisXL V4.0, "
                "a random SDXL with --random-weights)")
    config_flag(p, "--photomaker", dest="sources.photomaker", metavar="FILE", help="photomaker-v2.bin or .safetensors")
    config_flag(p, "--steps", dest="sources.steps", type=int)
    config_flag(p, "--class-word", dest="character.class_word", help="the class word before the trigger (woman, man, ...)")
    add_shared_flags(p, "--detector", "--judge")
    return p


def run(args: argparse.Namespace) -> int:
    from builder.pipeline import ensure_sources_weights
    from builder.sources.stage import make_sources

    cfg = build_config(args)
    if not cfg.paths.source:
        raise BuilderError("no source photo: pass --source FILE [FILE ...] (or set [paths] source)")
    if not cfg.paths.out:
        raise BuilderError("no output folder: pass --out DIR")
    ensure_sources_weights(cfg)
    result = make_sources(cfg, Path(cfg.paths.out))
    if result.kept == 0:
        raise BuilderError(f"none of the {len(result.records)} photos passed the judge; see {result.out / 'contact_sheet_dropped.png'}")
    console.print(f"next: python launch.py build --source {result.out} ...")
    return 0
