"""What every subcommand shares: the global flags and turning them into one Config."""

from __future__ import annotations

import argparse
from pathlib import Path

from builder.config import Config, apply_overrides, load_toml, parse_set


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
