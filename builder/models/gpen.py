"""GPEN-BFR-512 (yangxy/GPEN face_model/gpen_model.py ``FullGenerator``) in plain torch.

A convolutional encoder maps the face to one style code and, at every side from 512 down
to 4, a feature map; a StyleGAN2 generator (rosinality's layout, not GFPGAN's "clean" one)
synthesises the restored face from that code, taking each encoder map in place of
StyleGAN2's random noise, concatenated to its conv output (``isconcat=True``, which doubles
the channels every activation and ToRGB sees). Nothing is drawn at random at inference:
upstream's ``FullGenerator.forward`` feeds every noise slot from the encoder, so the output
is a pure function of the input and the weights.

Upstream's CUDA extensions (``fused_bias_act``, ``upfirdn2d``) are replaced by their own CPU
fallbacks (``fused_leaky_relu``'s else-branch and ``upfirdn2d_native``), written here in
the same operation order, so CPU outputs match upstream's bit for bit.

Names and shapes match the raw state dict ``GPEN-BFR-512.pth``, built the way
face_model/face_gan.py builds it: ``FullGenerator(512, 512, 8, channel_multiplier=2,
narrow=1)``; that includes the fixed blur kernels, which upstream stores as buffers.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from builder.models.stylegan2 import NormStyleCode, stylegan_channels

BLUR = (1, 3, 3, 1)
# Sides below this stay float32 under half precision (see use_half_precision).
HALF_MIN_SIDE = 64


def make_kernel(k: Sequence[float]) -> torch.Tensor:
    kernel = torch.tensor(k, dtype=torch.float32)
    kernel = kernel[None, :] * kernel[:, None]
    return kernel / kernel.sum()


def upfirdn2d(x: torch.Tensor, kernel: torch.Tensor, up: int = 1, pad: tuple[int, int] = (0, 0)):
    """Zero-insertion upsampling, padding (same on both axes) and a FIR filter, per channel."""
    b, c, h, w = x.shape
    x = x.to(kernel.dtype)
    if up > 1:
        spread = x.new_zeros(b, c, h, up, w, up)
        spread[:, :, :, 0, :, 0] = x
        x = spread.view(b, c, h * up, w * up)
    x = F.pad(x, [pad[0], pad[1], pad[0], pad[1]])
    kh, kw = kernel.shape
    # every channel is filtered alone, as one single-channel image (upstream's reshape)
    out = F.conv2d(x.reshape(b * c, 1, *x.shape[2:]), kernel.flip(0, 1).view(1, 1, kh, kw))
    return out.view(b, c, *out.shape[2:])


def fused_leaky_relu(x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """Bias, leaky ReLU (0.2), and the sqrt(2) gain that keeps the signal's variance."""
    bias = bias.view(1, -1, *([1] * (x.ndim - 2)))
    return 2**0.5 * F.leaky_relu(x + bias, negative_slope=0.2)


class FusedLeakyReLU(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return fused_leaky_relu(x, self.bias)


class Blur(nn.Module):
    def __init__(self, pad: tuple[int, int], upsample_factor: int = 1) -> None:
        super().__init__()
        # the upsampling blur's kernel carries the energy the inserted zeros took out
        self.register_buffer("kernel", make_kernel(BLUR) * upsample_factor**2)
        self.pad = pad

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return upfirdn2d(x, self.kernel, pad=self.pad)


class Upsample(nn.Module):
    def __init__(self, factor: int = 2) -> None:
        super().__init__()
        self.factor = factor
        self.register_buffer("kernel", make_kernel(BLUR) * factor**2)
        p = len(BLUR) - factor
        self.pad = ((p + 1) // 2 + factor - 1, p // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return upfirdn2d(x, self.kernel, up=self.factor, pad=self.pad)


class EqualConv2d(nn.Module):
    """Conv whose weights are stored at unit variance and scaled by 1/sqrt(fan_in) when used."""

    def __init__(
        self, in_ch: int, out_ch: int, kernel_size: int, stride: int, padding: int, bias: bool
    ) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_ch, in_ch, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_ch)) if bias else None
        self.scale = 1 / math.sqrt(in_ch * kernel_size**2)
        self.stride = stride
        self.padding = padding

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.weight.dtype)
        return F.conv2d(
            x, self.weight * self.scale, bias=self.bias, stride=self.stride, padding=self.padding
        )


class EqualLinear(nn.Module):
    """Linear layer with equalised learning rate; ``lr_mul`` is 0.01 in the mapping network."""

    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        bias_init: float = 0.0,
        lr_mul: float = 1.0,
        activation: bool = False,
    ) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_dim, in_dim) / lr_mul)
        self.bias = nn.Parameter(torch.full((out_dim,), float(bias_init)))
        self.scale = lr_mul / math.sqrt(in_dim)
        self.lr_mul = lr_mul
        self.activation = activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.weight.dtype)
        if self.activation:
            return fused_leaky_relu(F.linear(x, self.weight * self.scale), self.bias * self.lr_mul)
        return F.linear(x, self.weight * self.scale, bias=self.bias * self.lr_mul)


