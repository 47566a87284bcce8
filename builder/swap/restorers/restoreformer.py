"""RestoreFormer++ (wzhouxiff/RestoreFormerPlusPlus, RestoreFormer++.ckpt from release v1.0.0) and
RestoreFormer, from either of its two releases, on the FFHQ-512 crop:
- ``restoreformer``: RestoreFormer.pth from TencentARC/GFPGAN release v1.3.4 (``params_ema``, else
  ``params``, unprefixed: what GFPGANer loads);
- ``restoreformer_ckpt``: RestoreFormer.ckpt from RestoreFormerPlusPlus release v1.0.0 (Lightning:
  ``state_dict`` under ``vqvae.``: what upstream's ``inference.py -v RestoreFormer`` loads).
Nothing published says the two hold the same weights (GFPGAN's is the 2022 CVPR model, the
other a 2023 release beside RestoreFormer++; only an md5 of the first and a size and sha256 of
the second are known), so each has its own name and registry entry.

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

NAMES = ("restoreformer++", "restoreformer", "restoreformer_ckpt")

# RestoreFormer.py's two configurations; GFPGAN's RestoreFormer class is the second, key for key
ARGS: dict[str, dict[str, int]] = {
    "restoreformer++": {"head_size": 4, "ex_multi_scale_num": 1},
    "restoreformer": {"head_size": 8, "ex_multi_scale_num": 0},
    "restoreformer_ckpt": {"head_size": 8, "ex_multi_scale_num": 0},
}
# Where a release keeps the network: GFPGAN's files in params_ema (else params), Lightning's in
# state_dict. Any file may be read with either layout; the keys, not the name, decide.
STATE_KEYS = ("params_ema", "params", "state_dict")
# A Lightning checkpoint of RestoreFormerModel: the network is its ``vqvae``; its ``loss`` (LPIPS,
# discriminators, identity net) only trains it, and the codebook's usage counter is a training
# statistic (upstream's configs list ``vqvae.quantize.utility_counter`` under ignore_keys).
NETWORK_PREFIX = "vqvae."
TRAINING_ONLY = ("loss.", "vqvae.quantize.utility_counter")


@dataclass
class RestoreFormerRestorer(TorchRestorer):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def build(name: str) -> VQVAEGANMultiHeadTransformer:
    return VQVAEGANMultiHeadTransformer(**ARGS[name])


def read(path: Path) -> dict[str, torch.Tensor]:
    """The network's weights from a file in either release layout; load_strict then checks them.

    Keys under ``vqvae.`` are the network (the rest must be training-only, by name); a file
    without them holds the bare network, as upstream's loader (which strips ``vqvae.`` where
    present) reads it."""
    state = read_state_dict(path, key=STATE_KEYS)
    if any(k.startswith(NETWORK_PREFIX) for k in state):
        return select_prefix(state, NETWORK_PREFIX, TRAINING_ONLY, path)
    return state


def weights(cfg: Config, name: str) -> list[str]:
    return [name]  # registry entries carry the config names


def load(cfg: Config, device: torch.device, name: str = "restoreformer++", **options: str) -> Restorer:
    no_options(name, options)
    net = prepare_net(lambda: build(name), name, cfg, device, read=read)
    # attention and codebook distances cast themselves to float32 (builder.models.restoreformer)
    return RestoreFormerRestorer(net, device, model_dtype(device), cfg.swap.batch_size, name=name)
