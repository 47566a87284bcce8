"""The user's choice of no restoration: the crops pass through unchanged."""

from __future__ import annotations

import numpy as np
import torch

from builder.config import Config
from builder.models.base import Restorer
from builder.swap.restorers.common import check_crops, no_options

NAMES = ("none",)


class NoRestorer:
    name = "none"
    template = "ffhq"

    def restore(self, crops: np.ndarray) -> np.ndarray:
        check_crops(crops)
        return crops.copy()


def weights(cfg: Config, name: str) -> list[str]:
    return []


def load(cfg: Config, device: torch.device, name: str = "none", **options: str) -> Restorer:
    no_options(name, options)
    return NoRestorer()
