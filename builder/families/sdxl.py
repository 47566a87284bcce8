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

from pathlib import Path
from typing import Any

from builder.caption.clip_tokenizer import BIGG_CACHE_NAME, CLIP_CACHE_NAME
from builder.config import Config
from builder.errors import ConfigError
from builder.families.common import (
    check_bucket_steps,
    check_cached_captions,
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


def random_base_cached(weights_dir: str, seed: int) -> Path | None:
    return None


def make_random_base(weights_dir: str, seed: int) -> Path:
    raise NotImplementedError("the random SDXL base comes in the next commit")
