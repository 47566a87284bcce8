"""The VQ autoencoder CodeFormer is built on (sczhou/CodeFormer basicsr/archs/vqgan_arch.py).

Module names, block order and shapes follow upstream exactly, because the official
``codeformer.pth`` stores its weights as ``encoder.blocks.N.*``, ``quantize.embedding.weight``
and ``generator.blocks.N.*``; CodeFormer indexes into ``blocks`` by position to tap and
fuse features, so the order is part of the contract as well.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def group_norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(num_groups=32, num_channels=channels, eps=1e-6, affine=True)


class ResBlock(nn.Module):
    """Pre-activation residual block (GroupNorm, swish, 3x3 conv) x2; 1x1 ``conv_out`` when widths differ."""

    def __init__(self, in_channels: int, out_channels: int | None = None) -> None:
        super().__init__()
        out_channels = in_channels if out_channels is None else out_channels
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.norm1 = group_norm(in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.norm2 = group_norm(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        if in_channels != out_channels:
            self.conv_out = nn.Conv2d(in_channels, out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        if self.in_channels != self.out_channels:
            x = self.conv_out(x)
        return x + h


class AttnBlock(nn.Module):
    """Single-head spatial self-attention with 1x1 q/k/v/proj_out convs, residual."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.norm = group_norm(channels)
        self.q = nn.Conv2d(channels, channels, 1)
        self.k = nn.Conv2d(channels, channels, 1)
        self.v = nn.Conv2d(channels, channels, 1)
        self.proj_out = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        y = self.norm(x)
        # (B, HW, C) tokens; scaled_dot_product_attention scales by C**-0.5 like upstream
        q, k, v = (conv(y).flatten(2).transpose(1, 2) for conv in (self.q, self.k, self.v))
        attended = F.scaled_dot_product_attention(q, k, v)
        return x + self.proj_out(attended.transpose(1, 2).reshape(b, c, h, w))


class Downsample(nn.Module):
    """Stride-2 3x3 conv after padding only right and bottom, as upstream (not a symmetric pad)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.pad(x, (0, 1, 0, 1)))


class Upsample(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class VectorQuantizer(nn.Module):
    """The codebook; inference only needs the lookup from predicted code indices."""

    def __init__(self, codebook_size: int, emb_dim: int) -> None:
        super().__init__()
        self.codebook_size = codebook_size
        self.emb_dim = emb_dim
        self.embedding = nn.Embedding(codebook_size, emb_dim)

    def get_codebook_feat(
        self, indices: torch.Tensor, shape: tuple[int, int, int, int]
    ) -> torch.Tensor:
        """(B, HW) code indices -> (B, C, H, W) features; ``shape`` is (B, H, W, C) as upstream.

        Upstream multiplies a float32 one-hot matrix by the codebook, which is an exact
        row gather; indexing does the same in any dtype (the one-hot matmul breaks in fp16).
        """
        return (
            self.embedding.weight[indices.reshape(-1)].view(shape).permute(0, 3, 1, 2).contiguous()
        )


class BlockStack(nn.Module):
    """Blocks run in order; kept as a ModuleList named ``blocks`` for the checkpoint's key names
    (CodeFormer also taps the generator's blocks one by one)."""

    blocks: nn.ModuleList

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return x


class Encoder(BlockStack):
    def __init__(
        self,
        in_channels: int,
        nf: int,
        emb_dim: int,
        ch_mult: list[int],
        num_res_blocks: int,
        resolution: int,
        attn_resolutions: list[int],
    ) -> None:
        super().__init__()
        blocks: list[nn.Module] = [nn.Conv2d(in_channels, nf, 3, padding=1)]
        res = resolution
        widths = [1, *ch_mult]
        ch = nf
        for level, mult in enumerate(ch_mult):
            ch = nf * widths[level]
            for _ in range(num_res_blocks):
                blocks.append(ResBlock(ch, nf * mult))
                ch = nf * mult
                if res in attn_resolutions:
                    blocks.append(AttnBlock(ch))
            if level != len(ch_mult) - 1:
                blocks.append(Downsample(ch))
                res //= 2
        blocks += [ResBlock(ch, ch), AttnBlock(ch), ResBlock(ch, ch), group_norm(ch)]
        blocks.append(nn.Conv2d(ch, emb_dim, 3, padding=1))
        self.blocks = nn.ModuleList(blocks)


class Generator(BlockStack):
    def __init__(
        self,
        nf: int,
        emb_dim: int,
        ch_mult: list[int],
        num_res_blocks: int,
        resolution: int,
        attn_resolutions: list[int],
    ) -> None:
        super().__init__()
        ch = nf * ch_mult[-1]
        res = resolution // 2 ** (len(ch_mult) - 1)
        blocks: list[nn.Module] = [nn.Conv2d(emb_dim, ch, 3, padding=1)]
        blocks += [ResBlock(ch, ch), AttnBlock(ch), ResBlock(ch, ch)]
        for level in reversed(range(len(ch_mult))):
            for _ in range(num_res_blocks):
                blocks.append(ResBlock(ch, nf * ch_mult[level]))
                ch = nf * ch_mult[level]
                if res in attn_resolutions:
                    blocks.append(AttnBlock(ch))
            if level != 0:
                blocks.append(Upsample(ch))
                res *= 2
        blocks += [group_norm(ch), nn.Conv2d(ch, 3, 3, padding=1)]
        self.blocks = nn.ModuleList(blocks)


class VQAutoEncoder(nn.Module):
    """Encoder, nearest-neighbour codebook, generator (upstream quantizer='nearest')."""

    def __init__(
        self,
        img_size: int,
        nf: int,
        ch_mult: list[int],
        res_blocks: int = 2,
        attn_resolutions: tuple[int, ...] = (16,),
        codebook_size: int = 1024,
        emb_dim: int = 256,
    ) -> None:
        super().__init__()
        attn = list(attn_resolutions)
        self.encoder = Encoder(3, nf, emb_dim, ch_mult, res_blocks, img_size, attn)
        self.quantize = VectorQuantizer(codebook_size, emb_dim)
        self.generator = Generator(nf, emb_dim, ch_mult, res_blocks, img_size, attn)
