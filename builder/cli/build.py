"""`launch.py build`: donor photos + source face -> captioned kohya image folder, TOMLs, manifest."""

from __future__ import annotations

import argparse

from builder.cli.common import add_shared_flags, build_config, config_flag
from builder.console import random_weights_banner
from builder.pipeline import run_stages


def add_build_flags(p: argparse.ArgumentParser) -> None:
    """The flags `build` and `run` share."""
    add_shared_flags(p, "--source")
    config_flag(p, "--donors", dest="paths.donors", metavar="DIR", help="folder of donor photos")
    config_flag(p, "--out", dest="paths.out", metavar="DIR", help="run folder")
    config_flag(p, "--trigger", dest="character.trigger", help="trigger word (e.g. ohwx)")
    config_flag(p, "--class-word", dest="character.class_word", help="class word (e.g. woman)")
    add_shared_flags(p, "--detector", "--judge", "--report-judge", "--donor-face")
    config_flag(p, "--generator", dest="swap.generator")
    config_flag(p, "--restorer", dest="swap.restorer")
    config_flag(p, "--codeformer-w", dest="swap.codeformer_w", type=float, help="CodeFormer fidelity (0 = quality, 1 = fidelity)")
    config_flag(p, "--mouth", dest="swap.mouth", action=argparse.BooleanOptionalAction, help="put the donor's own mouth back (default on)")
    config_flag(p, "--batch-size", dest="swap.batch_size", type=int, help="faces per model batch")
    config_flag(p, "--keep", dest="quality.keep", type=int, metavar="N", help="keep only the best N results")
    config_flag(p, "--caption-backend", dest="caption.backend", help="none: captions are just trigger and class")
    config_flag(p, "--reg", dest="paths.reg", metavar="DIR", help="regularisation images")
    add_shared_flags(p, "--base-model", "--base-model-sha256")


def run_until(args: argparse.Namespace, until: str) -> int:
    """`build` and `run`: the pipeline's stages up to ``until``."""
    cfg = build_config(args)
    if cfg.runtime.random_weights:
        random_weights_banner()
    run_stages(cfg, until=until)
    return 0


def register(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "build",
        help="swap, restore, filter and caption the donor photos into a kohya training folder",
        description="Swap the source face onto every donor photo (detect once, one fused "
        "swap/mouth/restore/paste pass), score and filter the results, caption the kept ones "
        "and write the kohya folder, TOMLs and manifest. Re-running resumes.",
    )
    add_build_flags(p)
    return p


def run(args: argparse.Namespace) -> int:
    return run_until(args, "caption")
