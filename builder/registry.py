"""Backends are chosen by name from small registries; this is the one lookup they share."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TypeVar

from builder.errors import ConfigError

T = TypeVar("T")


def pick(registry: Mapping[str, T], name: str, key: str) -> T:
    """The entry ``name`` of a backend registry, or a ConfigError naming the config key and the choices."""
    if name not in registry:
        raise ConfigError(f"{key} = {name!r} is not one of {', '.join(registry)}")
    return registry[name]


BEST = "best"


def chosen(value: str, candidates: list[str], key: str) -> list[str]:
    """What a stage runs: ``[value]``, or every candidate (once each, in order) when it is "best"."""
    if value != BEST:
        return [value]
    if not candidates:
        raise ConfigError(f'{key} = "best" needs at least one entry in {key}_candidates')
    return list(dict.fromkeys(candidates))
