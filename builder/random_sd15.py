"""A seeded random-weight Stable Diffusion 1.5 as a diffusers folder, for --random-weights runs.

Train and sample need a base model; with --random-weights and no --base-model they get
this one, so the whole chain runs with nothing downloaded. The sizes are SD 1.5's own
(``SD15``): sd-scripts turns a diffusers UNet into its original layout with SD 1.5's fixed
block sizes, so a smaller UNet would not load there. The folder is what the SD 1.5 hub repo
holds (model_index.json, unet/, vae/, text_encoder/, tokenizer/, scheduler/), in fp16
(about 2.1 GB), the text encoder under transformers 4's ``text_model.`` key prefix as the
real repo has it. It is written in a temporary folder and renamed into place, so a
half-written model is never taken for one.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from builder import weights as W
from builder.console import console
from builder.io import atomic_folder


@dataclass(frozen=True)
class RandomSDSizes:
    """The architecture sizes; the defaults are SD 1.5's (stable-diffusion-v1-5 configs)."""

    block_out_channels: tuple[int, ...] = (320, 640, 1280, 1280)
    layers_per_block: int = 2
    attention_head_dim: int = 8
    cross_attention_dim: int = 768  # = the text encoder's hidden size
    sample_size: int = 64
    text_hidden: int = 768  # CLIP ViT-L/14 text tower
    text_intermediate: int = 3072
    text_layers: int = 12
    text_heads: int = 12
    vae_channels: tuple[int, ...] = (128, 256, 512, 512)
    vae_layers_per_block: int = 2
    norm_num_groups: int = 32


SD15 = RandomSDSizes()
DTYPE = torch.float16  # as the fp16 SD 1.5 checkpoints; halves the 4.3 GB of fp32
FOLDER = "random-sd15-seed{seed}"

MODEL_INDEX = {
    "_class_name": "StableDiffusionPipeline",
    "_diffusers_version": "0.6.0",
    "feature_extractor": [None, None],
    "requires_safety_checker": False,
    "safety_checker": [None, None],
    "scheduler": ["diffusers", "PNDMScheduler"],
    "text_encoder": ["transformers", "CLIPTextModel"],
    "tokenizer": ["transformers", "CLIPTokenizer"],
    "unet": ["diffusers", "UNet2DConditionModel"],
    "vae": ["diffusers", "AutoencoderKL"],
}
# stable-diffusion-v1-5 scheduler/scheduler_config.json
SCHEDULER = {
    "_class_name": "PNDMScheduler",
    "_diffusers_version": "0.6.0",
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "beta_start": 0.00085,
    "num_train_timesteps": 1000,
    "set_alpha_to_one": False,
    "skip_prk_steps": True,
    "steps_offset": 1,
    "trained_betas": None,
    "clip_sample": False,
}


def random_sd15_folder(weights_dir: str = "", seed: int = 0) -> Path:
    return W.cache_dir(weights_dir) / "sd" / FOLDER.format(seed=seed)


def _fill(model: torch.nn.Module, gen: torch.Generator) -> None:
    """Seeded values that keep activations in range: N(0, 1/fan_in) weights, unit norms, zero biases."""
    for name, p in model.named_parameters():
        if p.ndim >= 2:
            fan_in = p[0].numel()
            std = 0.02 if "embedding" in name else fan_in**-0.5
            p.data.copy_(torch.randn(p.shape, generator=gen) * std)
        elif name.endswith("weight"):
            p.data.fill_(1.0)
        else:
            p.data.zero_()


