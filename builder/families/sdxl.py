"""SDXL: sdxl_train_network.py, StableDiffusionXLPipeline, 1024 px.

Told from a single checkpoint by its second text encoder (OpenCLIP bigG,
``conditioner.embedders.1.*`` in Stability's SGM layout) and from a diffusers folder by
``text_encoder_2/`` or its pipeline class.

Late checks. sd-scripts checks these only after loading the models and caching latents
(``SdxlNetworkTrainer.assert_extra_args`` and ``sdxl_train_util.verify_sdxl_training_args``),
minutes into a run, with a bare assertion. The same rules, with the reason and the fix:

- ``v2`` is not an SDXL flag;
- ``cache_text_encoder_outputs`` (implied by ``cache_text_encoder_outputs_to_disk``) stores one
  encoding per caption, so the text encoders cannot be trained (``network_train_unet_only``
  is required) and no subset may change its caption from step to step (``shuffle_caption``,
  ``caption_dropout_rate``, ``token_warmup_step``, ``caption_tag_dropout_rate``);
- every dataset's ``bucket_reso_steps`` is a multiple of 32.

LoRA names. sd-scripts trains SD 1.5 on a UNet with diffusers' module names, but SDXL on its
own copy of Stability's SGM UNet (library/sdxl_original_unet.py), so an SDXL LoRA from
sdxl_train_network.py names the UNet's modules ``input_blocks.4.1.transformer_blocks.0...``
where diffusers has ``down_blocks.1.attentions.0.transformer_blocks.0...``. diffusers'
``load_lora_weights`` maps them back (``_maybe_map_sgm_blocks_to_diffusers``); this is the
same correspondence the other way, for checking a LoRA before it is applied.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from builder import weights as W
from builder.caption.clip_tokenizer import BIGG_CACHE_NAME, CLIP_CACHE_NAME
from builder.config import Config
from builder.errors import ConfigError
from builder.families import random_init as R
from builder.families.common import (
    COMPLETE,
    SampleDefaults,
    cached,
    check_bucket_steps,
    check_cached_captions,
    diffusers_loader,
    kohya_module_names,
    pipeline_class,
)

NAME = "sdxl"
TITLE = "SDXL"
TOLD_BY = "it has SDXL's second text encoder"
RESOLUTION = 1024  # sd-scripts' docs: SDXL trains at 1024x1024
BUCKET_STEP = 32  # train_dataset_group.verify_bucket_reso_steps(32)
SCRIPT = "sdxl_train_network.py"
SCHEMA_SECTIONS = ("train_network_arguments", "sdxl_train_network_arguments")
TOKENIZERS = (CLIP_CACHE_NAME, BIGG_CACHE_NAME)
SENTENCE_CAPTIONS = False  # CLIP reads tag lists: captions may be shuffled (kohya.shuffle_caption)
PRESET = "character_sdxl"
# The GUI's sdxl checkbox makes it run sdxl_train_network.py; the SDXL-only arguments have SDXL fields.
GUI_FIELDS: dict[str, Any] = {"sdxl": True}
GUI_RENAMES = {
    "cache_text_encoder_outputs": "sdxl_cache_text_encoder_outputs",
    "no_half_vae": "sdxl_no_half_vae",
}
BASE_FILES = "one .safetensors/.ckpt checkpoint (e.g. sd_xl_base_1.0.safetensors) or a diffusers folder"
PIPELINE = "StableDiffusionXLPipeline"
PIPELINE_KWARGS: dict[str, Any] = {}  # SDXL pipelines have no safety checker
CONFIG_REPO = "stabilityai/stable-diffusion-xl-base-1.0"
CONFIG_FOLDERS = ("unet", "vae", "text_encoder", "tokenizer", "scheduler", "text_encoder_2", "tokenizer_2")
LORA_TEXT_PREFIXES = ("lora_te1_", "lora_te2_")
LORA_TRAINED_FOR = "SDXL"
SAMPLE = SampleDefaults(steps=25, guidance=7.0, sampler="ddim")  # as SD 1.5 (sd-scripts' sample default)
load_pipeline = diffusers_loader(PIPELINE, PIPELINE_KWARGS)

KEY_PREFIX = "conditioner.embedders.1."  # OpenCLIP bigG, SDXL's second text encoder


def owns_keys(keys: list[str]) -> bool:
    return any(k.startswith(KEY_PREFIX) for k in keys)


def owns_folder(path: Path) -> bool:
    return (path / "text_encoder_2").is_dir() or "XL" in (pipeline_class(path) or "")


def derived_train_args(cfg: Config) -> dict[str, Any]:
    if cfg.kohya.mixed_precision == "fp16":
        # SDXL's VAE overflows in fp16 (NaN latents); sd-scripts' docs pair fp16 with no_half_vae.
        return {"no_half_vae": True}
    return {}


# ---- sd-scripts' late checks ------------------------------------------------------------------

def check_train_args(train: dict[str, Any], dataset_doc: dict[str, Any], origin: str) -> None:
    if train.get("v2"):
        raise ConfigError(f"{origin}: v2 = true is an SD 2.x flag; {SCRIPT} refuses it")
    check_bucket_steps(train, dataset_doc, origin, TITLE, BUCKET_STEP, SCRIPT)
    check_cached_captions(train, dataset_doc, origin, SCRIPT)


# ---- sd-scripts' LoRA names on diffusers' SDXL UNet --------------------------------------------
RESNET = {
    "norm1": "in_layers.0",
    "conv1": "in_layers.2",
    "norm2": "out_layers.0",
    "conv2": "out_layers.3",
    "time_emb_proj": "emb_layers.1",
    "conv_shortcut": "skip_connection",
}
TOP = {
    "conv_in": "input_blocks.0.0",
    "conv_out": "out.2",
    "time_embedding.linear_1": "time_embed.0",
    "time_embedding.linear_2": "time_embed.2",
    "add_embedding.linear_1": "label_emb.0.0",
    "add_embedding.linear_2": "label_emb.0.2",
}


def _resnet(rest: list[str]) -> str:
    return ".".join([RESNET.get(rest[0], rest[0]), *rest[1:]])


def _inner(kind: str, rest: list[str]) -> str:
    """A resnet's (slot 0) or a transformer's (slot 1) module path inside an SGM block."""
    return f"0.{_resnet(rest)}" if kind == "resnets" else ".".join(["1", *rest])


def sgm_unet_path(path: str, layers_per_block: int, up_has_attention: list[bool]) -> str | None:
    """``path`` (a diffusers UNet module path) in SGM names; None for modules SGM has no name for."""
    if path in TOP:
        return TOP[path]
    part = path.split(".")
    slot = layers_per_block + 1  # SGM numbers resnet/attention pairs and samplers in one run
    try:
        if part[0] == "mid_block":  # SGM: [resnet, transformer, resnet]
            if part[1] == "resnets":
                return f"middle_block.{2 * int(part[2])}.{_resnet(part[3:])}"
            return f"middle_block.1.{'.'.join(part[3:])}"
        block, kind = int(part[1]), part[2]
        if part[0] == "down_blocks":
            if kind == "downsamplers":
                return f"input_blocks.{(block + 1) * slot}.0.op"
            return f"input_blocks.{1 + block * slot + int(part[3])}.{_inner(kind, part[4:])}"
        if part[0] == "up_blocks":
            if kind == "upsamplers":
                return f"output_blocks.{block * slot + layers_per_block}.{2 if up_has_attention[block] else 1}.conv"
            return f"output_blocks.{block * slot + int(part[3])}.{_inner(kind, part[4:])}"
    except (IndexError, KeyError, ValueError):
        return None
    return None


def sample_defaults(base_model: str | Path | None) -> SampleDefaults:
    return SAMPLE


def lora_targets(pipe: Any) -> dict[str, Any]:
    """``lora_te1_`` (CLIP-L) and ``lora_te2_`` (bigG) + the CLIP paths (networks/lora.py); the UNet's
    modules answer to their diffusers path and to the SGM path sd-scripts' SDXL LoRAs carry."""
    per_block = pipe.unet.config.layers_per_block
    up_has_attention = ["CrossAttn" in t for t in pipe.unet.config.up_block_types]
    # SGM numbering needs one resnet count for all blocks.
    alias = (lambda name: sgm_unet_path(name, per_block, up_has_attention)) if isinstance(per_block, int) else None
    return {
        **kohya_module_names("lora_unet_", pipe.unet, alias),
        **kohya_module_names("lora_te1_", pipe.text_encoder),
        **kohya_module_names("lora_te2_", pipe.text_encoder_2),
    }


