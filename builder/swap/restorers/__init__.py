"""Face restorers on the FFHQ-512 crop, one module each, picked by ``swap.restorer``.

Every module has ``NAMES``, ``weights(cfg, name)`` and ``load(cfg, device, name, **options)``;
one whose options change only how its net is called may add ``variant(restorer, cfg, **options)``,
so several candidates of it share one loaded copy.
A restorer is named by a spec, ``name`` or ``name:key=value,...`` (``codeformer:w=0.5``): the
form ``swap.restorer_candidates`` lists for ``swap.restorer = "best"``.
"""

from __future__ import annotations

from types import ModuleType

import torch

from builder.config import Config
from builder.errors import ConfigError
from builder.models.base import Restorer
from builder.registry import BEST, chosen, pick
from builder.swap.restorers import codeformer, gfpgan, gpen, none, restoreformer

MODULES: tuple[ModuleType, ...] = (codeformer, gfpgan, gpen, none, restoreformer)
BACKENDS: dict[str, ModuleType] = {name: m for m in MODULES for name in m.NAMES}


def parse_spec(spec: str) -> tuple[str, dict[str, str]]:
    """``"codeformer:w=0.5"`` -> ``("codeformer", {"w": "0.5"})``."""
    name, _, rest = spec.strip().partition(":")
    options: dict[str, str] = {}
    for item in filter(None, (p.strip() for p in rest.split(","))):
        key, eq, value = item.partition("=")
        if not eq or not key.strip():
            raise ConfigError(f"restorer spec {spec!r}: option {item!r} must look like key=value")
        options[key.strip()] = value.strip()
    return name, options


def specs(cfg: Config) -> list[str]:
    """The restorer specs this configuration runs: the one chosen, or every candidate of "best"."""
    return chosen(cfg.swap.restorer, cfg.swap.restorer_candidates, "swap.restorer")


def weights(cfg: Config) -> list[str]:
    out: list[str] = []
    for spec in specs(cfg):
        name, _ = parse_spec(spec)
        out += pick(BACKENDS, name, "swap.restorer").weights(cfg, name)
    return list(dict.fromkeys(out))


def load_restorer(cfg: Config, device: torch.device | str, spec: str | None = None) -> Restorer:
    """The restorer ``spec`` (default: ``swap.restorer``), its weights loaded once."""
    if cfg.swap.batch_size < 1:
        raise ConfigError(f"swap.batch_size must be at least 1, got {cfg.swap.batch_size}")
    name, options = parse_spec(spec or cfg.swap.restorer)
    if name == BEST:
        raise ConfigError('"best" is a mode, not a restorer: load each of swap.restorer_candidates')
    return pick(BACKENDS, name, "swap.restorer").load(cfg, torch.device(device), name, **options)


def load_restorers(cfg: Config, device: torch.device | str) -> list[Restorer]:
    """Every restorer this configuration runs, in candidate order; candidates of one module that
    offers ``variant`` share its net."""
    loaded: dict[str, Restorer] = {}
    out = []
    for spec in specs(cfg):
        name, options = parse_spec(spec)
        module = pick(BACKENDS, name, "swap.restorer")
        if name in loaded and hasattr(module, "variant"):
            out.append(module.variant(loaded[name], cfg, **options))
        else:
            loaded.setdefault(name, restorer := load_restorer(cfg, device, spec))
            out.append(restorer)
    return out