class ModulatedConv2d(nn.Module):
    """Per-sample modulated (and optionally demodulated) conv, one grouped conv over the batch.

    Upsampling is a stride-2 transposed conv followed by a blur, as upstream (GFPGAN's clean
    variant resizes bilinearly instead, so the two cannot share this module).
    """

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        kernel_size: int,
        style_dim: int,
        demodulate: bool = True,
        upsample: bool = False,
    ) -> None:
        super().__init__()
        self.in_ch = in_ch
        self.out_ch = out_ch
        self.kernel_size = kernel_size
        self.demodulate = demodulate
        self.upsample = upsample
        if upsample:
            factor = 2
            p = (len(BLUR) - factor) - (kernel_size - 1)
            self.blur = Blur(((p + 1) // 2 + factor - 1, p // 2 + 1), upsample_factor=factor)
        self.scale = 1 / math.sqrt(in_ch * kernel_size**2)
        self.padding = kernel_size // 2
        self.weight = nn.Parameter(torch.randn(1, out_ch, in_ch, kernel_size, kernel_size))
        self.modulation = EqualLinear(style_dim, in_ch, bias_init=1)

    def forward(self, x: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        x = x.to(self.weight.dtype)
        style = self.modulation(style).view(b, 1, self.in_ch, 1, 1)
        weight = self.scale * self.weight * style
        if self.demodulate:
            # in float32: the 1e-8 guard underflows to 0 in float16 (a no-op cast in float32)
            demod = torch.rsqrt(weight.float().pow(2).sum([2, 3, 4]) + 1e-8).to(weight.dtype)
            weight = weight * demod.view(b, self.out_ch, 1, 1, 1)
        k = self.kernel_size
        x = x.reshape(1, b * self.in_ch, h, w)
        if self.upsample:
            weight = weight.transpose(1, 2).reshape(b * self.in_ch, self.out_ch, k, k)
            out = F.conv_transpose2d(x, weight, padding=0, stride=2, groups=b)
            return self.blur(out.view(b, self.out_ch, *out.shape[2:]))
        weight = weight.reshape(b * self.out_ch, self.in_ch, k, k)
        out = F.conv2d(x, weight, padding=self.padding, groups=b)
        return out.view(b, self.out_ch, *out.shape[2:])


class NoiseInjection(nn.Module):
    """GPEN's ``isconcat`` noise: the scaled encoder map is appended as extra channels."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        return torch.cat((x, (self.weight * noise.to(self.weight.dtype)).to(x.dtype)), dim=1)


class ConstantInput(nn.Module):
    def __init__(self, channels: int, size: int = 4) -> None:
        super().__init__()
        self.input = nn.Parameter(torch.randn(1, channels, size, size))

    def forward(self, batch: int) -> torch.Tensor:
        return self.input.repeat(batch, 1, 1, 1)


class StyledConv(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, style_dim: int, upsample: bool = False) -> None:
        super().__init__()
        self.conv = ModulatedConv2d(in_ch, out_ch, 3, style_dim, upsample=upsample)
        self.noise = NoiseInjection()
        self.activate = FusedLeakyReLU(out_ch * 2)  # conv output plus the concatenated map

    def forward(self, x: torch.Tensor, style: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        return self.activate(self.noise(self.conv(x, style), noise))


class ToRGB(nn.Module):
    def __init__(self, in_ch: int, style_dim: int, upsample: bool = True) -> None:
        super().__init__()
        if upsample:
            self.upsample = Upsample()
        self.conv = ModulatedConv2d(in_ch, 3, 1, style_dim, demodulate=False)
        self.bias = nn.Parameter(torch.zeros(1, 3, 1, 1))

    def forward(
        self, x: torch.Tensor, style: torch.Tensor, skip: torch.Tensor | None = None
    ) -> torch.Tensor:
        out = self.conv(x, style) + self.bias
        if skip is not None:
            out = out + self.upsample(skip)
        return out


class Generator(nn.Module):
    """StyleGAN2 synthesis with concatenated noise; every layer gets the same w (one style code)."""

    def __init__(
        self,
        size: int,
        style_dim: int,
        n_mlp: int,
        channel_multiplier: float = 2,
        lr_mlp: float = 0.01,
        narrow: float = 1,
    ) -> None:
        super().__init__()
        self.style = nn.Sequential(
            NormStyleCode(),
            *(
                EqualLinear(style_dim, style_dim, lr_mul=lr_mlp, activation=True)
                for _ in range(n_mlp)
            ),
        )
        channels = stylegan_channels(channel_multiplier, narrow)
        self.input = ConstantInput(channels["4"])
        self.conv1 = StyledConv(channels["4"], channels["4"], style_dim)
        self.to_rgb1 = ToRGB(channels["4"] * 2, style_dim, upsample=False)
        self.convs = nn.ModuleList()
        self.to_rgbs = nn.ModuleList()
        in_ch = channels["4"]
        for level in range(3, int(math.log2(size)) + 1):
            out_ch = channels[str(2**level)]
            self.convs.append(StyledConv(in_ch * 2, out_ch, style_dim, upsample=True))
            self.convs.append(StyledConv(out_ch * 2, out_ch, style_dim))
            self.to_rgbs.append(ToRGB(out_ch * 2, style_dim))
            in_ch = out_ch

    def forward(self, code: torch.Tensor, noise: list[torch.Tensor]) -> torch.Tensor:
        """(B, style_dim) code and one map per synthesis conv (sides 4, 8, 8, ..., size, size)."""
        w = self.style(code)
        out = self.conv1(self.input(code.shape[0]), w, noise[0])
        skip = self.to_rgb1(out, w)
        for level, to_rgb in enumerate(self.to_rgbs):
            out = self.convs[2 * level](out, w, noise[2 * level + 1])
            out = self.convs[2 * level + 1](out, w, noise[2 * level + 2])
            skip = to_rgb(out, w, skip)
        return skip


class ConvLayer(nn.Sequential):
    """Encoder conv (blur then stride 2 when downsampling) with a fused-bias leaky ReLU."""

    def __init__(self, in_ch: int, out_ch: int, kernel_size: int, downsample: bool = False) -> None:
        layers: list[nn.Module] = []
        if downsample:
            p = (len(BLUR) - 2) + (kernel_size - 1)
            layers.append(Blur(((p + 1) // 2, p // 2)))
            stride, padding = 2, 0
        else:
            stride, padding = 1, kernel_size // 2
        layers.append(EqualConv2d(in_ch, out_ch, kernel_size, stride, padding, bias=False))
        layers.append(FusedLeakyReLU(out_ch))
        super().__init__(*layers)


class FullGenerator(nn.Module):
    """GPEN's restorer: ``ecd0``..``ecd{log2(size)-2}`` encode, ``generator`` decodes."""

    def __init__(
        self,
        size: int,
        style_dim: int,
        n_mlp: int,
        channel_multiplier: float = 2,
        lr_mlp: float = 0.01,
        narrow: float = 1,
    ) -> None:
        super().__init__()
        channels = stylegan_channels(channel_multiplier, narrow)
        self.log_size = int(math.log2(size))
        self.generator = Generator(size, style_dim, n_mlp, channel_multiplier, lr_mlp, narrow)
        self.ecd0 = nn.Sequential(ConvLayer(3, channels[str(size)], 1))
        in_ch = channels[str(size)]
        for i in range(1, self.log_size - 1):
            out_ch = channels[str(size >> i)]
            setattr(self, f"ecd{i}", nn.Sequential(ConvLayer(in_ch, out_ch, 3, downsample=True)))
            in_ch = out_ch
        self.final_linear = nn.Sequential(
            EqualLinear(channels["4"] * 4 * 4, style_dim, activation=True)
        )

    def encoders(self) -> list[nn.Module]:
        return [getattr(self, f"ecd{i}") for i in range(self.log_size - 1)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, size, size) RGB in [-1, 1] -> restored (B, 3, size, size), nominally [-1, 1]."""
        feats = []
        for encode in self.encoders():
            x = encode(x)
            feats.append(x)
        code = self.final_linear(x.flatten(1))
        # each side's map feeds both synthesis convs of that side; the first 4x4 slot is unused
        noise = [f for f in reversed(feats) for _ in range(2)][1:]
        return self.generator(code, noise)


def use_half_precision(net: FullGenerator, dtype: torch.dtype) -> FullGenerator:
    """Cast the layers working at sides >= HALF_MIN_SIDE to ``dtype``; keep the rest float32.

    float32 stays where StyleGAN2's activations are largest and the work is small: the
    mapping network (PixelNorm squares its input, which passes float16's range past 256),
    the 4-32 px synthesis levels and the 4-32 px encoder levels that feed them, and the
    style code. NVIDIA's StyleGAN2-ADA makes the same split (``num_fp16_res=4``: float16
    for the four highest resolutions only). The 64-512 px layers are almost all the compute.
    Each layer casts its input to its own weights' dtype, so the boundary needs no bookkeeping.
    StyleGAN2-ADA also clamps activations to +-256 in float16; that would change the numbers
    against upstream's float32, so it is not done here.
    """
    net.float()
    size = 2**net.log_size
    for i, encode in enumerate(net.encoders()):
        if size >> i >= HALF_MIN_SIDE:  # the side of the map it puts out
            encode.to(dtype)
    gen = net.generator
    for level, to_rgb in enumerate(gen.to_rgbs):
        if 2 ** (level + 3) >= HALF_MIN_SIDE:
            gen.convs[2 * level].to(dtype)
            gen.convs[2 * level + 1].to(dtype)
            to_rgb.to(dtype)
    return net
