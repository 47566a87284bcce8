"""What every subcommand shares: the global flags and turning them into one Config."""

from __future__ import annotations

import argparse
import typing
from pathlib import Path
from typing import Any, Literal

from builder.config import DEFAULT_BASE_MODEL, Config, apply_overrides, load_toml, parse_set


def add_global_flags(parser: argparse.ArgumentParser) -> None:
    # SUPPRESS keeps a subcommand's copy of a flag from resetting the top-level one.
    g = parser.add_argument_group("global options")
    g.add_argument("--config", type=Path, default=argparse.SUPPRESS, help="TOML config file")
    g.add_argument(
        "--set", dest="set_items", action="append", default=argparse.SUPPRESS,
        metavar="SECTION.KEY=VALUE", help="override any config key (repeatable)",
    )
    g.add_argument(
        "--random-weights", dest="runtime.random_weights", action="store_const", const=True,
        default=argparse.SUPPRESS,
        help="build every model with its real architecture and random weights (plumbing check)",
    )
    g.add_argument("--device", dest="runtime.device", default=argparse.SUPPRESS, help="auto, cpu, cuda, cuda:N")
    g.add_argument("--weights-dir", dest="runtime.weights_dir", default=argparse.SUPPRESS, help="model cache folder")


def build_config(args: argparse.Namespace) -> Config:
    """Defaults, then the --config file, then --set items, then dedicated flags (dests with a dot)."""
    cfg = load_toml(args.config) if getattr(args, "config", None) else Config()
    cfg = apply_overrides(cfg, parse_set(getattr(args, "set_items", None) or []), origin="--set")
    dotted = {k: v for k, v in vars(args).items() if "." in k}
    return apply_overrides(cfg, dotted, origin="command line")


def config_flag(p: argparse.ArgumentParser, *flags: str, dest: str, **kwargs: Any) -> None:
    """A flag that overrides the config key ``dest`` ("section.key") only when given.

    A key typed as a Literal gives the flag its choices, so a flag and the config never
    accept different values.
    """
    section, key = dest.split(".", 1)
    hint = typing.get_type_hints(type(getattr(Config(), section)))[key]
    if typing.get_origin(hint) is Literal and "action" not in kwargs:
        kwargs.setdefault("choices", typing.get_args(hint))
    if "choices" not in kwargs and "action" not in kwargs:
        kwargs.setdefault("metavar", key.upper())
    p.add_argument(*flags, dest=dest, default=argparse.SUPPRESS, **kwargs)


# Flags several commands take, defined once so their meaning and spelling agree.
SHARED_FLAGS: dict[str, dict[str, Any]] = {
    "--source": {"dest": "paths.source", "nargs": "+", "action": "extend", "metavar": "PATH",
                 "help": "source photo(s) or folder(s) of the new face ([paths] source)"},
    "--base-model": {"dest": "paths.base_model", "metavar": "MODEL",
                     "help": "file or diffusers folder, registry name (launch.py weights), owner/name[@rev][:file] "
                     f"on Hugging Face, civitai:<versionId>, or an https URL ([paths] base_model; default: "
                     f"{DEFAULT_BASE_MODEL}, or the model family's random base with --random-weights)"},
    "--base-model-sha256": {"dest": "paths.base_model_sha256", "metavar": "HEX",
                            "help": "expected sha256 of a --base-model https URL download"},
    "--sd-scripts": {"dest": "paths.sd_scripts", "metavar": "DIR",
                     "help": "kohya-ss/sd-scripts checkout (holds train_network.py)"},
    "--detector": {"dest": "faces.detector", "help": "face detector ([faces] detector)"},
    "--judge": {"dest": "faces.judge", "help": "recognition net that selects: best-of and the filter ([faces] judge)"},
    "--report-judge": {"dest": "faces.report_judge",
                       "help": "recognition net, not ArcFace, that scores what is reported ([faces] report_judge)"},
    "--donor-face": {"dest": "faces.donor_face", "help": "which face in a photo is the donor's ([faces] donor_face)"},
    "--gpus": {"dest": "kohya.num_processes", "type": int, "metavar": "N",
               "help": "train on N GPUs: accelerate launch --multi_gpu --num_processes N ([kohya] num_processes)"},
    "--model-family": {"dest": "kohya.model_family",
                       "help": "model family (builder/families/); auto tells it from the base model ([kohya] model_family)"},
}


def add_shared_flags(p: argparse.ArgumentParser, *flags: str) -> None:
    for flag in flags:
        config_flag(p, flag, **SHARED_FLAGS[flag])


def use_base_model(cfg: Config, fallback: str = "") -> None:
    """Make the configured base model local (download, verify or generate it) and put its path in
    the config; ``fallback`` is the spec used when none is configured (else the default)."""
    from builder.base_model import base_model_spec, resolve_base_model

    spec = cfg.paths.base_model or fallback or base_model_spec(cfg)
    cfg.paths.base_model = str(resolve_base_model(spec, cfg).path)
