"""PhotoMaker V2's ID encoder and its checkpoint, ``photomaker-v2.bin`` (TencentARC/PhotoMaker-V2).

The encoder is TencentARC's ``PhotoMakerIDEncoder_CLIPInsightfaceExtendtoken`` rebuilt with
the same module names, so the official state dict loads strictly: a CLIP ViT-L/14 vision
tower (transformers' CLIPVisionModelWithProjection, subclassed as upstream does),
``visual_projection_2``, ``qformer_perceiver`` (an MLP lifting the 512-d buffalo_l ArcFace
embedding to two 2048-d tokens, refined by a FacePerceiverResampler over the CLIP patch
tokens) and ``fuse_module``, which fuses each token into one copy of the class word's
prompt embedding.

The checkpoint holds exactly two top-level keys: ``id_encoder`` (this module's state
dict) and ``lora_weights`` (a LoRA for the SDXL UNet, applied through diffusers and peft).
A ``.safetensors`` copy stores the same tensors flat, under ``id_encoder.`` and
``lora_weights.`` prefixes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

from builder.errors import CheckpointError

TOP_LEVEL_KEYS = ("id_encoder", "lora_weights")
# A buffer older transformers saved with CLIP; newer ones rebuild it, so it is not a weight.
IGNORED_KEYS = ("vision_model.embeddings.position_ids",)

# model_v2.py VISION_CONFIG_DICT: ViT-L/14 at 224 px.
OFFICIAL_VISION = {
    "hidden_size": 1024,
    "intermediate_size": 4096,
    "num_attention_heads": 16,
    "num_hidden_layers": 24,
    "patch_size": 14,
    "projection_dim": 768,
}


@dataclass(frozen=True)
class IDEncoderConfig:
    """Sizes of the ID encoder; the defaults are PhotoMaker V2's (SDXL: 768 + 1280 = 2048)."""

    vision: dict[str, Any] = field(default_factory=lambda: dict(OFFICIAL_VISION))
    id_embeddings_dim: int = 512  # buffalo_l ArcFace (w600k_r50)
    cross_attention_dim: int = 2048  # the UNet's text-embedding width
    num_tokens: int = 2  # ID tokens per input photo, each fused into one class-word copy
    projection_2_dim: int = 1280  # visual_projection_2: in the checkpoint, unused by V2's forward
    perceiver_depth: int = 4
    perceiver_dim_head: int = 128
    ratio: int = 4  # token_proj hidden width = id_embeddings_dim * ratio


class MLP(nn.Module):
    def __init__(self, in_dim: int, out_dim: int, hidden_dim: int, use_residual: bool = True) -> None:
        super().__init__()
        if use_residual and in_dim != out_dim:
            raise ValueError("a residual MLP needs in_dim == out_dim")
        self.layernorm = nn.LayerNorm(in_dim)
        self.fc1 = nn.Linear(in_dim, hidden_dim)
        self.fc2 = nn.Linear(hidden_dim, out_dim)
        self.use_residual = use_residual
        self.act_fn = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.fc2(self.act_fn(self.fc1(self.layernorm(x))))
        return y + x if self.use_residual else y


def feed_forward(dim: int, mult: int = 4) -> nn.Sequential:
    """The resampler's FFN; a Sequential, so its keys are ``.0`` (norm), ``.1`` and ``.3``."""
    inner = int(dim * mult)
    return nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, inner, bias=False), nn.GELU(), nn.Linear(inner, dim, bias=False))


class PerceiverAttention(nn.Module):
    """Latents attend to the image features and to themselves (keys/values over both)."""

    def __init__(self, dim: int, dim_head: int, heads: int) -> None:
        super().__init__()
        self.dim_head = dim_head
        self.heads = heads
        inner = dim_head * heads
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.to_q = nn.Linear(dim, inner, bias=False)
        self.to_kv = nn.Linear(dim, inner * 2, bias=False)
        self.to_out = nn.Linear(inner, dim, bias=False)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        return x.view(b, n, self.heads, -1).transpose(1, 2)

    def forward(self, x: torch.Tensor, latents: torch.Tensor) -> torch.Tensor:
        x = self.norm1(x)
        latents = self.norm2(latents)
        b, n, _ = latents.shape
        q = self._heads(self.to_q(latents))
        k, v = (self._heads(t) for t in self.to_kv(torch.cat((x, latents), dim=-2)).chunk(2, dim=-1))
        # Both sides scaled by dim_head^-1/4 before the product, and the softmax in fp32:
        # upstream's choice for fp16 stability, kept so half-precision results match.
        scale = 1 / math.sqrt(math.sqrt(self.dim_head))
        weight = (q * scale) @ (k * scale).transpose(-2, -1)
        weight = torch.softmax(weight.float(), dim=-1).type(weight.dtype)
        out = (weight @ v).permute(0, 2, 1, 3).reshape(b, n, -1)
        return self.to_out(out)


