"""Subcommands of launch.py. Each module here has ``register(subparsers)`` and ``run(args)``.

A command is listed only once it works end to end.
"""

from __future__ import annotations

COMMANDS: list[str] = [
    "weights",
    "doctor",
    "build",
    "faces",
    "sources",
    "caption",
    "train",
    "sample",
    "run",
    "review",
]