# ---- the random base (--random-weights) -----------------------------------------------------
# SDXL base 1.0's own sizes (``SDXL``) in the layout of its hub repo (model_index.json, unet/,
# vae/, text_encoder/, text_encoder_2/, tokenizer/, tokenizer_2/, scheduler/), fp16, about
# 6.9 GB. Nothing is reduced: sdxl_train_network.py converts a diffusers UNet into its own
# SdxlUNet2DConditionModel, whose sizes are fixed, and that UNet's context (2048 = 768 + 1280)
# and pooled-text input (1280) fix both text encoders' widths.


@dataclass(frozen=True)
class RandomSDXLSizes:
    """The architecture sizes; the defaults are SDXL base 1.0's (its repo's config.json files)."""

    block_out_channels: tuple[int, ...] = (320, 640, 1280)
    layers_per_block: int = 2
    transformer_layers_per_block: tuple[int, ...] = (1, 2, 10)
    attention_head_dim: tuple[int, ...] = (5, 10, 20)
    addition_time_embed_dim: int = 256
    sample_size: int = 128
    text_hidden: int = 768  # CLIP ViT-L/14 text tower
    text_intermediate: int = 3072
    text_layers: int = 12
    text_heads: int = 12
    text2_hidden: int = 1280  # OpenCLIP ViT-bigG/14 text tower
    text2_intermediate: int = 5120
    text2_layers: int = 32
    text2_heads: int = 20
    text2_projection: int = 1280  # the pooled embedding the UNet's text-time embedding reads
    vae_channels: tuple[int, ...] = (128, 256, 512, 512)
    vae_layers_per_block: int = 2
    norm_num_groups: int = 32


