"""GHOST (ai-forever/ghost): the AEI-Net generator conditioned on its own iresnet100 ArcFace.

Everything a GHOST swap does to pixels, as upstream does it (ai-forever/ghost):

- crop: insightface 0.2.1 ``estimate_norm(kps, 224, mode='None')``, then resized to 256
  (``video_processing.resize_frames``). Here the template is scaled to 256 directly
  (``builder.faces.align.ghost_alignment``), one resampling instead of two.
- target: BGR -> RGB, /255, (x - 0.5) / 0.5, fp16 on CUDA
  (``utils/inference/core.py: transform_target_to_torch``).
- source identity: the aligned crop in RGB, /255, (x - 0.5) / 0.5
  (``image_processing.normalize_and_torch``), bilinear resize to 112 with
  ``align_corners=True`` (``core.model_inference``: ``F.interpolate(scale_factor=0.5)`` of
  the 224 crop; here ``size=112`` of the 256 crop, the same sampling up to 0.15 px at the far
  edge), iresnet100 in fp32, the raw 512-d vector, not normalised.
- output: (y * 0.5 + 0.5) * 255, RGB -> BGR (``faceshifter_run.faceshifter_batch``).
  Upstream truncates to uint8; here it is rounded, which removes a -0.5 level bias.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from builder.config import Config
from builder.device import model_dtype
from builder.errors import ConfigError
from builder.faces import align
from builder.faces.identity import average_raw_identity
from builder.models.checkpoint import load_strict, randomize, read_state_dict
from builder.models.ghost import CROP_SIZE, AEINet
from builder.models.iresnet import EMBEDDING_SIZE, INPUT_SIZE, IResNet, iresnet100, settle_batchnorm
from builder.weights import require

NAMES = ("ghost",)

# config value of [swap] generator -> (weights registry name, AAD blocks per residual block)
GHOST_GENERATORS: dict[str, tuple[str, int]] = {
    "G_unet_1block": ("ghost_unet_1block", 1),
    "G_unet_2blocks": ("ghost_unet_2blocks", 2),
    "G_unet_3blocks": ("ghost_unet_3blocks", 3),
}


def _check_crops(crops: np.ndarray, size: int, what: str) -> None:
    if crops.ndim != 4 or crops.shape[1:] != (size, size, 3) or crops.dtype != np.uint8:
        raise ValueError(f"{what} must be uint8 (N, {size}, {size}, 3) BGR, got {crops.dtype} {crops.shape}")


def _to_unit_range(crops: np.ndarray, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """uint8 BGR (N, H, W, 3) -> RGB (N, 3, H, W) in [-1, 1], GHOST's (x / 255 - 0.5) / 0.5."""
    x = torch.from_numpy(np.ascontiguousarray(crops[..., ::-1])).to(device)
    x = x.permute(0, 3, 1, 2).to(dtype) / 255.0
    return (x - 0.5) / 0.5


def _to_bgr_uint8(y: torch.Tensor) -> np.ndarray:
    """RGB (N, 3, H, W) in [-1, 1] -> uint8 BGR (N, H, W, 3)."""
    y = ((y.float() * 0.5 + 0.5) * 255.0).round().clamp(0, 255).to(torch.uint8)
    return np.ascontiguousarray(y.permute(0, 2, 3, 1).flip(-1).cpu().numpy())


@dataclass
class GhostSwapper:
    generator: AEINet
    arcface: IResNet
    device: torch.device
    dtype: torch.dtype  # the generator's; ArcFace runs in fp32 as in GHOST
    batch_size: int = 8
    crop_size: int = CROP_SIZE
    name: str = "ghost"

    def alignment(self, kps: np.ndarray) -> np.ndarray:
        return align.ghost_alignment(kps, self.crop_size)

    def embed_source(self, image: np.ndarray, kps: np.ndarray) -> np.ndarray:
        """GHOST embeds the source from its own swap crop (the 224 crop halved to 112 upstream)."""
        crop = align.warp(image, self.alignment(kps), self.crop_size)
        return self.embed_crops(crop[None])[0]

    def identity(self, raw: np.ndarray) -> np.ndarray:
        """Directions averaged on the unit sphere (normalise, mean, renormalise) so one
        high-contrast photo does not outvote the rest; GHOST's generator was trained on raw,
        unnormalised ArcFace vectors, so the average is rescaled to the sources' mean norm."""
        return average_raw_identity(np.asarray(raw, dtype=np.float32).reshape(-1, EMBEDDING_SIZE))

    def embed_crops(self, crops: np.ndarray) -> np.ndarray:
        """(N, 256, 256, 3) GHOST crops -> (N, 512) raw iresnet100 vectors."""
        _check_crops(crops, self.crop_size, "source crops")
        out = []
        with torch.inference_mode():
            for i in range(0, len(crops), self.batch_size):
                x = _to_unit_range(crops[i : i + self.batch_size], self.device, torch.float32)
                x = F.interpolate(x, size=(INPUT_SIZE, INPUT_SIZE), mode="bilinear", align_corners=True)
                out.append(self.arcface(x).float().cpu().numpy())
        return np.concatenate(out).astype(np.float32)

    def swap(self, crops: np.ndarray, identity: np.ndarray) -> np.ndarray:
        """Swap ``identity`` (a raw 512-d GHOST ArcFace vector, not unit-normalised) onto every crop."""
        _check_crops(crops, self.crop_size, "donor crops")
        identity = np.asarray(identity, dtype=np.float32).reshape(-1)
        if identity.shape != (EMBEDDING_SIZE,) or not np.isfinite(identity).all():
            raise ValueError(f"identity must be {EMBEDDING_SIZE} finite numbers, got shape {identity.shape}")
        z = torch.from_numpy(identity).to(self.device, self.dtype)[None]
        out = []
        with torch.inference_mode():
            for i in range(0, len(crops), self.batch_size):
                x = _to_unit_range(crops[i : i + self.batch_size], self.device, self.dtype)
                y, _ = self.generator(x, z.expand(len(x), -1))
                out.append(_to_bgr_uint8(y))
        return np.concatenate(out)


def _ghost_models(cfg: Config, device: torch.device) -> tuple[AEINet, IResNet]:
    weight_name, num_blocks = GHOST_GENERATORS[cfg.swap.generator]
    generator, arcface = AEINet(num_blocks=num_blocks), iresnet100()
    if cfg.runtime.random_weights:
        randomize(generator, cfg.runtime.seed)
        settle_batchnorm(randomize(arcface, cfg.runtime.seed), cfg.runtime.seed)
    else:
        for model, name in ((generator, weight_name), (arcface, "ghost_arcface")):
            path = require(name, cfg.runtime.weights_dir)
            load_strict(model, read_state_dict(path), path)
    return generator, arcface


def weights(cfg: Config, name: str) -> list[str]:
    return [GHOST_GENERATORS[cfg.swap.generator][0], "ghost_arcface"]


def load(cfg: Config, device: torch.device, name: str = "ghost", **options: str) -> GhostSwapper:
    if options:
        raise ConfigError(f"the ghost swapper takes no options (its generator is swap.generator), got {', '.join(options)}")
    generator, arcface = _ghost_models(cfg, device)
    dtype = model_dtype(device)
    return GhostSwapper(
        generator=generator.eval().to(device, dtype),
        arcface=arcface.eval().to(device, torch.float32),
        device=device,
        dtype=dtype,
        batch_size=cfg.swap.batch_size,
    )

