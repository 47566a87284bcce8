"""Chroma: flux_train_network.py --model_type chroma, ChromaPipeline, 1024 px.

A FLUX.1-schnell derivative by lodestones (Apache-2.0) with its own family: its transformer has
no per-block modulation but a ``distilled_guidance_layer`` (the approximator), which is how it is
told from FLUX.1; it uses no CLIP-L, so a Chroma base is three files (the transformer, e.g.
``Chroma.safetensors`` / ``Chroma1-HD.safetensors``, FLUX's ``ae.safetensors`` and
``t5xxl_fp16.safetensors``). sd-scripts trains it with ``model_type = "chroma"``,
``guidance_scale = 0.0`` and ``apply_t5_attn_mask`` (which ``assert_extra_args`` requires), and
its docs' timestep sampling for it is ``sigmoid``. The base-set rules and the late checks are
FLUX's (builder.families.flux).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from builder.config import Config
from builder.errors import ConfigError
from builder.families import flux
from builder.families import flux_models as M
from builder.families.common import SampleDefaults, safetensors_keys

NAME = "chroma"
TITLE = "Chroma"
TOLD_BY = "its transformer has Chroma's distilled_guidance_layer"
RESOLUTION = flux.RESOLUTION
BUCKET_STEP = flux.BUCKET_STEP
SCRIPT = flux.SCRIPT
SCHEMA_SECTIONS = flux.SCHEMA_SECTIONS
TOKENIZERS = flux.TOKENIZERS  # FluxTokenizeStrategy loads CLIP-L's tokenizer for Chroma too
PRESET = "character_chroma"
SENTENCE_CAPTIONS = flux.SENTENCE_CAPTIONS
GUI_FIELDS: dict[str, Any] = {**flux.GUI_FIELDS, "model_type": "chroma"}
GUI_RENAMES = flux.GUI_RENAMES
BASE_FILES = ("three .safetensors files: the Chroma transformer (Chroma1-HD.safetensors / Chroma.safetensors), "
              "ae.safetensors and t5xxl_fp16.safetensors (no CLIP-L)")
PIPELINE = "ChromaPipeline"
PIPELINE_KWARGS: dict[str, Any] = {}
CONFIG_REPO = "lodestones/Chroma1-HD"
CONFIG_FOLDERS = ("transformer", "vae", "text_encoder", "tokenizer", "scheduler")
LORA_TEXT_PREFIXES = ("lora_te3_",)  # T5 only: no CLIP-L
LORA_TRAINED_FOR = "Chroma"
T5_MAX_TOKENS = 512  # get_tokenize_strategy: not schnell -> 512


def owns_keys(keys: list[str]) -> bool:
    return flux.role_of(keys) == "transformer" and flux.is_chroma(keys)


def owns_folder(path: Path) -> bool:
    flux.refuse_diffusers_folder(path)
    found = flux.find_parts(path)
    return "transformer" in found and flux.is_chroma(found["transformer"][1])


def derived_train_args(cfg: Config) -> dict[str, Any]:
    base = flux.base_of(cfg)
    return {
        **base.train_args(),
        "network_module": "networks.lora_flux",
        "model_type": "chroma",
        "mixed_precision": "bf16",
        "save_precision": "bf16",
        "guidance_scale": 0.0,  # docs: required for Chroma (no embedded guidance)
        "apply_t5_attn_mask": True,  # assert_extra_args: "apply_t5_attn_mask must be True for Chroma"
        "timestep_sampling": "sigmoid",
        "model_prediction_type": "raw",
        "discrete_flow_shift": 3.0,
        "t5xxl_max_token_length": T5_MAX_TOKENS,
    }


def check_train_args(train: dict[str, Any], dataset_doc: dict[str, Any], origin: str) -> None:
    if train.get("model_type") != "chroma":
        raise ConfigError(f"{origin}: a Chroma base needs model_type = \"chroma\" ({SCRIPT} would load it as FLUX.1)")
    if not train.get("apply_t5_attn_mask"):
        raise ConfigError(f"{origin}: Chroma needs apply_t5_attn_mask = true ({SCRIPT}: assert_extra_args)")
    if train.get("guidance_scale", 3.5) != 0.0:
        raise ConfigError(f"{origin}: Chroma needs guidance_scale = 0.0 (sd-scripts' docs); it is {train.get('guidance_scale', 3.5)}")
    if train.get("cpu_offload_checkpointing"):
        raise ConfigError(f"{origin}: Chroma does not support cpu_offload_checkpointing (sd-scripts' docs); remove it")
    flux.check_parts(train, origin, chroma=True)
    transformer = Path(str(train["pretrained_model_name_or_path"]))
    if not flux.is_chroma(safetensors_keys(transformer)):
        raise ConfigError(f"{origin}: {transformer} is a FLUX.1 transformer, not Chroma; set kohya.model_family = \"flux\"")
    flux.check_common(train, dataset_doc, origin, TITLE)


def lora_targets(pipe: Any) -> dict[str, Any]:
    return M.lora_targets(pipe)


load_pipeline = flux.load_pipeline


def sample_defaults(base_model: str | Path | None) -> SampleDefaults:
    return M.SAMPLE_DEFAULTS["chroma"]


def random_base_cached(weights_dir: str, seed: int) -> Path | None:
    return M.random_base_cached(weights_dir, seed, "chroma")


def make_random_base(weights_dir: str, seed: int) -> Path:
    return M.make_random_base(weights_dir, seed, "chroma")