SDXL = RandomSDXLSizes()
FOLDER = "random-sdxl-seed{seed}"
TIME_IDS = 6  # original size, crop offset, target size: two numbers each

MODEL_INDEX = {
    "_class_name": "StableDiffusionXLPipeline",
    "_diffusers_version": "0.19.0.dev0",
    "force_zeros_for_empty_prompt": True,
    "scheduler": ["diffusers", "EulerDiscreteScheduler"],
    "text_encoder": ["transformers", "CLIPTextModel"],
    "text_encoder_2": ["transformers", "CLIPTextModelWithProjection"],
    "tokenizer": ["transformers", "CLIPTokenizer"],
    "tokenizer_2": ["transformers", "CLIPTokenizer"],
    "unet": ["diffusers", "UNet2DConditionModel"],
    "vae": ["diffusers", "AutoencoderKL"],
}
# stable-diffusion-xl-base-1.0 scheduler/scheduler_config.json
SCHEDULER = {
    "_class_name": "EulerDiscreteScheduler",
    "_diffusers_version": "0.19.0.dev0",
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "beta_start": 0.00085,
    "clip_sample": False,
    "interpolation_type": "linear",
    "num_train_timesteps": 1000,
    "prediction_type": "epsilon",
    "sample_max_value": 1.0,
    "set_alpha_to_one": False,
    "skip_prk_steps": True,
    "steps_offset": 1,
    "timestep_spacing": "leading",
    "trained_betas": None,
    "use_karras_sigmas": False,
}


def random_base_folder(weights_dir: str = "", seed: int = 0) -> Path:
    return W.cache_dir(weights_dir) / "sdxl" / FOLDER.format(seed=seed)


