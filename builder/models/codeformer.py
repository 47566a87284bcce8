"""CodeFormer face restoration network (sczhou/CodeFormer basicsr/archs/codeformer_arch.py).

Written here because the architecture ships only inside CodeFormer's bundled basicsr.
Parameter names and shapes match the official ``codeformer.pth`` (release v0.1.0, weights
under ``params_ema``) so it loads with a strict state-dict load:
``position_emb`` (256, 512), ``feat_emb.*``, ``ft_layers.N.*`` (nn.MultiheadAttention
``self_attn.in_proj_weight`` ...), ``idx_pred_layer.{0,1}.*``, ``fuse_convs_dict.{32,64,128,256}.*``
plus the VQ autoencoder's ``encoder.*``, ``quantize.embedding.weight`` and ``generator.*``.

Inference (inference_codeformer.py): RGB in [-1, 1] at 512, ``net(x, w=w, adain=True)[0]``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from builder.models.vqgan import ResBlock, VQAutoEncoder

# Channels of the autoencoder's feature maps by side length (upstream CodeFormer.channels).
CHANNELS = {"16": 512, "32": 256, "64": 256, "128": 128, "256": 128, "512": 64}
# Index in encoder.blocks after which the feature of that size is tapped for fusion.
ENCODER_TAP = {"512": 2, "256": 5, "128": 8, "64": 11, "32": 14, "16": 18}
# Index in generator.blocks after which the encoder feature of that size is fused in.
GENERATOR_FUSE = {"16": 6, "32": 9, "64": 12, "128": 15, "256": 18, "512": 21}


def adaptive_instance_normalization(
    content: torch.Tensor, style: torch.Tensor, eps: float = 1e-5
) -> torch.Tensor:
    """Give ``content`` the per-channel mean and std of ``style`` (unbiased variance + eps, as upstream).

    Statistics are taken in float32: a 16x16x256 variance is where fp16 loses precision first.
    """
    c = content.float().flatten(2)
    s = style.float().flatten(2)
    c_mean, c_std = c.mean(2, keepdim=True), (c.var(2, keepdim=True) + eps).sqrt()
    s_mean, s_std = s.mean(2, keepdim=True), (s.var(2, keepdim=True) + eps).sqrt()
    out = (c - c_mean) / c_std * s_std + s_mean
    return out.view(content.shape).to(content.dtype)


class TransformerSALayer(nn.Module):
    """Pre-norm transformer layer: self-attention with the position embedding added to q and k, GELU MLP."""

    def __init__(self, embed_dim: int, nhead: int = 8, dim_mlp: int = 2048) -> None:
        super().__init__()
        self.self_attn = nn.MultiheadAttention(embed_dim, nhead, dropout=0.0)
        self.linear1 = nn.Linear(embed_dim, dim_mlp)
        self.linear2 = nn.Linear(dim_mlp, embed_dim)
        self.norm1 = nn.LayerNorm(embed_dim)
        self.norm2 = nn.LayerNorm(embed_dim)

    def forward(self, tgt: torch.Tensor, query_pos: torch.Tensor) -> torch.Tensor:
        """``tgt`` and ``query_pos`` are sequence-first (L, B, E), as upstream."""
        h = self.norm1(tgt)
        qk = h + query_pos
        tgt = tgt + self.self_attn(qk, qk, value=h, need_weights=False)[0]
        return tgt + self.linear2(F.gelu(self.linear1(self.norm2(tgt))))


class FuseSftBlock(nn.Module):
    """Controllable feature transform: decoder feature += w * (decoder * scale + shift) from the encoder."""

    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__()
        self.encode_enc = ResBlock(2 * in_ch, out_ch)
        self.scale = nn.Sequential(
            nn.Conv2d(in_ch, out_ch, 3, padding=1),
            nn.LeakyReLU(0.2, True),
            nn.Conv2d(out_ch, out_ch, 3, padding=1),
        )
        self.shift = nn.Sequential(
            nn.Conv2d(in_ch, out_ch, 3, padding=1),
            nn.LeakyReLU(0.2, True),
            nn.Conv2d(out_ch, out_ch, 3, padding=1),
        )

    def forward(self, enc_feat: torch.Tensor, dec_feat: torch.Tensor, w: float) -> torch.Tensor:
        enc_feat = self.encode_enc(torch.cat([enc_feat, dec_feat], dim=1))
        return dec_feat + w * (dec_feat * self.scale(enc_feat) + self.shift(enc_feat))


class CodeFormer(VQAutoEncoder):
    def __init__(
        self,
        dim_embd: int = 512,
        n_head: int = 8,
        n_layers: int = 9,
        codebook_size: int = 1024,
        latent_size: int = 256,
        connect_list: tuple[str, ...] | list[str] = ("32", "64", "128", "256"),
    ) -> None:
        super().__init__(512, 64, [1, 2, 2, 4, 4, 8], 2, (16,), codebook_size)
        self.connect_list = list(connect_list)
        self.position_emb = nn.Parameter(torch.zeros(latent_size, dim_embd))
        self.feat_emb = nn.Linear(256, dim_embd)
        self.ft_layers = nn.Sequential(
            *[TransformerSALayer(dim_embd, n_head, dim_mlp=dim_embd * 2) for _ in range(n_layers)]
        )
        self.idx_pred_layer = nn.Sequential(
            nn.LayerNorm(dim_embd), nn.Linear(dim_embd, codebook_size, bias=False)
        )
        self.fuse_convs_dict = nn.ModuleDict(
            {size: FuseSftBlock(CHANNELS[size], CHANNELS[size]) for size in self.connect_list}
        )

    def forward(
        self, x: torch.Tensor, w: float = 0.0, adain: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(B, 3, 512, 512) RGB in [-1, 1] -> (restored image, code logits (B, 256, 1024), encoder latent).

        ``w`` is the fidelity weight: 0 decodes the predicted codes alone, 1 fuses the most of the input.
        """
        taps = {ENCODER_TAP[size] for size in self.connect_list}
        enc_feats: dict[str, torch.Tensor] = {}
        for i, block in enumerate(self.encoder.blocks):
            x = block(x)
            if i in taps:
                enc_feats[str(x.shape[-1])] = x
        lq_feat = x
        b, _, h, wd = lq_feat.shape

        # (B, C, H, W) -> (HW, B, C) tokens for the sequence-first transformer
        query = self.feat_emb(lq_feat.flatten(2).permute(2, 0, 1))
        pos = self.position_emb.unsqueeze(1).expand(-1, b, -1)
        for layer in self.ft_layers:
            query = layer(query, query_pos=pos)
        # idx_pred_layer may be kept in float32 under a half-precision net (see builder.swap.restorers.codeformer):
        # a near-tie between two of 1024 codes should not be decided by fp16 rounding
        head_dtype = self.idx_pred_layer[1].weight.dtype
        logits = self.idx_pred_layer(query.to(head_dtype)).permute(1, 0, 2)

        # upstream takes topk(softmax(logits), 1): the same index as the argmax of the logits
        top_idx = logits.float().argmax(dim=2)
        quant_feat = self.quantize.get_codebook_feat(top_idx, (b, h, wd, self.quantize.emb_dim))
        quant_feat = quant_feat.to(lq_feat.dtype)
        if adain:
            quant_feat = adaptive_instance_normalization(quant_feat, lq_feat)

        fuse_at = {GENERATOR_FUSE[size] for size in self.connect_list}
        x = quant_feat
        for i, block in enumerate(self.generator.blocks):
            x = block(x)
            if i in fuse_at and w > 0:
                size = str(x.shape[-1])
                x = self.fuse_convs_dict[size](enc_feats[size], x, w)
        return x, logits, lq_feat
