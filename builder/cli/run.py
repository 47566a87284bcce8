"""`launch.py run`: build -> caption -> train -> sample in one go, resuming finished stages."""

from __future__ import annotations

import argparse

from builder.cli.build import add_build_flags, run_until
from builder.cli.common import add_shared_flags
from builder.pipeline import STAGES


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
    add_shared_flags(p, "--sd-scripts", "--model-family", "--gpus")
    p.add_argument("--until", choices=STAGES, default="sample", help="stop after this stage")
    return p


def run(args: argparse.Namespace) -> int:
    return run_until(args, args.until)
