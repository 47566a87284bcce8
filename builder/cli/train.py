"""``launch.py train OUT``: train the LoRA with sd-scripts' train_network.py (SDXL: sdxl_train_network.py).

The kohya files (both TOMLs, sample prompts, GUI JSON) are written from ``OUT/img`` and
the config when ``OUT/config.toml`` is missing, when ``--write-configs`` is given, or when
``--base-model`` names another model than config.toml does; otherwise config.toml is
used as it is, so hand edits survive.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from builder.cli.common import add_shared_flags, build_config, config_flag, use_base_model
from builder.kohya.files import CONFIG_TOML
from builder.kohya.train import check_sd_scripts, find_accelerate, read_config_toml, train_lora


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "train",
        help="train the LoRA: accelerate launch <sd-scripts>/train_network.py --config_file OUT/config.toml",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("out", type=Path, help="run folder (holds img/, config.toml, ...)")
    add_shared_flags(p, "--sd-scripts", "--base-model", "--base-model-sha256", "--model-family", "--gpus")
    config_flag(p, "--gpu-ids", dest="kohya.gpu_ids", metavar="IDS",
                help="which GPUs, e.g. 0,1 (accelerate --gpu_ids; as many as --gpus)")
    config_flag(p, "--accelerate", dest="kohya.accelerate", metavar="EXE",
                   help="accelerate executable (default: sd-scripts' venv, PATH, this Python's)")
    config_flag(p, "--preset", dest="kohya.preset",
                   help="kohya_configs/ preset name or a preset .toml file")
    p.add_argument("--write-configs", action="store_true",
                   help="rewrite the TOMLs, prompts and GUI JSON from OUT/img and the config first")
    p.add_argument("--dry-run", action="store_true", help="run the checks and print the command; do not train")
    return p


def run(args: argparse.Namespace) -> int:
    cfg = build_config(args)
    given = getattr(args, "paths.base_model", None) is not None
    config = Path(args.out) / CONFIG_TOML
    named = read_config_toml(config).get("pretrained_model_name_or_path", "") if config.is_file() else ""
    if given or args.write_configs or not named:
        # The trainer first: a missing checkout must not wait behind a base-model download.
        find_accelerate(check_sd_scripts(cfg.paths.sd_scripts), cfg.kohya.accelerate)
        use_base_model(cfg)  # otherwise config.toml names the model, as it was trained on
        given = True
    return train_lora(args.out, cfg, write_configs=args.write_configs, dry_run=args.dry_run, base_model_given=given)
