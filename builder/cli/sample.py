"""``launch.py sample OUT``: render each saved LoRA epoch and the base model, score identity, draw the grid."""

from __future__ import annotations

import argparse
from pathlib import Path

from builder.cli.common import build_config


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "sample",
        help="render sample grids of every saved LoRA epoch with identity scores",
        description="Render the sample prompts with fixed seeds for the base model (control row) and "
        "every LoRA in OUT/model/ (or the files given with --lora), score each face against the "
        "source photos, and write OUT/samples/grid.png and OUT/samples/report.json.",
    )
    p.add_argument("out", type=Path, metavar="OUT", help="run folder (the one holding model/ and sample_prompts.txt)")
    p.add_argument("--base-model", dest="paths.base_model", default=argparse.SUPPRESS,
                   help="SD 1.5-family .safetensors/.ckpt file or diffusers folder ([paths] base_model)")
    p.add_argument("--lora", type=Path, nargs="+", default=None, metavar="FILE",
                   help="LoRA files to sample, in this order (default: every file in OUT/model/)")
    p.add_argument("--source", dest="paths.source", action="append", default=argparse.SUPPRESS,
                   help="source photo or folder of the new face (repeatable; [paths] source)")
    p.add_argument("--prompts", dest="sample.prompts", default=argparse.SUPPRESS,
                   help="kohya prompt file (default: OUT/sample_prompts.txt, else prompts from [character])")
    p.add_argument("--model-config", dest="sample.model_config", default=argparse.SUPPRESS,
                   help="local diffusers folder with the configs a single-file base model needs offline")
    p.add_argument("--seeds", dest="sample.seeds", default=argparse.SUPPRESS,
                   help="comma-separated seeds for prompt lines without --d ([sample] seeds)")
    p.add_argument("--detector", dest="faces.detector", default=argparse.SUPPRESS, help="insightface or dlib")
    p.add_argument("--no-score", dest="sample.score", action="store_const", const=False, default=argparse.SUPPRESS,
                   help="render and draw the grid without identity scores")
    return p


def run(args: argparse.Namespace) -> int:
    # diffusers imports are slow; only this command needs them.
    from builder.sample import run_samples

    cfg = build_config(args)
    run_samples(cfg, args.out, loras=args.lora)
    return 0
