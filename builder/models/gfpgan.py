"""GFPGAN v1.4 ("clean" architecture, TencentARC/GFPGAN gfpgan/archs/gfpganv1_clean_arch.py).

A U-Net encodes the degraded face into one w per decoder layer (``final_linear``) and, on
the way up, into per-level SFT scale and shift maps (``condition_scale/shift``) that
modulate half the channels of a StyleGAN2 decoder (``stylegan_decoder``). Names and shapes
match the official ``GFPGANv1.4.pth`` (release v1.3.0, weights under ``params_ema``),
built the way GFPGANer builds it: out_size=512, channel_multiplier=2, different_w=True,
input_is_latent=True, sft_half=True, narrow=1, num_mlp=8.

Upstream's ``decoder_load_path`` / ``fix_decoder`` only matter for training and are left out.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from builder.models.stylegan2 import StyleGAN2GeneratorClean, stylegan_channels


class StyleGAN2GeneratorCSFT(StyleGAN2GeneratorClean):
    """The decoder, with Spatial Feature Transform after the first conv of each level."""

    def __init__(
        self,
        out_size: int,
        num_style_feat: int = 512,
        num_mlp: int = 8,
        channel_multiplier: float = 2,
        narrow: float = 1,
        sft_half: bool = False,
    ) -> None:
        super().__init__(out_size, num_style_feat, num_mlp, channel_multiplier, narrow)
        self.sft_half = sft_half

    def synthesize(
        self, styles: torch.Tensor, conditions: list[torch.Tensor], input_is_latent: bool
    ) -> torch.Tensor:
        """``conditions`` alternates scale and shift, one pair per level from 8x8 up."""

        def sft(out: torch.Tensor, level: int) -> torch.Tensor:
            if 2 * level + 1 >= len(conditions):
                return out
            scale, shift = conditions[2 * level], conditions[2 * level + 1]
            if not self.sft_half:
                return out * scale + shift
            kept, modulated = torch.split(out, out.shape[1] // 2, dim=1)
            return torch.cat([kept, modulated * scale + shift], dim=1)

        return self(styles, input_is_latent=input_is_latent, level_hook=sft)


class ResBlock(nn.Module):
    """U-Net residual block that resamples bilinearly between its two convs (down: x0.5, up: x2)."""

    def __init__(self, in_channels: int, out_channels: int, mode: str = "down") -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, in_channels, 3, 1, 1)
        self.conv2 = nn.Conv2d(in_channels, out_channels, 3, 1, 1)
        self.skip = nn.Conv2d(in_channels, out_channels, 1, bias=False)
        self.scale_factor = 0.5 if mode == "down" else 2.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.leaky_relu(self.conv1(x), 0.2)
        out = F.interpolate(
            out, scale_factor=self.scale_factor, mode="bilinear", align_corners=False
        )
        out = F.leaky_relu(self.conv2(out), 0.2)
        x = F.interpolate(x, scale_factor=self.scale_factor, mode="bilinear", align_corners=False)
        return out + self.skip(x)


class GFPGANv1Clean(nn.Module):
    def __init__(
        self,
        out_size: int = 512,
        num_style_feat: int = 512,
        channel_multiplier: float = 2,
        num_mlp: int = 8,
        input_is_latent: bool = True,
        different_w: bool = True,
        narrow: float = 1,
        sft_half: bool = True,
    ) -> None:
        super().__init__()
        self.input_is_latent = input_is_latent
        self.different_w = different_w
        self.num_style_feat = num_style_feat
        self.log_size = int(math.log2(out_size))
        # the U-Net is half as wide as the decoder
        channels = stylegan_channels(channel_multiplier, narrow * 0.5)

        self.conv_body_first = nn.Conv2d(3, channels[str(out_size)], 1)
        self.conv_body_down = nn.ModuleList()
        in_ch = channels[str(out_size)]
        for i in range(self.log_size, 2, -1):
            self.conv_body_down.append(ResBlock(in_ch, channels[str(2 ** (i - 1))], mode="down"))
            in_ch = channels[str(2 ** (i - 1))]
        self.final_conv = nn.Conv2d(in_ch, channels["4"], 3, 1, 1)

        levels = [channels[str(2**i)] for i in range(3, self.log_size + 1)]
        self.conv_body_up = nn.ModuleList()
        in_ch = channels["4"]
        for out_ch in levels:
            self.conv_body_up.append(ResBlock(in_ch, out_ch, mode="up"))
            in_ch = out_ch
        # camelCase because that is the checkpoint key
        self.toRGB = nn.ModuleList(nn.Conv2d(ch, 3, 1) for ch in levels)

        n_w = (self.log_size * 2 - 2) if different_w else 1
        self.final_linear = nn.Linear(channels["4"] * 4 * 4, n_w * num_style_feat)

        self.stylegan_decoder = StyleGAN2GeneratorCSFT(
            out_size, num_style_feat, num_mlp, channel_multiplier, narrow, sft_half
        )

        def sft_branch(ch: int) -> nn.Sequential:
            out_ch = ch if sft_half else ch * 2
            return nn.Sequential(
                nn.Conv2d(ch, ch, 3, 1, 1), nn.LeakyReLU(0.2, True), nn.Conv2d(ch, out_ch, 3, 1, 1)
            )

        self.condition_scale = nn.ModuleList(sft_branch(ch) for ch in levels)
        self.condition_shift = nn.ModuleList(sft_branch(ch) for ch in levels)

    def forward(
        self, x: torch.Tensor, return_rgb: bool = False
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """(B, 3, 512, 512) RGB in [-1, 1] -> (restored image, the U-Net's per-level RGB previews if asked)."""
        feat = F.leaky_relu(self.conv_body_first(x), 0.2)
        skips: list[torch.Tensor] = []
        for down in self.conv_body_down:
            feat = down(feat)
            skips.insert(0, feat)
        feat = F.leaky_relu(self.final_conv(feat), 0.2)

        style_code = self.final_linear(feat.flatten(1))
        if self.different_w:
            style_code = style_code.view(style_code.shape[0], -1, self.num_style_feat)

        conditions: list[torch.Tensor] = []
        rgbs: list[torch.Tensor] = []
        for i, up in enumerate(self.conv_body_up):
            feat = up(feat + skips[i])
            conditions += [self.condition_scale[i](feat), self.condition_shift[i](feat)]
            if return_rgb:
                rgbs.append(self.toRGB[i](feat))

        image = self.stylegan_decoder.synthesize(style_code, conditions, self.input_is_latent)
        return image, rgbs
