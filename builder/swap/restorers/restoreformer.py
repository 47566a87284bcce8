"""RestoreFormer++ (wzhouxiff/RestoreFormerPlusPlus, RestoreFormer++.ckpt from release v1.0.0) and
RestoreFormer (RestoreFormer.pth from TencentARC/GFPGAN release v1.3.4) on the FFHQ-512 crop.

Upstream's inference (RestoreFormer.py, GFPGANer) pre- and post-processes like the other
restorers here (common.to_model_input / to_crops) and keeps ``net(x)[0]``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from builder.config import Config
from builder.device import model_dtype
from builder.models.base import Restorer
from builder.models.checkpoint import read_state_dict, select_prefix
from builder.models.restoreformer import VQVAEGANMultiHeadTransformer
from builder.swap.restorers.common import TorchRestorer, no_options, prepare_net

NAMES = ("restoreformer++", "restoreformer")

# RestoreFormer.py's two configurations; GFPGAN's RestoreFormer class is the second, key for key
ARGS: dict[str, dict[str, int]] = {
    "restoreformer++": {"head_size": 4, "ex_multi_scale_num": 1},
    "restoreformer": {"head_size": 8, "ex_multi_scale_num": 0},
}
# RestoreFormer++.ckpt is a Lightning checkpoint of RestoreFormerModel: the network is its
# ``vqvae``; its ``loss`` (LPIPS, discriminators, identity net) only trains it.
NETWORK_PREFIX = "vqvae."
TRAINING_ONLY = ("loss.",)


@dataclass
class RestoreFormerRestorer(TorchRestorer):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def build(name: str) -> VQVAEGANMultiHeadTransformer:
    return VQVAEGANMultiHeadTransformer(**ARGS[name])


def read(name: str, path: Path) -> dict[str, torch.Tensor]:
    """The network's weights from the official file of ``name``."""
    if name == "restoreformer++":
        state = read_state_dict(path, key="state_dict")
        return select_prefix(state, NETWORK_PREFIX, TRAINING_ONLY, path)
    return read_state_dict(path, key=("params_ema", "params"))  # GFPGANer's order


def weights(cfg: Config, name: str) -> list[str]:
    return [name]  # registry entries carry the config names


def load(cfg: Config, device: torch.device, name: str = "restoreformer++", **options: str) -> Restorer:
    no_options(name, options)
    net = prepare_net(lambda: build(name), name, cfg, device, read=lambda path: read(name, path))
    # attention and codebook distances cast themselves to float32 (builder.models.restoreformer)
    return RestoreFormerRestorer(net, device, model_dtype(device), cfg.swap.batch_size, name=name)
