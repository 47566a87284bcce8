"""Stable Diffusion 1.5: train_network.py, StableDiffusionPipeline, 512 px.

Told from a single checkpoint by its LDM key names (``cond_stage_model.transformer.*``,
``model.diffusion_model.*``) and from a diffusers folder by its pipeline class; SD 2.x
(OpenCLIP ViT-H, ``cond_stage_model.model.*``) is refused by name. sd-scripts trains it on a
UNet with diffusers' module names, so its LoRA names are the diffusers paths.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from builder.caption.clip_tokenizer import CLIP_CACHE_NAME
from builder.config import Config
from builder.errors import BuilderError
from builder.families.common import kohya_module_names, pipeline_class

NAME = "sd15"
TITLE = "SD 1.5"
TOLD_BY = "it has one CLIP text encoder, not SDXL's two"
RESOLUTION = 512
BUCKET_STEP = 64  # train_network.py: verify_bucket_reso_steps(64)
SCRIPT = "train_network.py"
SCHEMA_SECTIONS = ("train_network_arguments",)
TOKENIZERS = (CLIP_CACHE_NAME,)
PRESET = "character_sd15"
GUI_FIELDS: dict[str, Any] = {"sdxl": False}
GUI_RENAMES: dict[str, str] = {}
BASE_FILES = "one .safetensors/.ckpt checkpoint (e.g. v1-5-pruned-emaonly.safetensors) or a diffusers folder"
PIPELINE = "StableDiffusionPipeline"
# safety_checker=None: it replaces flagged images with black ones, and identity scoring needs
# the pixels the model actually made; this is the user's own model and prompts.
PIPELINE_KWARGS: dict[str, Any] = {"safety_checker": None, "requires_safety_checker": False}
CONFIG_REPO = "stable-diffusion-v1-5/stable-diffusion-v1-5"
CONFIG_FOLDERS = ("unet", "vae", "text_encoder", "tokenizer", "scheduler")
LORA_TEXT_PREFIXES = ("lora_te_",)

SD2_KEY_PREFIX = "cond_stage_model.model."  # OpenCLIP ViT-H: SD 2.x, which this builder does not train
SD1_KEY_PREFIXES = ("cond_stage_model.transformer.", "model.diffusion_model.")


def owns_keys(keys: list[str]) -> bool:
    if any(k.startswith(SD2_KEY_PREFIX) for k in keys):
        raise BuilderError(
            "the base model is Stable Diffusion 2.x (an OpenCLIP ViT-H text encoder, "
            f"{SD2_KEY_PREFIX}*); this builder trains SD 1.5 and SDXL LoRAs"
        )
    return any(k.startswith(SD1_KEY_PREFIXES) for k in keys)


def owns_folder(path: Path) -> bool:
    return (pipeline_class(path) or "").startswith("StableDiffusion")


def derived_train_args(cfg: Config) -> dict[str, Any]:
    return {}


def check_train_args(train: dict[str, Any], dataset_doc: dict[str, Any], origin: str) -> None:
    """train_network.py's own checks run before the models load; the presets' bucket step is checked on load."""


def lora_targets(pipe: Any) -> dict[str, Any]:
    """``lora_unet_`` + the diffusers UNet path, ``lora_te_`` + the CLIP path (networks/lora.py)."""
    return {**kohya_module_names("lora_unet_", pipe.unet), **kohya_module_names("lora_te_", pipe.text_encoder)}


def random_base_cached(weights_dir: str, seed: int) -> Path | None:
    from builder.random_sd15 import random_sd15_folder

    folder = random_sd15_folder(weights_dir, seed)
    return folder if (folder / "model_index.json").is_file() else None


def make_random_base(weights_dir: str, seed: int) -> Path:
    from builder.random_sd15 import ensure_random_sd15

    return ensure_random_sd15(weights_dir, seed)
