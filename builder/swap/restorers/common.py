"""What every torch restorer shares: the crop check, upstream's pre/post-processing, batching, loading.

Pre- and post-processing follow the upstream inference code (CodeFormer's
inference_codeformer.py, GFPGAN's GFPGANer.enhance): BGR uint8 -> RGB, /255, normalise with
mean 0.5 and std 0.5 to [-1, 1]; the output is clamped to [-1, 1], mapped back to [0, 1],
times 255, rounded, cast to uint8 and turned back into BGR (basicsr tensor2img, min_max=(-1, 1)).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from builder.config import Config
from builder.device import model_dtype
from builder.errors import ConfigError
from builder.models.checkpoint import load_strict, randomize, read_state_dict
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


@dataclass
class TorchRestorer:
    """A torch network on [-1, 1] RGB crops; subclasses say how to call it."""

    net: nn.Module
    device: torch.device
    dtype: torch.dtype
    batch_size: int
    name: str = ""  # the candidate spec it was loaded from, e.g. "codeformer:w=0.5"
    template: str = "ffhq"  # the crop it was trained on (align.restorer_alignment)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def to_crops(self, y: torch.Tensor) -> np.ndarray:
        """The model's output as uint8 crops; a restorer whose upstream converts otherwise overrides it."""
        return to_crops(y)

    def restore(self, crops: np.ndarray) -> np.ndarray:
        check_crops(crops)
        out = np.empty_like(crops)
        with torch.inference_mode():
            for start in range(0, len(crops), self.batch_size):
                chunk = crops[start : start + self.batch_size]
                out[start : start + len(chunk)] = self.to_crops(
                    self.forward(to_model_input(chunk, self.device, self.dtype))
                )
        return out


def prepare_net(
    build: Callable[[], nn.Module],
    weight_name: str,
    cfg: Config,
    device: torch.device,
    key: str | None = "params_ema",
    read: Callable[[Path], dict[str, torch.Tensor]] | None = None,
) -> nn.Module:
    """Official weights (strict, from ``key`` of the file) or seeded random ones; eval mode on ``device``.

    ``read`` takes the place of reading ``key`` for a file that holds more than the network
    (RestoreFormer++'s Lightning checkpoint)."""
    if cfg.runtime.random_weights:
        net = randomize(build(), cfg.runtime.seed)
    else:
        # before building: a missing file should fail fast
        path = require(weight_name, cfg.runtime.weights_dir)
        net = build()
        state = read(path) if read is not None else read_state_dict(path, key=key)
        load_strict(net, state, path)
    return net.eval().to(device=device, dtype=model_dtype(device))


def no_options(name: str, options: dict[str, str]) -> None:
    if options:
        raise ConfigError(f"restorer {name!r} takes no options, got {', '.join(options)}")
