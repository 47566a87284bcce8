"""GPEN-BFR-512 (yangxy/GPEN), GPEN-BFR-512.pth, on GPEN's own 512 crop. Non-commercial weights.

Pre- and post-processing are face_model/face_gan.py's: BGR -> RGB, /255, (x - 0.5) / 0.5;
the output is mapped back with x * 0.5 + 0.5, clipped to [0, 1], times 255 and truncated to
uint8 (numpy ``astype``, not rounded as basicsr's tensor2img does for the other restorers).

GPEN was trained on its own alignment (face_enhancement.py: ``get_reference_facial_points``
with inner_padding_factor 0.25 on the 96x112 template), not on FFHQ's: the FFHQ-512 template
shrunk by 0.890 and shifted by (27.6, 30.9) px, eyes 107 px apart instead of 126. So GPEN
restores the crop ``align.gpen_template`` defines (``template = "gpen"``): the fused pass warps
the photo and carries the swapped face straight into it, as it does into the FFHQ crop for the
other restorers, so GPEN's face is resampled no more often than theirs. (FaceFusion runs GPEN
on its ffhq_512 crop instead, which shows GPEN faces about 12 % larger than in training.)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from builder.config import Config
from builder.device import model_dtype
from builder.models.base import Restorer
from builder.models.gpen import FullGenerator, use_half_precision
from builder.swap.restorers.common import TorchRestorer, no_options, prepare_net

NAMES = ("gpen_bfr_512",)
WEIGHT = "gpen_bfr_512"


def to_crops(y: torch.Tensor) -> np.ndarray:
    """(N, 3, H, W) RGB output -> (N, H, W, 3) uint8 BGR, as face_gan.py's tensor2img."""
    y = ((y.float() * 0.5 + 0.5).clamp(0.0, 1.0) * 255.0).to(torch.uint8)  # truncates
    return y.permute(0, 2, 3, 1).flip(-1).cpu().numpy()


@dataclass
class GPENRestorer(TorchRestorer):
    template: str = "gpen"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def to_crops(self, y: torch.Tensor) -> np.ndarray:
        return to_crops(y)


def build() -> FullGenerator:
    # face_gan.py FaceGAN.load_model with demo.py's defaults for GPEN-BFR-512
    return FullGenerator(512, 512, 8, channel_multiplier=2, narrow=1)


def weights(cfg: Config, name: str) -> list[str]:
    return [WEIGHT]


def load(cfg: Config, device: torch.device, name: str = "gpen_bfr_512", **options: str) -> Restorer:
    no_options(name, options)
    # loaded in float32 on the CPU, so the layers kept in float32 keep every bit of the file
    net = prepare_net(build, WEIGHT, cfg, torch.device("cpu"), key=None)
    net = use_half_precision(net, model_dtype(device)).to(device)
    return GPENRestorer(net, device, model_dtype(device), cfg.swap.batch_size, name=name)
