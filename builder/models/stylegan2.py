"""StyleGAN2 generator without custom CUDA ops (TencentARC/GFPGAN gfpgan/archs/stylegan2_clean_arch.py).

GFPGAN v1.4 uses it as its decoder, so names and shapes match the official checkpoint's
``stylegan_decoder.*`` keys: ``style_mlp.{1,3,...,15}`` (index 0 is the parameter-free
normalisation, odd indices follow each LeakyReLU), ``constant_input.weight``,
``style_conv1``, ``to_rgb1``, ``style_convs.N``, ``to_rgbs.N`` and the fixed noise buffers
``noises.noiseN``.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

# Feature hook run after the first (upsampling) conv of each resolution level: (features, level) -> features.
LevelHook = Callable[[torch.Tensor, int], torch.Tensor]


def stylegan_channels(channel_multiplier: float, narrow: float) -> dict[str, int]:
    """Feature width by side length, shared by the decoder and GFPGAN's U-Net (upstream ``channels``)."""
    return {
        "4": int(512 * narrow),
        "8": int(512 * narrow),
        "16": int(512 * narrow),
        "32": int(512 * narrow),
        "64": int(256 * channel_multiplier * narrow),
        "128": int(128 * channel_multiplier * narrow),
        "256": int(64 * channel_multiplier * narrow),
        "512": int(32 * channel_multiplier * narrow),
        "1024": int(16 * channel_multiplier * narrow),
    }


