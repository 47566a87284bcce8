"""Face swappers, one module each, picked by ``swap.swapper``.

Every module has ``NAMES``, ``weights(cfg, name)`` and ``load(cfg, device, name, **options)``;
each swapper owns its alignment (template and crop size, from builder.faces.align), its
recognizer for the source identity, and its own rule for averaging several source photos.
"""

from __future__ import annotations

from types import ModuleType

import torch

from builder.config import Config
from builder.errors import ConfigError
from builder.models.base import Swapper
from builder.registry import BEST, chosen, pick
from builder.swap.swappers import ghost, hyperswap, inswapper, simswap

MODULES: tuple[ModuleType, ...] = (ghost, inswapper, hyperswap, simswap)
BACKENDS: dict[str, ModuleType] = {name: m for m in MODULES for name in m.NAMES}


def names(cfg: Config) -> list[str]:
    """The swappers this configuration runs: the one chosen, or every candidate of "best"."""
    return chosen(cfg.swap.swapper, cfg.swap.swapper_candidates, "swap.swapper")


def weights(cfg: Config) -> list[str]:
    out: list[str] = []
    for name in names(cfg):
        out += pick(BACKENDS, name, "swap.swapper").weights(cfg, name)
    return list(dict.fromkeys(out))


def load_swapper(cfg: Config, device: torch.device | str, name: str | None = None) -> Swapper:
    """The swapper ``name`` (default: ``swap.swapper``), its weights loaded once."""
    name = name or cfg.swap.swapper
    if name == BEST:
        raise ConfigError('"best" is a mode, not a swapper: load each of swap.swapper_candidates')
    return pick(BACKENDS, name, "swap.swapper").load(cfg, torch.device(device), name)


def load_swappers(cfg: Config, device: torch.device | str) -> list[Swapper]:
    """Every swapper this configuration runs, in candidate order."""
    return [load_swapper(cfg, device, name) for name in names(cfg)]
