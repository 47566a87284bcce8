#!/usr/bin/env python
"""Character-LoRA dataset builder: ``python launch.py --help``."""

from __future__ import annotations

import argparse
import importlib
import sys

from rich.markup import escape

from builder.cli import COMMANDS
from builder.cli.common import add_global_flags
from builder.console import console
from builder.errors import BuilderError


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="launch.py",
        description="Turn a new face and a folder of donor photos into a captioned kohya LoRA "
        "training set, train it with sd-scripts, and check the samples.",
    )
    add_global_flags(parser)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMANDS:
        module = importlib.import_module(f"builder.cli.{name}")
        p = module.register(sub)
        add_global_flags(p)
        p.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    try:
        return int(args._run(args) or 0)
    except BuilderError as exc:
        # Escaped and unwrapped: messages carry URLs and paths a user copies as they are.
        console.print(f"[bold red]error:[/bold red] {escape(str(exc))}", soft_wrap=True)
        return 2
    except KeyboardInterrupt:
        console.print("[yellow]interrupted; everything written so far is complete and kept[/yellow]")
        return 130


if __name__ == "__main__":
    sys.exit(main())
