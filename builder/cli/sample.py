"""``launch.py sample OUT``: render each saved LoRA epoch and the base model, score identity, draw the grid."""

from __future__ import annotations

import argparse
from pathlib import Path

from builder.cli.common import add_shared_flags, build_config, config_flag, use_base_model


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "sample",
        help="render sample grids of every saved LoRA epoch with identity scores",
        description="Render the sample prompts with fixed seeds for the base model (control row) and "
        "every LoRA in OUT/model/ (or the files given with --lora), score each face against the "
        "source photos and the donor photos (report judge), score each image against its prompt (CLIP), "
        "and write OUT/samples/grid.png, OUT/samples/epochs.svg and OUT/samples/report.json.",
    )
    p.add_argument("out", type=Path, metavar="OUT", help="run folder (the one holding model/ and sample_prompts.txt)")
    add_shared_flags(p, "--base-model", "--base-model-sha256", "--model-family")
    p.add_argument("--lora", type=Path, nargs="+", default=None, metavar="FILE",
                   help="LoRA files to sample, in this order (default: every file in OUT/model/)")
    add_shared_flags(p, "--source")
    config_flag(p, "--prompts", dest="sample.prompts",
                help="kohya prompt file (default: OUT/sample_prompts.txt, else prompts from [character])")
    config_flag(p, "--model-config", dest="sample.model_config",
                help="local diffusers folder with the configs a single-file base model needs offline")
    config_flag(p, "--seeds", dest="sample.seeds",
                help="comma-separated seeds for prompt lines without --d ([sample] seeds)")
    add_shared_flags(p, "--detector", "--judge", "--report-judge")
    config_flag(p, "--donors", dest="paths.donors",
                help="donor photos for the leakage scores (default: the photos OUT/manifest.jsonl lists)")
    config_flag(p, "--no-score", dest="sample.score", action="store_const", const=False,
                help="render and draw the grid without identity scores")
    config_flag(p, "--no-adherence", dest="sample.adherence", action="store_const", const=False,
                help="no CLIP prompt-adherence scores ([sample] adherence = false)")
    return p


def run(args: argparse.Namespace) -> int:
    # diffusers imports are slow; only this command needs them.
    from builder.kohya.files import CONFIG_TOML
    from builder.kohya.train import read_config_toml
    from builder.sample import run_samples

    cfg = build_config(args)
    trained = Path(args.out) / CONFIG_TOML
    # Without --base-model, the model the LoRAs were trained on (config.toml) is the control.
    fallback = read_config_toml(trained).get("pretrained_model_name_or_path", "") if trained.is_file() else ""
    use_base_model(cfg, fallback)
    run_samples(cfg, args.out, loras=args.lora)
    return 0