def _unet(s: RandomSDXLSizes):  # type: ignore[no-untyped-def]
    from diffusers import UNet2DConditionModel

    n = len(s.block_out_channels)
    return UNet2DConditionModel(
        sample_size=s.sample_size, in_channels=4, out_channels=4, layers_per_block=s.layers_per_block,
        block_out_channels=s.block_out_channels,
        down_block_types=("DownBlock2D",) + ("CrossAttnDownBlock2D",) * (n - 1),
        up_block_types=("CrossAttnUpBlock2D",) * (n - 1) + ("UpBlock2D",),
        transformer_layers_per_block=s.transformer_layers_per_block, attention_head_dim=s.attention_head_dim,
        use_linear_projection=True, cross_attention_dim=s.text_hidden + s.text2_hidden,
        addition_embed_type="text_time", addition_time_embed_dim=s.addition_time_embed_dim,
        projection_class_embeddings_input_dim=s.text2_projection + TIME_IDS * s.addition_time_embed_dim,
        norm_num_groups=s.norm_num_groups,
    )


def _vae(s: RandomSDXLSizes):  # type: ignore[no-untyped-def]
    from diffusers import AutoencoderKL

    n = len(s.vae_channels)
    return AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, block_out_channels=s.vae_channels,
        down_block_types=("DownEncoderBlock2D",) * n, up_block_types=("UpDecoderBlock2D",) * n,
        layers_per_block=s.vae_layers_per_block, norm_num_groups=s.norm_num_groups, sample_size=1024,
        scaling_factor=0.13025,  # SDXL's VAE (SD 1.5's is 0.18215)
    )


def _text_configs(s: RandomSDXLSizes) -> tuple[dict[str, Any], dict[str, Any]]:
    """config.json of the repo's text_encoder/ (CLIP-L) and text_encoder_2/ (bigG, with its projection)."""
    return (
        R.clip_text_config("CLIPTextModel", s.text_hidden, s.text_intermediate, s.text_layers, s.text_heads,
                         "quick_gelu", s.text_hidden),
        R.clip_text_config("CLIPTextModelWithProjection", s.text2_hidden, s.text2_intermediate, s.text2_layers,
                         s.text2_heads, "gelu", s.text2_projection),
    )


def write_random_sdxl(folder: Path, bpe: Path, seed: int = 0, sizes: RandomSDXLSizes | None = None) -> Path:
    """Write the random model as a diffusers folder at ``folder`` (which must not exist).

    ``bpe`` is CLIP's BPE file, from which both tokenizers are built offline (bigG's pads with "!").
    """
    import torch

    from builder.caption.clip_tokenizer import PAD_TOKENS, write_clip_tokenizer

    folder, sizes = Path(folder), sizes or SDXL
    gen = torch.Generator().manual_seed(seed)
    folder.mkdir(parents=True)
    R.save_random(folder / "unet", lambda: _unet(sizes), gen)
    R.save_random(folder / "vae", lambda: _vae(sizes), gen)
    for sub, config in zip(("text_encoder", "text_encoder_2"), _text_configs(sizes), strict=True):
        R.save_text_encoder(folder / sub, config, gen)
    write_clip_tokenizer(folder / "tokenizer", bpe)
    write_clip_tokenizer(folder / "tokenizer_2", bpe, PAD_TOKENS[BIGG_CACHE_NAME])
    R.write_json(folder / "scheduler" / "scheduler_config.json", SCHEDULER)
    R.write_json(folder / COMPLETE, MODEL_INDEX)  # last: a folder with it is complete
    return folder


def random_base_cached(weights_dir: str, seed: int) -> Path | None:
    return cached(random_base_folder(weights_dir, seed))


def make_random_base(weights_dir: str, seed: int) -> Path:
    """The cached random SDXL folder for ``seed``, generated (once) if absent."""
    from builder.caption.clip_tokenizer import bpe_file

    return R.generate_once(random_base_folder(weights_dir, seed), f"{TITLE} (seed {seed})", "7 GB",
                         lambda tmp: write_random_sdxl(tmp, bpe_file(weights_dir), seed))