def _empty(build):  # type: ignore[no-untyped-def]
    """Build a model straight in fp16 without first allocating it in fp32 (the UNet is 3.4 GB fp32)."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(DTYPE)
    try:
        with torch.device("meta"):
            model = build()
    finally:
        torch.set_default_dtype(previous)
    return model.to_empty(device="cpu")


def _unet(s: RandomSDSizes):  # type: ignore[no-untyped-def]
    from diffusers import UNet2DConditionModel

    n = len(s.block_out_channels)
    return UNet2DConditionModel(
        sample_size=s.sample_size, in_channels=4, out_channels=4, layers_per_block=s.layers_per_block,
        block_out_channels=s.block_out_channels,
        down_block_types=("CrossAttnDownBlock2D",) * (n - 1) + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * (n - 1),
        cross_attention_dim=s.cross_attention_dim, attention_head_dim=s.attention_head_dim,
        norm_num_groups=s.norm_num_groups,
    )


def _vae(s: RandomSDSizes):  # type: ignore[no-untyped-def]
    from diffusers import AutoencoderKL

    n = len(s.vae_channels)
    return AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, block_out_channels=s.vae_channels,
        down_block_types=("DownEncoderBlock2D",) * n, up_block_types=("UpDecoderBlock2D",) * n,
        layers_per_block=s.vae_layers_per_block, norm_num_groups=s.norm_num_groups, sample_size=512,
    )


def _text_config(s: RandomSDSizes) -> dict:
    """config.json as the SD 1.5 repo's text_encoder/ has it (read by transformers 4 and 5)."""
    return {
        "architectures": ["CLIPTextModel"], "model_type": "clip_text_model", "hidden_act": "quick_gelu",
        "hidden_size": s.text_hidden, "intermediate_size": s.text_intermediate,
        "num_hidden_layers": s.text_layers, "num_attention_heads": s.text_heads,
        "max_position_embeddings": 77, "vocab_size": 49408, "projection_dim": s.text_hidden,
        "layer_norm_eps": 1e-5, "attention_dropout": 0.0, "dropout": 0.0, "initializer_factor": 1.0,
        "initializer_range": 0.02, "bos_token_id": 0, "eos_token_id": 2, "pad_token_id": 1,
        "torch_dtype": "float16",
    }


def _text_encoder(s: RandomSDSizes):  # type: ignore[no-untyped-def]
    from transformers import CLIPTextConfig, CLIPTextModel

    cfg = {k: v for k, v in _text_config(s).items() if k not in ("architectures", "model_type", "torch_dtype")}
    return CLIPTextModel(CLIPTextConfig(**cfg))


def _save_text_encoder(model: torch.nn.Module, s: RandomSDSizes, folder: Path) -> None:
    from safetensors.torch import save_file

    folder.mkdir(parents=True)
    sd = model.state_dict()
    # transformers 5 dropped CLIPTextModel's text_model level; the hub's files (and
    # sd-scripts' transformers 4) keep it, and transformers 5 still reads that layout.
    prefix = "" if next(iter(sd)).startswith("text_model.") else "text_model."
    save_file({prefix + k: v.contiguous() for k, v in sd.items()}, str(folder / "model.safetensors"),
              metadata={"format": "pt"})
    (folder / "config.json").write_text(json.dumps(_text_config(s), indent=2), encoding="utf-8")


def write_random_sd15(folder: Path, bpe: Path, seed: int = 0, sizes: RandomSDSizes | None = None) -> Path:
    """Write the random model as a diffusers folder at ``folder`` (which must not exist).

    ``bpe`` is CLIP's BPE file, from which the tokenizer is built offline.
    """
    from builder.caption.clip_tokenizer import write_clip_tokenizer

    folder, sizes = Path(folder), sizes or SD15
    gen = torch.Generator().manual_seed(seed)
    folder.mkdir(parents=True)
    for sub, build in (("unet", _unet), ("vae", _vae)):
        model = _empty(lambda b=build: b(sizes))
        _fill(model, gen)
        model.save_pretrained(folder / sub, safe_serialization=True)
        del model
    text = _empty(lambda: _text_encoder(sizes))
    _fill(text, gen)
    _save_text_encoder(text, sizes, folder / "text_encoder")
    del text
    write_clip_tokenizer(folder / "tokenizer", bpe)
    (folder / "scheduler").mkdir()
    (folder / "scheduler" / "scheduler_config.json").write_text(json.dumps(SCHEDULER, indent=2), encoding="utf-8")
    # Last: a folder with model_index.json is a complete one.
    (folder / "model_index.json").write_text(json.dumps(MODEL_INDEX, indent=2), encoding="utf-8")
    return folder


def ensure_random_sd15(weights_dir: str = "", seed: int = 0, sizes: RandomSDSizes | None = None) -> Path:
    """The cached random SD 1.5 folder for ``seed``, generated (once) if absent."""
    from builder.caption.clip_tokenizer import bpe_file

    folder = random_sd15_folder(weights_dir, seed)
    if (folder / "model_index.json").is_file():
        return folder
    bpe = bpe_file(weights_dir)
    console.print(f"generating a random-weight SD 1.5 (seed {seed}) into {folder}; once, about 2 GB")
    # a folder without model_index.json is an unfinished one: atomic_folder replaces it
    with atomic_folder(folder, "random SD 1.5") as tmp:
        write_random_sd15(tmp, bpe, seed, sizes)
    return folder
