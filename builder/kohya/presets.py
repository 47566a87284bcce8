"""Training presets (``kohya_configs/*.toml``) and the config's ``kohya.extra_args``.

A preset holds what the typed [kohya] config section does not: scheduler, caching,
bucket and augmentation settings, as sd-scripts names them. Order of precedence:
preset < the [kohya] config fields < ``kohya.extra_args``.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from builder import families
from builder.config import Config
from builder.errors import ConfigError
from builder.kohya.schema import check_train_value, closest, dataset_keys

PRESETS_DIR = Path(__file__).resolve().parents[2] / "kohya_configs"

# config.toml keys the builder derives from the [kohya] config, the run folder and the
# dataset; a preset that set them too would be silently overruled, so it may not.
DERIVED_TRAIN_KEYS = frozenset({
    "pretrained_model_name_or_path", "network_module", "network_dim", "network_alpha",
    "optimizer_type", "learning_rate", "unet_lr", "text_encoder_lr", "max_train_epochs",
    "train_batch_size", "save_every_n_epochs", "save_model_as", "mixed_precision",
    "save_precision", "sdpa", "xformers", "resolution", "sample_prompts",
    "sample_every_n_epochs", "sample_sampler", "output_dir", "output_name", "logging_dir",
    "dataset_config", "tokenizer_cache_dir", "max_token_length", "seed",
    "train_data_dir", "reg_data_dir", "caption_extension", "keep_tokens", "shuffle_caption",
    "no_half_vae",  # SDXL: set with fp16 (builder.kohya.toml)
    "ae", "clip_l", "t5xxl", "model_type", "apply_t5_attn_mask",  # FLUX/Chroma: from the base model's files
})
DERIVED_DATASET_KEYS = frozenset({
    "resolution", "batch_size", "caption_extension", "shuffle_caption", "keep_tokens",
    "image_dir", "num_repeats", "class_tokens", "is_reg",
})


@dataclass
class Preset:
    name: str
    path: Path
    family: str | None = None  # None: a user's preset that does not say (fits any family)
    train: dict[str, Any] = field(default_factory=dict)
    dataset: dict[str, Any] = field(default_factory=dict)


def preset_name(cfg: Config, family: str) -> str:
    """kohya.preset, or the family's default (character) preset when it is empty."""
    return cfg.kohya.preset or families.family(family).PRESET


def available_presets(family: str | None = None) -> list[str]:
    """Preset names in kohya_configs/ (for one family: those whose name ends in _<family>)."""
    return sorted(p.stem for p in PRESETS_DIR.glob("*.toml") if family is None or p.stem.endswith(f"_{family}"))


def preset_path(name: str) -> Path:
    """A preset name from kohya_configs/, or a path to the user's own preset file."""
    as_path = Path(name).expanduser()
    if as_path.suffix == ".toml" or as_path.parent != Path("."):
        if not as_path.is_file():
            raise ConfigError(f"kohya.preset: {as_path} does not exist")
        return as_path
    path = PRESETS_DIR / f"{name}.toml"
    if not path.is_file():
        names = set(available_presets())
        raise ConfigError(
            f"kohya.preset = {name!r} is not in {PRESETS_DIR} ({', '.join(sorted(names))}){closest(name, names)}"
        )
    return path


def load_preset(name: str, family: str = families.DEFAULT) -> Preset:
    """A preset checked against the arguments of ``family``'s training script."""
    path = preset_path(name)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    unknown = set(data) - {"train", "dataset", "family"}
    if unknown:
        raise ConfigError(
            f"{path}: only a family key and [train] and [dataset] tables are allowed, found {sorted(unknown)}"
        )
    declared = data.get("family")
    if declared is not None and declared not in families.FAMILIES:
        raise ConfigError(f"{path}: family = {declared!r}; choose one of {', '.join(families.FAMILIES)}")
    if declared is not None and declared != family:
        raise ConfigError(
            f"{path} is a preset for {families.title(declared)}, but the model family is {families.title(family)} "
            f"(kohya.model_family / the base model); pick a {family} preset ({', '.join(available_presets(family))})"
        )
    preset = Preset(name=path.stem, path=path, family=declared,
                    train=dict(data.get("train", {})), dataset=dict(data.get("dataset", {})))
    for key, value in preset.train.items():
        if key in DERIVED_TRAIN_KEYS:
            raise ConfigError(f"{path}: [train] {key} comes from the [kohya] config section; remove it here")
        check_train_value(key, value, f"{path} [train]", family)
    allowed = dataset_keys("general")
    for key in preset.dataset:
        if key in DERIVED_DATASET_KEYS:
            raise ConfigError(f"{path}: [dataset] {key} is set by the builder; remove it here")
        if key not in allowed:
            raise ConfigError(f"{path}: [dataset] {key} is not a dataset_config [general] key{closest(key, allowed)}")
    steps, step = preset.dataset.get("bucket_reso_steps", 64), families.family(family).BUCKET_STEP
    if steps % step:
        raise ConfigError(f"{path}: bucket_reso_steps = {steps}; {families.title(family)} needs a multiple of {step}")
    return preset


def parse_extra_args(cfg: Config, family: str = families.DEFAULT) -> dict[str, Any]:
    """``kohya.extra_args`` items ``key=value``; the value is read as TOML (else as a string)."""
    extra: dict[str, Any] = {}
    for item in cfg.kohya.extra_args:
        key, sep, raw = item.partition("=")
        key = key.strip().removeprefix("--")
        if not sep or not key:
            raise ConfigError(f"kohya.extra_args item {item!r} must look like key=value")
        try:
            value = tomllib.loads(f"v = {raw.strip()}")["v"]
        except tomllib.TOMLDecodeError:
            value = raw.strip()
        check_train_value(key, value, "kohya.extra_args", family)
        extra[key] = value
    return extra
