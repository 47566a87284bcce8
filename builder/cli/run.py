"""`launch.py run`: build -> caption -> train -> sample in one go, resuming finished stages."""

from __future__ import annotations

import argparse

from builder.cli.build import add_build_flags
from builder.cli.common import build_config
from builder.console import random_weights_banner
from builder.pipeline import STAGES, run_stages


def register(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "run",
        help="the whole job: build, caption, train with sd-scripts, sample with diffusers",
        description="Run every stage with one config. A stage whose outputs are complete is "
        "skipped, so running again after an interruption (or after adding photos) resumes. "
        "If sd-scripts or the base model is missing, it stops before training and keeps "
        "everything it made.",
    )
    add_build_flags(p)
    p.add_argument("--sd-scripts", dest="paths.sd_scripts", default=argparse.SUPPRESS, metavar="DIR", help="kohya-ss/sd-scripts checkout")
    p.add_argument("--until", choices=STAGES, default="sample", help="stop after this stage")
    return p


def run(args: argparse.Namespace) -> int:
    cfg = build_config(args)
    if cfg.runtime.random_weights:
        random_weights_banner()
    run_stages(cfg, until=args.until)
    return 0
