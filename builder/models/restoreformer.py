"""RestoreFormer++ and RestoreFormer face restoration networks.

Written after wzhouxiff/RestoreFormerPlusPlus ``RestoreFormer/modules/vqvae/vqvae_arch.py``
(``VQVAEGANMultiHeadTransformer``). Module names follow upstream so the official weights load
with a strict state-dict load: ``encoder.{conv_in,down.L.block.N,down.L.attn.N,down.L.downsample,
mid.*,norm_out,conv_out}``, ``quant_conv``, ``quantize.embedding``, ``post_quant_conv`` and
``decoder.{conv_in,mid.*,up.L.block.N,up.L.attn.N,up.L.upsample,norm_out,conv_out}``.

RestoreFormer++ is ``head_size=4, ex_multi_scale_num=1`` (decoder cross-attention at 16 and 32 px);
RestoreFormer is ``head_size=8, ex_multi_scale_num=0`` (16 px only). GFPGAN's
``gfpgan/archs/restoreformer_arch.py`` ``RestoreFormer`` is the second configuration with the same
key layout, so this one class loads both ``RestoreFormer++.ckpt`` and GFPGAN's ``RestoreFormer.pth``.

Inference (RestoreFormer.py): RGB in [-1, 1] at 512, ``net(x)[0]``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from builder.models.vqgan import Downsample, Upsample, group_norm


class ResnetBlock(nn.Module):
    """Pre-activation residual block; a 1x1 ``nin_shortcut`` when the widths differ (no time embedding)."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.norm1 = group_norm(in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.norm2 = group_norm(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.nin_shortcut = (
            nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else None
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        return (x if self.nin_shortcut is None else self.nin_shortcut(x)) + h


