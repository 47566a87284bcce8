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
})
DERIVED_DATASET_KEYS = frozenset({
    "resolution", "batch_size", "caption_extension", "shuffle_caption", "keep_tokens",
    "image_dir", "num_repeats", "class_tokens", "is_reg",
})


@dataclass
class Preset:
    name: str
    path: Path
    train: dict[str, Any] = field(default_factory=dict)
    dataset: dict[str, Any] = field(default_factory=dict)


def available_presets() -> list[str]:
    return sorted(p.stem for p in PRESETS_DIR.glob("*.toml"))


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


def load_preset(name: str) -> Preset:
    path = preset_path(name)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    unknown = set(data) - {"train", "dataset"}
    if unknown:
        raise ConfigError(f"{path}: only [train] and [dataset] tables are allowed, found {sorted(unknown)}")
    preset = Preset(name=path.stem, path=path, train=dict(data.get("train", {})), dataset=dict(data.get("dataset", {})))
    for key, value in preset.train.items():
        if key in DERIVED_TRAIN_KEYS:
            raise ConfigError(f"{path}: [train] {key} comes from the [kohya] config section; remove it here")
        check_train_value(key, value, f"{path} [train]")
    allowed = dataset_keys("general")
    for key in preset.dataset:
        if key in DERIVED_DATASET_KEYS:
            raise ConfigError(f"{path}: [dataset] {key} is set by the builder; remove it here")
        if key not in allowed:
            raise ConfigError(f"{path}: [dataset] {key} is not a dataset_config [general] key{closest(key, allowed)}")
    steps = preset.dataset.get("bucket_reso_steps", 64)
    if steps % 64:
        raise ConfigError(f"{path}: bucket_reso_steps = {steps}; SD 1.5 needs a multiple of 64")
    return preset


def parse_extra_args(cfg: Config) -> dict[str, Any]:
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
        check_train_value(key, value, "kohya.extra_args")
        extra[key] = value
    return extra
