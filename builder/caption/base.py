"""The captioner interface and the registry of backends (``[caption] backend``)."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch

from builder.config import Config
from builder.errors import ConfigError
from builder.registry import pick


class Captioner(Protocol):
    name: str

    def caption(self, images: list[np.ndarray]) -> list[str]:
        """One plain-English caption per uint8 BGR image (H, W, 3), in the same order."""
        ...


@dataclass(frozen=True)
class GenerationSettings:
    """The knobs kohya's make_captions.py exposes, read from [caption]."""

    beams: int = 3
    sampling: bool = False  # nucleus sampling (top_p) instead of beam search
    top_p: float = 0.9
    min_length: int = 5
    max_length: int = 75
    seed: int = 0  # sampling is re-seeded per batch so reruns give the same captions

    def __post_init__(self) -> None:
        if self.beams < 1:
            raise ConfigError(f"caption.beams = {self.beams}: must be at least 1")
        if not 0.0 < self.top_p <= 1.0:
            raise ConfigError(f"caption.top_p = {self.top_p}: must be in (0, 1]")
        if not 0 <= self.min_length <= self.max_length:
            raise ConfigError(
                f"caption.min_length = {self.min_length}, max_length = {self.max_length}: need 0 <= min <= max"
            )

    @classmethod
    def from_config(cls, cfg: Config) -> GenerationSettings:
        c = cfg.caption
        return cls(c.beams, c.sampling, c.top_p, c.min_length, c.max_length, cfg.runtime.seed)


class NoCaptioner:
    """backend = "none": no model; captions are the trigger, class word and tags alone."""

    name = "none"

    def caption(self, images: list[np.ndarray]) -> list[str]:
        return ["" for _ in images]


def _load_none(cfg: Config, device: torch.device) -> Captioner:
    return NoCaptioner()


def _lazy(module: str, func: str) -> Callable[[Config, torch.device], Captioner]:
    # Backends import their heavy libraries only when chosen.
    def load(cfg: Config, device: torch.device) -> Captioner:
        return getattr(importlib.import_module(module), func)(cfg, device)

    return load


CAPTIONERS: dict[str, Callable[[Config, torch.device], Captioner]] = {
    "blip": _lazy("builder.caption.blip", "load_blip"),
    "lavis": _lazy("builder.caption.lavis", "load_lavis"),
    "none": _load_none,
}


def load_captioner(cfg: Config, device: torch.device) -> Captioner:
    """The captioner ``cfg.caption.backend`` names, on ``device`` (fp16 on CUDA)."""
    return pick(CAPTIONERS, cfg.caption.backend, "caption.backend")(cfg, device)