class FacePerceiverResampler(nn.Module):
    def __init__(self, *, dim: int, depth: int, dim_head: int, heads: int, embedding_dim: int, output_dim: int, ff_mult: int = 4) -> None:
        super().__init__()
        self.proj_in = nn.Linear(embedding_dim, dim)
        self.proj_out = nn.Linear(dim, output_dim)
        self.norm_out = nn.LayerNorm(output_dim)
        self.layers = nn.ModuleList(
            nn.ModuleList([PerceiverAttention(dim=dim, dim_head=dim_head, heads=heads), feed_forward(dim, ff_mult)])
            for _ in range(depth)
        )

    def forward(self, latents: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        x = self.proj_in(x)
        for attn, ff in self.layers:
            latents = attn(x, latents) + latents
            latents = ff(latents) + latents
        return self.norm_out(self.proj_out(latents))


class QFormerPerceiver(nn.Module):
    """ArcFace embedding -> ``num_tokens`` ID tokens, refined against the CLIP patch tokens."""

    def __init__(self, id_embeddings_dim: int, cross_attention_dim: int, num_tokens: int, embedding_dim: int,
                 depth: int = 4, dim_head: int = 128, ratio: int = 4) -> None:
        super().__init__()
        self.num_tokens = num_tokens
        self.cross_attention_dim = cross_attention_dim
        self.token_proj = nn.Sequential(
            nn.Linear(id_embeddings_dim, id_embeddings_dim * ratio),
            nn.GELU(),
            nn.Linear(id_embeddings_dim * ratio, cross_attention_dim * num_tokens),
        )
        self.token_norm = nn.LayerNorm(cross_attention_dim)
        self.perceiver_resampler = FacePerceiverResampler(
            dim=cross_attention_dim,
            depth=depth,
            dim_head=dim_head,
            heads=cross_attention_dim // dim_head,
            embedding_dim=embedding_dim,
            output_dim=cross_attention_dim,
            ff_mult=4,
        )

    def forward(self, x: torch.Tensor, last_hidden_state: torch.Tensor) -> torch.Tensor:
        x = self.token_norm(self.token_proj(x).reshape(-1, self.num_tokens, self.cross_attention_dim))
        return x + self.perceiver_resampler(x, last_hidden_state)


class FuseModule(nn.Module):
    def __init__(self, embed_dim: int) -> None:
        super().__init__()
        self.mlp1 = MLP(embed_dim * 2, embed_dim, embed_dim, use_residual=False)
        self.mlp2 = MLP(embed_dim, embed_dim, embed_dim, use_residual=True)
        self.layer_norm = nn.LayerNorm(embed_dim)

    def fuse_fn(self, prompt_embeds: torch.Tensor, id_embeds: torch.Tensor) -> torch.Tensor:
        stacked = self.mlp1(torch.cat([prompt_embeds, id_embeds], dim=-1)) + prompt_embeds
        return self.layer_norm(self.mlp2(stacked))

    def forward(self, prompt_embeds: torch.Tensor, id_embeds: torch.Tensor, class_tokens_mask: torch.Tensor) -> torch.Tensor:
        """Replace the masked class-word embeddings by their fusion with the ID tokens, in order.

        prompt_embeds (b, seq, d); id_embeds (b, n, num_tokens, d); class_tokens_mask (b, seq),
        with as many True positions as ID tokens.
        """
        id_flat = id_embeds.to(prompt_embeds.dtype).reshape(-1, id_embeds.shape[-1])
        mask = class_tokens_mask.bool()
        if int(mask.sum()) != id_flat.shape[0]:
            raise ValueError(f"{int(mask.sum())} class-word positions for {id_flat.shape[0]} ID tokens")
        out = prompt_embeds.clone()
        out[mask] = self.fuse_fn(prompt_embeds[mask], id_flat).to(prompt_embeds.dtype)
        return out


class PhotoMakerIDEncoder(CLIPVisionModelWithProjection):
    """PhotoMaker V2's ID encoder (upstream: PhotoMakerIDEncoder_CLIPInsightfaceExtendtoken)."""

    def __init__(self, cfg: IDEncoderConfig | None = None) -> None:
        cfg = cfg or IDEncoderConfig()
        super().__init__(CLIPVisionConfig(**cfg.vision))
        hidden = self.config.hidden_size
        self.encoder_config = cfg
        self.fuse_module = FuseModule(cfg.cross_attention_dim)
        self.visual_projection_2 = nn.Linear(hidden, cfg.projection_2_dim, bias=False)
        self.num_tokens = cfg.num_tokens
        self.cross_attention_dim = cfg.cross_attention_dim
        self.qformer_perceiver = QFormerPerceiver(
            cfg.id_embeddings_dim, cfg.cross_attention_dim, cfg.num_tokens, embedding_dim=hidden,
            depth=cfg.perceiver_depth, dim_head=cfg.perceiver_dim_head, ratio=cfg.ratio,
        )

    def forward(  # type: ignore[override]
        self,
        id_pixel_values: torch.Tensor,
        prompt_embeds: torch.Tensor,
        class_tokens_mask: torch.Tensor,
        id_embeds: torch.Tensor,
    ) -> torch.Tensor:
        """id_pixel_values (b, n, 3, 224, 224); id_embeds (b, n, 512): prompt embeddings with the ID fused in."""
        b, n, c, h, w = id_pixel_values.shape
        last_hidden_state = self.vision_model(id_pixel_values.view(b * n, c, h, w))[0]
        tokens = self.qformer_perceiver(id_embeds.reshape(b * n, -1), last_hidden_state)
        return self.fuse_module(prompt_embeds, tokens.view(b, n, self.num_tokens, -1), class_tokens_mask)


# ---- the checkpoint -------------------------------------------------------------------------


def read_checkpoint(path: Path) -> dict[str, dict[str, torch.Tensor]]:
    """``{"id_encoder": ..., "lora_weights": ...}`` from a photomaker-v2 .bin or .safetensors file."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"PhotoMaker checkpoint {path} does not exist")
    try:
        if path.suffix.lower() == ".safetensors":
            from safetensors import safe_open

            state: dict[str, dict[str, torch.Tensor]] = {k: {} for k in TOP_LEVEL_KEYS}
            with safe_open(str(path), framework="pt", device="cpu") as fh:
                for key in fh.keys():  # noqa: SIM118 (safe_open is not iterable)
                    top, _, rest = key.partition(".")
                    if top not in state or not rest:
                        raise CheckpointError(f"{path}: key {key!r} is under neither id_encoder. nor lora_weights.")
                    state[top][rest] = fh.get_tensor(key)
            return state
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except CheckpointError:
        raise
    except Exception as exc:  # torch and safetensors raise many types for a corrupt file
        raise CheckpointError(f"{path}: cannot read as a PhotoMaker checkpoint ({exc})") from None
    return check_layout(obj, str(path))


def check_layout(obj: Any, origin: str) -> dict[str, dict[str, torch.Tensor]]:
    if not isinstance(obj, dict) or sorted(obj) != sorted(TOP_LEVEL_KEYS):
        got = sorted(obj) if isinstance(obj, dict) else type(obj).__name__
        raise CheckpointError(f"{origin}: top-level keys must be exactly id_encoder and lora_weights, got {got}")
    for key in TOP_LEVEL_KEYS:
        if not isinstance(obj[key], dict) or not obj[key]:
            raise CheckpointError(f"{origin}: {key} is not a non-empty state dict")
    return obj


def _shown(keys: list[str]) -> str:
    return ", ".join(keys[:5]) + (f" and {len(keys) - 5} more" if len(keys) > 5 else "")


def load_id_encoder(state: dict[str, torch.Tensor], origin: str, cfg: IDEncoderConfig | None = None) -> PhotoMakerIDEncoder:
    """The ID encoder with ``state`` loaded strictly; a missing, extra or misshapen key is named.

    The module is built on the meta device and takes the checkpoint's tensors as they are
    (``assign``): initialising 540M parameters only to overwrite them costs ~10 s and 2 GB.
    """
    with torch.device("meta"):
        model = PhotoMakerIDEncoder(cfg)
    state = {k: v for k, v in state.items() if k not in IGNORED_KEYS}
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    if missing or unexpected:
        parts = ([f"missing {len(missing)} key(s): {_shown(missing)}"] if missing else []) + (
            [f"unexpected {len(unexpected)} key(s): {_shown(unexpected)}"] if unexpected else []
        )
        raise CheckpointError(f"{origin}: id_encoder does not match PhotoMaker V2's ID encoder ({'; '.join(parts)})")
    wrong = [f"{k} {tuple(state[k].shape)} (model {tuple(v.shape)})" for k, v in expected.items() if state[k].shape != v.shape]
    if wrong:
        raise CheckpointError(f"{origin}: id_encoder has tensors of the wrong shape: {_shown(wrong)}")
    model.load_state_dict(state, strict=True, assign=True)
    embeddings = model.vision_model.embeddings
    # The one non-persistent buffer, never in a checkpoint: rebuilt as transformers builds it.
    embeddings.position_ids = torch.arange(embeddings.num_positions).expand((1, -1))
    return model.eval()


# ---- random weights in the official layout (plumbing checks and tests) ---------------------


def small_config(cross_attention_dim: int) -> IDEncoderConfig:
    """A ViT with the real structure but a few channels, for a UNet of this text width.

    Used with --random-weights when the base is not SDXL-sized, and by the tests: the key
    names are the official ones, only the sizes shrink.
    """
    dim_head = math.gcd(cross_attention_dim, 16)
    return IDEncoderConfig(
        vision={"hidden_size": 32, "intermediate_size": 37, "num_attention_heads": 4, "num_hidden_layers": 2,
                "patch_size": 14, "projection_dim": 16},
        cross_attention_dim=cross_attention_dim,
        projection_2_dim=24,
        perceiver_dim_head=dim_head,
    )


def config_for(cross_attention_dim: int) -> IDEncoderConfig:
    """The official sizes for an SDXL-width UNet, else the small ones (random weights only)."""
    official = IDEncoderConfig()
    return official if cross_attention_dim == official.cross_attention_dim else small_config(cross_attention_dim)


def unet_lora_keys(unet: nn.Module, rank: int) -> dict[str, tuple[int, ...]]:
    """PhotoMaker's lora_weights layout for ``unet``: diffusers' attention-processor LoRA names.

    ``unet.<attention processor>.to_{q,k,v,out}_lora.{down,up}.weight`` for every attention
    of the UNet (the layout PhotoMaker's files carry, which diffusers converts for peft).
    """
    shapes: dict[str, tuple[int, ...]] = {}
    for name, module in unet.named_modules():
        if not (hasattr(module, "to_q") and hasattr(module, "to_k") and hasattr(module, "to_out")):
            continue
        for proj, layer in (("to_q", module.to_q), ("to_k", module.to_k), ("to_v", module.to_v), ("to_out", module.to_out[0])):
            stem = f"unet.{name}.processor.{proj}_lora"
            shapes[f"{stem}.down.weight"] = (rank, layer.in_features)
            shapes[f"{stem}.up.weight"] = (layer.out_features, rank)
    return shapes


def random_checkpoint(unet: nn.Module, seed: int = 0, rank: int = 4, cfg: IDEncoderConfig | None = None) -> dict[str, dict[str, torch.Tensor]]:
    """A photomaker-v2 state dict with seeded random weights: ``id_encoder`` and ``lora_weights``."""
    cfg = cfg or config_for(int(unet.config.cross_attention_dim))
    torch.manual_seed(seed)
    encoder = PhotoMakerIDEncoder(cfg)
    gen = torch.Generator().manual_seed(seed + 1)
    lora = {}
    for key, shape in unet_lora_keys(unet, rank).items():
        # Small up weights: the LoRA path is exercised without swamping the base UNet.
        scale = shape[-1] ** -0.5 if key.endswith("down.weight") else 0.01
        lora[key] = torch.randn(shape, generator=gen) * scale
    return {"id_encoder": encoder.state_dict(), "lora_weights": lora}