class NormStyleCode(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(torch.mean(x**2, dim=1, keepdim=True) + 1e-8)


class ModulatedConv2d(nn.Module):
    """Per-sample weight modulation (and optional demodulation), run as one grouped conv over the batch."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        num_style_feat: int,
        demodulate: bool = True,
        upsample: bool = False,
        eps: float = 1e-8,
    ) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = kernel_size
        self.demodulate = demodulate
        self.upsample = upsample
        self.eps = eps
        self.modulation = nn.Linear(num_style_feat, in_channels, bias=True)
        self.weight = nn.Parameter(
            torch.randn(1, out_channels, in_channels, kernel_size, kernel_size)
            / math.sqrt(in_channels * kernel_size**2)
        )

    def forward(self, x: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        b = x.shape[0]
        weight = self.weight * self.modulation(style).view(b, 1, self.in_channels, 1, 1)
        if self.demodulate:
            demod = torch.rsqrt(weight.pow(2).sum(dim=(2, 3, 4)) + self.eps)
            weight = weight * demod.view(b, self.out_channels, 1, 1, 1)
        if self.upsample:
            x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
        h, w = x.shape[2:]
        out = F.conv2d(
            x.reshape(1, b * self.in_channels, h, w),
            weight.reshape(
                b * self.out_channels, self.in_channels, self.kernel_size, self.kernel_size
            ),
            padding=self.kernel_size // 2,
            groups=b,
        )
        return out.view(b, self.out_channels, *out.shape[2:])


class StyleConv(nn.Module):
    def __init__(
        self, in_channels: int, out_channels: int, num_style_feat: int, upsample: bool = False
    ) -> None:
        super().__init__()
        self.modulated_conv = ModulatedConv2d(
            in_channels, out_channels, 3, num_style_feat, upsample=upsample
        )
        self.weight = nn.Parameter(torch.zeros(1))  # noise strength
        self.bias = nn.Parameter(torch.zeros(1, out_channels, 1, 1))

    def forward(self, x: torch.Tensor, style: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        # sqrt(2) is the gain upstream folds in for the leaky ReLU that follows
        out = self.modulated_conv(x, style) * 2**0.5 + self.weight * noise + self.bias
        return F.leaky_relu(out, 0.2)


class ToRGB(nn.Module):
    def __init__(self, in_channels: int, num_style_feat: int, upsample: bool = True) -> None:
        super().__init__()
        self.upsample = upsample
        self.modulated_conv = ModulatedConv2d(in_channels, 3, 1, num_style_feat, demodulate=False)
        self.bias = nn.Parameter(torch.zeros(1, 3, 1, 1))

    def forward(
        self, x: torch.Tensor, style: torch.Tensor, skip: torch.Tensor | None = None
    ) -> torch.Tensor:
        out = self.modulated_conv(x, style) + self.bias
        if skip is not None:
            if self.upsample:
                skip = F.interpolate(skip, scale_factor=2, mode="bilinear", align_corners=False)
            out = out + skip
        return out


class ConstantInput(nn.Module):
    def __init__(self, num_channel: int, size: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(1, num_channel, size, size))

    def forward(self, batch: int) -> torch.Tensor:
        return self.weight.expand(batch, -1, -1, -1)


class StyleGAN2GeneratorClean(nn.Module):
    def __init__(
        self,
        out_size: int,
        num_style_feat: int = 512,
        num_mlp: int = 8,
        channel_multiplier: float = 2,
        narrow: float = 1,
    ) -> None:
        super().__init__()
        self.num_style_feat = num_style_feat
        mlp: list[nn.Module] = [NormStyleCode()]
        for _ in range(num_mlp):
            mlp += [nn.Linear(num_style_feat, num_style_feat), nn.LeakyReLU(0.2, inplace=True)]
        self.style_mlp = nn.Sequential(*mlp)

        channels = stylegan_channels(channel_multiplier, narrow)
        self.log_size = int(math.log2(out_size))
        self.num_layers = (self.log_size - 2) * 2 + 1  # style convs, one noise map each
        self.num_latent = self.log_size * 2 - 2  # w vectors consumed: convs plus to_rgbs
        self.constant_input = ConstantInput(channels["4"], size=4)
        self.style_conv1 = StyleConv(channels["4"], channels["4"], num_style_feat)
        self.to_rgb1 = ToRGB(channels["4"], num_style_feat, upsample=False)
        self.style_convs = nn.ModuleList()
        self.to_rgbs = nn.ModuleList()
        self.noises = nn.Module()
        for idx in range(self.num_layers):
            side = 2 ** ((idx + 5) // 2)
            self.noises.register_buffer(f"noise{idx}", torch.randn(1, 1, side, side))
        in_ch = channels["4"]
        for level in range(3, self.log_size + 1):
            out_ch = channels[str(2**level)]
            self.style_convs.append(StyleConv(in_ch, out_ch, num_style_feat, upsample=True))
            self.style_convs.append(StyleConv(out_ch, out_ch, num_style_feat))
            self.to_rgbs.append(ToRGB(out_ch, num_style_feat, upsample=True))
            in_ch = out_ch

    def forward(
        self,
        styles: torch.Tensor,
        input_is_latent: bool = False,
        level_hook: LevelHook | None = None,
    ) -> torch.Tensor:
        """(B, 512) style, or (B, num_latent, 512) one w per layer -> (B, 3, size, size) image in [-1, 1].

        Noise is the checkpoint's stored ``noises.noiseN`` (upstream's randomize_noise=False),
        so a crop restores the same way every run; upstream's GFPGANer draws fresh noise per call.
        """
        if not input_is_latent:
            styles = self.style_mlp(styles)
        latent = styles if styles.ndim == 3 else styles.unsqueeze(1).expand(-1, self.num_latent, -1)
        noise = [getattr(self.noises, f"noise{i}") for i in range(self.num_layers)]

        out = self.style_conv1(self.constant_input(latent.shape[0]), latent[:, 0], noise[0])
        skip = self.to_rgb1(out, latent[:, 1])
        for level, to_rgb in enumerate(self.to_rgbs):
            i = 2 * level + 1  # index of this level's first latent and noise
            out = self.style_convs[2 * level](out, latent[:, i], noise[i])
            if level_hook is not None:
                out = level_hook(out, level)
            out = self.style_convs[2 * level + 1](out, latent[:, i + 1], noise[i + 1])
            skip = to_rgb(out, latent[:, i + 2], skip)
        return skip