class MultiHeadAttnBlock(nn.Module):
    """Multi-head attention over the feature map, with a residual.

    Alone it is self-attention. In the decoder, ``y`` is the encoder's (degraded) feature: it gives
    the queries (through ``norm2``) and the decoder's own feature gives keys and values, which is
    RestoreFormer's "corrupted queries, high-quality key-value pairs". Heads are contiguous channel
    groups, as upstream's reshape to (B, heads, C/heads, HW).
    """

    def __init__(self, channels: int, head_size: int) -> None:
        super().__init__()
        if channels % head_size:
            raise ValueError(f"{channels} channels do not split into {head_size} heads")
        self.head_size = head_size
        self.norm1 = group_norm(channels)
        self.norm2 = group_norm(channels)  # upstream builds it in every block; only cross-attention uses it
        self.q = nn.Conv2d(channels, channels, 1)
        self.k = nn.Conv2d(channels, channels, 1)
        self.v = nn.Conv2d(channels, channels, 1)
        self.proj_out = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        b, c, h, w = x.shape
        h_ = self.norm1(x)
        y = h_ if y is None else self.norm2(y)

        def heads(t: torch.Tensor) -> torch.Tensor:
            # (B, C, H, W) -> (B, heads, HW, C/heads), in float32: in fp16 the q.k logits of
            # 1024 tokens can overflow and the softmax saturate
            return t.reshape(b, self.head_size, c // self.head_size, h * w).transpose(2, 3).float()

        # scaled_dot_product_attention scales by (C/heads)**-0.5 like upstream
        out = F.scaled_dot_product_attention(heads(self.q(y)), heads(self.k(h_)), heads(self.v(h_)))
        out = out.to(x.dtype).transpose(2, 3).reshape(b, c, h, w)
        return x + self.proj_out(out)


class Mid(nn.Module):
    def __init__(self, channels: int, head_size: int) -> None:
        super().__init__()
        self.block_1 = ResnetBlock(channels, channels)
        self.attn_1 = MultiHeadAttnBlock(channels, head_size)
        self.block_2 = ResnetBlock(channels, channels)


class Level(nn.Module):
    """One resolution of the encoder or decoder: res blocks, each followed by attention where
    the level has any (``attn`` is empty elsewhere), then the down- or upsampling conv."""

    def __init__(self, blocks: list[ResnetBlock], attn: list[MultiHeadAttnBlock]) -> None:
        super().__init__()
        self.block = nn.ModuleList(blocks)
        self.attn = nn.ModuleList(attn)


class MultiHeadEncoder(nn.Module):
    def __init__(
        self,
        ch: int,
        ch_mult: tuple[int, ...],
        num_res_blocks: int,
        attn_resolutions: tuple[int, ...],
        in_channels: int,
        resolution: int,
        z_channels: int,
        head_size: int,
    ) -> None:
        super().__init__()
        self.conv_in = nn.Conv2d(in_channels, ch, 3, padding=1)
        self.down = nn.ModuleList()
        res = resolution
        block_in = ch
        for level, mult in enumerate(ch_mult):
            blocks, attn = [], []
            for _ in range(num_res_blocks):
                blocks.append(ResnetBlock(block_in, ch * mult))
                block_in = ch * mult
                if res in attn_resolutions:
                    attn.append(MultiHeadAttnBlock(block_in, head_size))
            down = Level(blocks, attn)
            if level != len(ch_mult) - 1:
                down.downsample = Downsample(block_in)
                res //= 2
            self.down.append(down)
        self.mid = Mid(block_in, head_size)
        self.norm_out = group_norm(block_in)
        self.conv_out = nn.Conv2d(block_in, z_channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """The latent under ``out`` plus the features the decoder queries with, under upstream's names:
        ``block_L`` before level L's downsampling, ``block_<last>_atten`` after the middle's first
        res block, ``mid_atten`` after the middle."""
        hs: dict[str, torch.Tensor] = {}
        h = self.conv_in(x)
        last = len(self.down) - 1
        for level, down in enumerate(self.down):
            for i, block in enumerate(down.block):
                h = block(h)
                if len(down.attn):
                    h = down.attn[i](h)
            if level != last:
                hs[f"block_{level}"] = h
                h = down.downsample(h)
        h = self.mid.block_1(h)
        hs[f"block_{last}_atten"] = h
        h = self.mid.block_2(self.mid.attn_1(h))
        hs["mid_atten"] = h
        hs["out"] = self.conv_out(F.silu(self.norm_out(h)))
        return hs


class MultiHeadDecoderTransformer(nn.Module):
    def __init__(
        self,
        ch: int,
        out_ch: int,
        ch_mult: tuple[int, ...],
        num_res_blocks: int,
        attn_resolutions: tuple[int, ...],
        resolution: int,
        z_channels: int,
        head_size: int,
    ) -> None:
        super().__init__()
        block_in = ch * ch_mult[-1]
        res = resolution // 2 ** (len(ch_mult) - 1)
        self.conv_in = nn.Conv2d(z_channels, block_in, 3, padding=1)
        self.mid = Mid(block_in, head_size)
        up_levels: list[Level] = []
        for level in reversed(range(len(ch_mult))):
            blocks, attn = [], []
            for _ in range(num_res_blocks + 1):
                blocks.append(ResnetBlock(block_in, ch * ch_mult[level]))
                block_in = ch * ch_mult[level]
                if res in attn_resolutions:
                    attn.append(MultiHeadAttnBlock(block_in, head_size))
            up = Level(blocks, attn)
            if level != 0:
                up.upsample = Upsample(block_in)
                res *= 2
            up_levels.insert(0, up)  # indexed by level, as upstream
        self.up = nn.ModuleList(up_levels)
        self.norm_out = group_norm(block_in)
        self.conv_out = nn.Conv2d(block_in, out_ch, 3, padding=1)

    def forward(self, z: torch.Tensor, hs: dict[str, torch.Tensor]) -> torch.Tensor:
        h = self.conv_in(z)
        h = self.mid.block_1(h)
        h = self.mid.attn_1(h, hs["mid_atten"])
        h = self.mid.block_2(h)
        for level in reversed(range(len(self.up))):
            up = self.up[level]
            # the lowest level queries with the middle's feature, the others with their level's
            query = hs.get(f"block_{level}_atten", hs.get(f"block_{level}"))
            for i, block in enumerate(up.block):
                h = block(h)
                if len(up.attn):
                    h = up.attn[i](h, query)
            if level != 0:
                h = up.upsample(h)
        return self.conv_out(F.silu(self.norm_out(h)))


class VectorQuantizer(nn.Module):
    """Nearest-codebook-entry quantisation (upstream ``VectorQuantizer``, inference part)."""

    def __init__(self, n_e: int, e_dim: int) -> None:
        super().__init__()
        self.embedding = nn.Embedding(n_e, e_dim)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> the same with each C-vector replaced by its nearest codebook entry.

        Distances are taken in float32 whatever the net's dtype: |z|^2 over 256 channels can
        overflow fp16, and a near-tie between codes should not be decided by fp16 rounding.
        Upstream returns ``z + (z_q - z)`` (the straight-through estimator), which is ``z_q`` up
        to float rounding; the exact row gather is returned here.
        """
        b, c, h, w = z.shape
        flat = z.permute(0, 2, 3, 1).reshape(-1, c).float()
        codes = self.embedding.weight.float()
        # the same expression and order as upstream, so float32 picks the same index
        d = (
            torch.sum(flat**2, dim=1, keepdim=True)
            + torch.sum(codes**2, dim=1)
            - 2 * torch.matmul(flat, codes.t())
        )
        z_q = self.embedding.weight[d.argmin(dim=1)]
        return z_q.view(b, h, w, c).permute(0, 3, 1, 2).contiguous().to(z.dtype)


class VQVAEGANMultiHeadTransformer(nn.Module):
    """Upstream's defaults are RestoreFormer++'s; ``head_size=8, ex_multi_scale_num=0`` is RestoreFormer."""

    def __init__(
        self,
        n_embed: int = 1024,
        embed_dim: int = 256,
        ch: int = 64,
        out_ch: int = 3,
        ch_mult: tuple[int, ...] = (1, 2, 2, 4, 4, 8),
        num_res_blocks: int = 2,
        attn_resolutions: tuple[int, ...] = (16,),
        in_channels: int = 3,
        resolution: int = 512,
        z_channels: int = 256,
        head_size: int = 4,
        ex_multi_scale_num: int = 1,
    ) -> None:
        super().__init__()
        self.encoder = MultiHeadEncoder(
            ch, ch_mult, num_res_blocks, attn_resolutions, in_channels, resolution, z_channels, head_size
        )
        # each extra scale adds cross-attention at twice the previous last resolution (upstream's rule)
        decoder_attn = tuple(attn_resolutions)
        for _ in range(ex_multi_scale_num):
            decoder_attn = (decoder_attn[0], decoder_attn[-1] * 2)
        self.decoder = MultiHeadDecoderTransformer(
            ch, out_ch, ch_mult, num_res_blocks, decoder_attn, resolution, z_channels, head_size
        )
        self.quantize = VectorQuantizer(n_embed, embed_dim)
        self.quant_conv = nn.Conv2d(z_channels, embed_dim, 1)
        self.post_quant_conv = nn.Conv2d(embed_dim, z_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, 512, 512) RGB in [-1, 1] -> restored image (upstream's output ``[0]``)."""
        hs = self.encoder(x)
        quant = self.quantize(self.quant_conv(hs["out"]))
        return self.decoder(self.post_quant_conv(quant), hs)
