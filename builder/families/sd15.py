"""Stable Diffusion 1.5: train_network.py, StableDiffusionPipeline, 512 px.

Told from a single checkpoint by its LDM key names (``cond_stage_model.transformer.*``,
``model.diffusion_model.*``) and from a diffusers folder by its pipeline class; SD 2.x
(OpenCLIP ViT-H, ``cond_stage_model.model.*``) is refused by name. sd-scripts trains it on a
UNet with diffusers' module names, so its LoRA names are the diffusers paths.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from builder import weights as W
from builder.caption.clip_tokenizer import CLIP_CACHE_NAME
from builder.config import Config
from builder.errors import BuilderError
from builder.families import random_init as R
from builder.families.common import (
    COMPLETE,
    SampleDefaults,
    cached,
    diffusers_loader,
    kohya_module_names,
    pipeline_class,
)

NAME = "sd15"
TITLE = "SD 1.5"
TOLD_BY = "it has one CLIP text encoder, not SDXL's two"
RESOLUTION = 512
BUCKET_STEP = 64  # train_network.py: verify_bucket_reso_steps(64)
SCRIPT = "train_network.py"
SCHEMA_SECTIONS = ("train_network_arguments",)
TOKENIZERS = (CLIP_CACHE_NAME,)
SENTENCE_CAPTIONS = False  # CLIP reads tag lists: captions may be shuffled (kohya.shuffle_caption)
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
LORA_TRAINED_FOR = "SD 1.x/2.x"  # SD 2.x LoRAs use the same prefix
SAMPLE = SampleDefaults(steps=25, guidance=7.0, sampler="ddim")  # ddim: sd-scripts' sample default
load_pipeline = diffusers_loader(PIPELINE, PIPELINE_KWARGS)

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


def sample_defaults(base_model: str | Path | None) -> SampleDefaults:
    return SAMPLE


def lora_targets(pipe: Any) -> dict[str, Any]:
    """``lora_unet_`` + the diffusers UNet path, ``lora_te_`` + the CLIP path (networks/lora.py)."""
    return {**kohya_module_names("lora_unet_", pipe.unet), **kohya_module_names("lora_te_", pipe.text_encoder)}


# ---- the random base (--random-weights) -----------------------------------------------------
# The sizes are SD 1.5's own (``SD15``): sd-scripts turns a diffusers UNet into its original
# layout with SD 1.5's fixed block sizes, so a smaller UNet would not load there. The folder is
# what the SD 1.5 hub repo holds (model_index.json, unet/, vae/, text_encoder/, tokenizer/,
# scheduler/), in fp16 (about 2.1 GB), the text encoder under transformers 4's ``text_model.``
# key prefix as the real repo has it.


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


def random_base_folder(weights_dir: str = "", seed: int = 0) -> Path:
    return W.cache_dir(weights_dir) / "sd" / FOLDER.format(seed=seed)


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


def _vae(s: RandomSDSizes, scaling_factor: float = 0.18215):  # type: ignore[no-untyped-def]
    from diffusers import AutoencoderKL

    n = len(s.vae_channels)
    return AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, block_out_channels=s.vae_channels,
        down_block_types=("DownEncoderBlock2D",) * n, up_block_types=("UpDecoderBlock2D",) * n,
        layers_per_block=s.vae_layers_per_block, norm_num_groups=s.norm_num_groups, sample_size=512,
        scaling_factor=scaling_factor,
    )


def _text_config(s: RandomSDSizes) -> dict[str, Any]:
    """config.json as the SD 1.5 repo's text_encoder/ has it (CLIP ViT-L/14's text tower)."""
    return R.clip_text_config("CLIPTextModel", s.text_hidden, s.text_intermediate, s.text_layers, s.text_heads,
                            "quick_gelu", s.text_hidden)


def _text_encoder(s: RandomSDSizes):  # type: ignore[no-untyped-def]
    return R.clip_text_model(_text_config(s))


def write_random_sd15(folder: Path, bpe: Path, seed: int = 0, sizes: RandomSDSizes | None = None) -> Path:
    """Write the random model as a diffusers folder at ``folder`` (which must not exist).

    ``bpe`` is CLIP's BPE file, from which the tokenizer is built offline.
    """
    import torch

    from builder.caption.clip_tokenizer import write_clip_tokenizer

    folder, sizes = Path(folder), sizes or SD15
    gen = torch.Generator().manual_seed(seed)
    folder.mkdir(parents=True)
    R.save_random(folder / "unet", lambda: _unet(sizes), gen)
    R.save_random(folder / "vae", lambda: _vae(sizes), gen)
    R.save_text_encoder(folder / "text_encoder", _text_config(sizes), gen)
    write_clip_tokenizer(folder / "tokenizer", bpe)
    R.write_json(folder / "scheduler" / "scheduler_config.json", SCHEDULER)
    R.write_json(folder / COMPLETE, MODEL_INDEX)  # last: a folder with it is complete
    return folder


def random_base_cached(weights_dir: str, seed: int) -> Path | None:
    return cached(random_base_folder(weights_dir, seed))


def make_random_base(weights_dir: str, seed: int) -> Path:
    """The cached random SD 1.5 folder for ``seed``, generated (once) if absent."""
    from builder.caption.clip_tokenizer import bpe_file

    return R.generate_once(random_base_folder(weights_dir, seed), f"{TITLE} (seed {seed})", "2 GB",
                         lambda tmp: write_random_sd15(tmp, bpe_file(weights_dir), seed))
