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
