"""Face restorers on the FFHQ-512 crop: CodeFormer, GFPGAN v1.4, or none.

Pre- and post-processing follow the upstream inference code (CodeFormer's
inference_codeformer.py, GFPGAN's GFPGANer.enhance): BGR uint8 -> RGB, /255, normalise with
mean 0.5 and std 0.5 to [-1, 1]; the output is clamped to [-1, 1], mapped back to [0, 1],
times 255, rounded, cast to uint8 and turned back into BGR (basicsr tensor2img, min_max=(-1, 1)).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from builder.config import Config
from builder.device import model_dtype
from builder.errors import ConfigError
from builder.models.base import Restorer
from builder.models.checkpoint import load_strict, randomize, read_state_dict
from builder.models.codeformer import CodeFormer
from builder.models.gfpgan import GFPGANv1Clean
from builder.registry import pick
from builder.weights import require

CROP = 512


def check_crops(crops: np.ndarray) -> None:
    if (
        not isinstance(crops, np.ndarray)
        or crops.dtype != np.uint8
        or crops.ndim != 4
        or crops.shape[1:] != (CROP, CROP, 3)
    ):
        got = (
            f"{crops.dtype} {crops.shape}"
            if isinstance(crops, np.ndarray)
            else type(crops).__name__
        )
        raise ValueError(f"restorers take (N, {CROP}, {CROP}, 3) uint8 BGR crops, got {got}")


def to_model_input(crops: np.ndarray, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """(N, H, W, 3) uint8 BGR -> (N, 3, H, W) RGB in [-1, 1]; the scaling is done in float32, then cast."""
    x = torch.from_numpy(np.ascontiguousarray(crops)).to(device)
    # contiguous NCHW: a permuted view is channels_last, which convs propagate and CPU GroupNorm crawls on
    x = x.flip(-1).permute(0, 3, 1, 2).contiguous().float()
    return ((x / 255.0 - 0.5) / 0.5).to(dtype)


def to_crops(y: torch.Tensor) -> np.ndarray:
    """(N, 3, H, W) RGB model output -> (N, H, W, 3) uint8 BGR, as basicsr tensor2img(min_max=(-1, 1))."""
    y = (y.float().clamp(-1.0, 1.0) + 1.0) / 2.0
    y = (y * 255.0).round().to(torch.uint8)
    return y.permute(0, 2, 3, 1).flip(-1).cpu().numpy()


class NoRestorer:
    """The user's choice of no restoration: the crops pass through unchanged."""

    def restore(self, crops: np.ndarray) -> np.ndarray:
        check_crops(crops)
        return crops.copy()


@dataclass
class TorchRestorer:
    net: nn.Module
    device: torch.device
    dtype: torch.dtype
    batch_size: int

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def restore(self, crops: np.ndarray) -> np.ndarray:
        check_crops(crops)
        out = np.empty_like(crops)
        with torch.inference_mode():
            for start in range(0, len(crops), self.batch_size):
                chunk = crops[start : start + self.batch_size]
                out[start : start + len(chunk)] = to_crops(
                    self.forward(to_model_input(chunk, self.device, self.dtype))
                )
        return out


@dataclass
class CodeFormerRestorer(TorchRestorer):
    w: float = 0.7  # fidelity: 0 trusts the learned codebook, 1 keeps most of the input

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x, w=self.w, adain=True)[0]


@dataclass
class GFPGANRestorer(TorchRestorer):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # GFPGANer passes weight=0.5 too, but GFPGANv1Clean swallows it unused in **kwargs
        return self.net(x, return_rgb=False)[0]


def prepare_net(
    build: Callable[[], nn.Module], weight_name: str, cfg: Config, device: torch.device
) -> nn.Module:
    """Official weights (strict, from ``params_ema``) or seeded random ones; eval mode on ``device``."""
    if cfg.runtime.random_weights:
        net = randomize(build(), cfg.runtime.seed)
    else:
        # before building: a missing file should fail fast
        path = require(weight_name, cfg.runtime.weights_dir)
        net = build()
        load_strict(net, read_state_dict(path, key="params_ema"), path)
    return net.eval().to(device=device, dtype=model_dtype(device))


def build_codeformer() -> CodeFormer:
    # the arguments of inference_codeformer.py for codeformer.pth
    return CodeFormer(
        dim_embd=512,
        codebook_size=1024,
        n_head=8,
        n_layers=9,
        connect_list=["32", "64", "128", "256"],
    )


def build_gfpgan() -> GFPGANv1Clean:
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


def load_codeformer(cfg: Config, device: torch.device) -> Restorer:
    net = prepare_net(build_codeformer, "codeformer", cfg, device)
    # the code-prediction head picks one of 1024 codebook entries per token: keep that choice in float32
    net.idx_pred_layer.float()
    return CodeFormerRestorer(
        net, device, model_dtype(device), cfg.swap.batch_size, w=cfg.swap.codeformer_w
    )


def load_gfpgan(cfg: Config, device: torch.device) -> Restorer:
    net = prepare_net(build_gfpgan, "gfpgan_v1.4", cfg, device)
    return GFPGANRestorer(net, device, model_dtype(device), cfg.swap.batch_size)


def load_none(cfg: Config, device: torch.device) -> Restorer:
    return NoRestorer()


RESTORERS: dict[str, Callable[[Config, torch.device], Restorer]] = {
    "codeformer": load_codeformer,
    "gfpgan": load_gfpgan,
    "none": load_none,
}


def load_restorer(cfg: Config, device: torch.device | str) -> Restorer:
    load = pick(RESTORERS, cfg.swap.restorer, "swap.restorer")
    if cfg.swap.batch_size < 1:
        raise ConfigError(f"swap.batch_size must be at least 1, got {cfg.swap.batch_size}")
    return load(cfg, torch.device(device))
