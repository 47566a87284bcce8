"""GFPGAN v1.4 (TencentARC/GFPGAN), GFPGANv1.4.pth from release v1.3.0, on the FFHQ-512 crop."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from builder.config import Config
from builder.device import model_dtype
from builder.models.base import Restorer
from builder.models.gfpgan import GFPGANv1Clean
from builder.swap.restorers.common import TorchRestorer, no_options, prepare_net

NAMES = ("gfpgan",)


@dataclass
class GFPGANRestorer(TorchRestorer):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # GFPGANer passes weight=0.5 too, but GFPGANv1Clean swallows it unused in **kwargs
        return self.net(x, return_rgb=False)[0]


def build() -> GFPGANv1Clean:
    # the arguments GFPGANer uses for arch='clean' (GFPGANv1.4.pth)
    return GFPGANv1Clean(
        out_size=512,
        num_style_feat=512,
        channel_multiplier=2,
        num_mlp=8,
        input_is_latent=True,
        different_w=True,
        narrow=1,
        sft_half=True,
    )


def weights(cfg: Config, name: str) -> list[str]:
    return ["gfpgan_v1.4"]


def load(cfg: Config, device: torch.device, name: str = "gfpgan", **options: str) -> Restorer:
    no_options(name, options)
    net = prepare_net(build, "gfpgan_v1.4", cfg, device)
    return GFPGANRestorer(net, device, model_dtype(device), cfg.swap.batch_size, name=name)
