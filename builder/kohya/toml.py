"""``dataset_config.toml`` and ``config.toml`` for sd-scripts' train_network.py or sdxl_train_network.py.

The dataset file goes through sd-scripts' strict voluptuous schema (an unknown key, or a
bucket key in a subset, stops training); config.toml is flattened into argparse's
namespace where an unknown key is silently ignored and values are not converted. Both
are checked here against the record of the verified sd-scripts commit (schema.py).
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

from rich.markup import escape

from builder import families
from builder.caption.clip_tokenizer import (
    CLIP_CACHE_NAME,
    ensure_clip_tokenizer,
    tokenizer_cache_root,
)
from builder.caption.text import required_max_token_length
from builder.config import Config
from builder.console import console
from builder.errors import BuilderError, ConfigError
from builder.kohya.dataset import KohyaDataset
from builder.kohya.presets import Preset, parse_extra_args
from builder.kohya.reg import reg_attributes
from builder.kohya.schema import check_train_value, dataset_keys
from builder.kohya.validation import validation_args, validation_dataset

CLIP_CHUNK = 75  # tokens per CLIP window; sd-scripts accepts 150 or 225 as longer limits
MAX_TOKEN_CHOICES = (75, 150, 225)


# --- a small TOML writer: sd-scripts reads with the `toml` package, tests with tomllib ---

def _value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if not math.isfinite(v):
            raise BuilderError(f"cannot write {v} into a TOML file")
        text = repr(v)
        return text if any(c in text for c in ".e") else text + ".0"
    if isinstance(v, str | Path):
        return json.dumps(str(v), ensure_ascii=False)  # JSON string escapes are valid TOML basic strings
    if isinstance(v, list | tuple):
        return "[" + ", ".join(_value(x) for x in v) + "]"
    raise BuilderError(f"cannot write {type(v).__name__} {v!r} into a TOML file")


def _scalars(table: dict[str, Any]) -> list[str]:
    return [
        f"{k} = {_value(v)}" for k, v in table.items()
        if not isinstance(v, dict) and not (isinstance(v, list) and v and isinstance(v[0], dict))
    ]


def dumps(doc: dict[str, Any], header: str = "", prefix: str = "") -> str:
    """Scalars first, then [tables], then [[arrays of tables]] (nested ones too)."""
    lines = [f"# {line}" if line else "#" for line in header.splitlines()]
    if lines:
        lines.append("")
    lines += _scalars(doc)
    for key, value in doc.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            lines += ["", f"[{name}]", dumps(value, prefix=name + ".").rstrip("\n")]
        elif isinstance(value, list) and value and isinstance(value[0], dict):
            for item in value:
                lines += ["", f"[[{name}]]", dumps(item, prefix=name + ".").rstrip("\n")]
    text = "\n".join(lines).strip("\n") + "\n"
    return re.sub(r"\n{3,}", "\n\n", text)


def flatten(doc: dict[str, Any]) -> dict[str, Any]:
    """What sd-scripts' read_config_from_file does: one level of tables merged into one dict."""
    flat: dict[str, Any] = {}
    for key, value in doc.items():
        for k, v in (value.items() if isinstance(value, dict) else [(key, value)]):
            if k in flat:
                raise BuilderError(f"config.toml would set '{k}' twice")
            flat[k] = v
    return flat


# --- the CLIP tokenizer train_network.py loads ---

def tokenizer_cache_dir(cfg: Config) -> Path:
    """sd-scripts' tokenizer_cache_dir: [kohya] tokenizer_cache_dir, else the weights cache's folder."""
    if cfg.kohya.tokenizer_cache_dir:
        return Path(cfg.kohya.tokenizer_cache_dir).expanduser().resolve()
    return tokenizer_cache_root(cfg.runtime.weights_dir).resolve()


def prepare_tokenizer_cache(cfg: Config, family: str = families.DEFAULT) -> Path:
    """Fill the default tokenizer_cache_dir so the training script downloads nothing.

    A folder the user set is theirs and is left as it is. Without CLIP's BPE file the
    folder stays empty: sd-scripts then downloads the tokenizer once and saves it there.
    Each family says which tokenizers its script loads (SDXL: bigG's too).
    """
    folder = tokenizer_cache_dir(cfg)
    if not cfg.kohya.tokenizer_cache_dir:
        try:
            for name in families.family(family).TOKENIZERS:
                ensure_clip_tokenizer(cfg.runtime.weights_dir, name)
        except BuilderError as exc:
            console.print(f"[yellow]{escape(str(exc))}; sd-scripts will download the tokenizer into {folder}[/yellow]")
    return folder


def resolution_for(cfg: Config, family: str) -> int:
    return cfg.kohya.resolution or families.family(family).RESOLUTION


# --- captions -> keep_tokens and max_token_length ---

def read_captions(ds: KohyaDataset) -> list[str]:
    """First lines, as sd-scripts reads them (enable_wildcard off)."""
    captions = []
    for path in ds.captions:
        lines = path.read_text(encoding="utf-8").splitlines()
        if not lines or not lines[0].strip():
            raise BuilderError(f"{path}: empty caption file (sd-scripts stops on it); delete or fill it")
        captions.append(lines[0].strip())
    return captions


def _has_word(part: str, word: str) -> bool:
    return re.search(rf"(?<!\w){re.escape(word.lower())}(?!\w)", part.lower()) is not None


def keep_tokens_for(captions: list[str], trigger: str, class_word: str) -> int:
    """How many leading comma-separated parts shuffle_caption must leave in place.

    Enough to keep the part holding the trigger, and the class word right after it
    ("ohwx, woman, ..." -> 2; "ohwx woman, ..." -> 1), in every caption.
    """
    keep = 0
    missing = 0
    for caption in captions:
        parts = [p.strip() for p in caption.split(",")]
        at = next((i for i, p in enumerate(parts) if _has_word(p, trigger)), None)
        if at is None:
            missing += 1
            continue
        k = at + 1
        if k < len(parts) and not _has_word(parts[at], class_word) and _has_word(parts[k], class_word):
            k += 1
        keep = max(keep, k)
    if missing:
        console.print(
            f"[yellow]{missing} of {len(captions)} captions lack the trigger word {trigger!r}; "
            "those images will not teach it[/yellow]"
        )
    if keep > 3:
        console.print(
            f"[yellow]the trigger sits in comma part {keep} of some captions; keep_tokens = {keep} "
            "pins everything before it too (put the trigger first)[/yellow]"
        )
    return keep


def max_token_length_for(captions: list[str], cfg: Config) -> int:
    """75, 150 or 225: the forced kohya.max_token_length, else what the longest caption needs."""
    forced = cfg.kohya.max_token_length
    if forced:
        if forced not in MAX_TOKEN_CHOICES:
            raise ConfigError(f"kohya.max_token_length = {forced}: sd-scripts accepts 75, 150 or 225 (0 = automatic)")
        return forced
    if not captions:
        return CLIP_CHUNK  # images are captioned with the class tokens alone
    # Count with the tokenizer train_network.py will load: its cache folder when there is one.
    cached = tokenizer_cache_dir(cfg) / CLIP_CACHE_NAME
    source = str(cached) if cached.is_dir() else cfg.caption.clip_tokenizer
    try:
        needed = required_max_token_length(captions, clip_tokenizer=source, weights_dir=cfg.runtime.weights_dir)
    except BuilderError as exc:
        console.print(
            f"[yellow]cannot count caption tokens ({exc}); assuming captions fit 75 tokens. "
            "Set kohya.max_token_length = 150 or 225 for longer ones[/yellow]"
        )
        return CLIP_CHUNK
    return needed or CLIP_CHUNK


# --- the two documents ---

def dataset_config(
    ds: KohyaDataset, cfg: Config, preset: Preset, keep_tokens: int, family: str = families.DEFAULT
) -> dict[str, Any]:
    general: dict[str, Any] = {
        "resolution": resolution_for(cfg, family),
        "batch_size": cfg.kohya.batch_size,
        **preset.dataset,
        # sd-scripts' default is ".caption": a .txt dataset must say so or trains captionless.
        "caption_extension": ds.caption_extension or cfg.caption.extension,
        "shuffle_caption": cfg.kohya.shuffle_caption,
        "keep_tokens": keep_tokens,
    }
    subsets: list[dict[str, Any]] = [{
        "image_dir": str(ds.image_dir.resolve()),
        "num_repeats": ds.repeats,
        "class_tokens": ds.class_tokens,
    }]
    if ds.reg_dir is not None:
        subsets.append({
            "image_dir": str(ds.reg_dir.resolve()),
            "num_repeats": ds.reg_repeats,
            "class_tokens": ds.reg_class_tokens,
            "is_reg": True,
            "keep_tokens": 0,  # reg captions are the class word alone
            **reg_attributes(cfg, family),
        })
    elif cfg.dataset.diff_output_preservation:
        raise ConfigError(
            "[dataset] diff_output_preservation needs regularisation images: pass --reg DIR or --reg-generate N"
        )
    add_masks(subsets, ds)  # the training subset only: validation stays unmasked (kohya/validation.py)
    datasets: list[dict[str, Any]] = [{"subsets": subsets}]
    if ds.val_dir is not None:
        datasets.append(validation_dataset(ds.val_dir, ds.class_tokens, cfg.runtime.seed))
    doc = {"general": general, "datasets": datasets}
    check_dataset_config(doc)
    return doc


def add_masks(subsets: list[dict[str, Any]], ds: KohyaDataset) -> None:
    """Each training subset reads its loss masks from the dataset's conditioning_data_dir."""
    if ds.mask_dir is None:
        return
    for subset in subsets:
        if not subset.get("is_reg") and Path(subset["image_dir"]) == ds.image_dir.resolve():
            subset["conditioning_data_dir"] = str(ds.mask_dir.resolve())
            # sd-scripts' masked (ControlNet-style) subset schema has no class_tokens: it reads captions only
            subset.pop("class_tokens", None)


def masked_loss_args(ds: KohyaDataset) -> dict[str, Any]:
    """config.toml's switch that makes sd-scripts read the masks (and accept conditioning_data_dir)."""
    return {"masked_loss": True} if ds.mask_dir is not None else {}


def check_dataset_config(doc: dict[str, Any]) -> None:
    """Every key at a level sd-scripts' ConfigSanitizer allows there; image_dir in every subset."""
    levels = [("general", doc.get("general", {}))]
    for ds in doc.get("datasets", []):
        levels.append(("datasets", {k: v for k, v in ds.items() if k != "subsets"}))
        levels += [("subsets", s) for s in ds.get("subsets", [])]
    for level, table in levels:
        bad = sorted(set(table) - dataset_keys(level) - ({"conditioning_data_dir"} if level == "subsets" else set()))
        if bad:
            raise BuilderError(f"dataset_config.toml: {bad} not allowed in [{level}] by sd-scripts")
        if level == "subsets" and "conditioning_data_dir" in table:
            # a masked subset is one of sd-scripts' ControlNet-style subsets, with their own keys
            bad = sorted(set(table) - dataset_keys("masked_subsets"))
            if bad:
                raise BuilderError(f"dataset_config.toml: {bad} not allowed in a masked subset by sd-scripts")
        if level == "subsets" and "image_dir" not in table:
            raise BuilderError("dataset_config.toml: a subset has no image_dir")
    unknown_top = set(doc) - {"general", "datasets"}
    if unknown_top:
        raise BuilderError(f"dataset_config.toml: unknown tables {sorted(unknown_top)}")


def training_config(
    ds: KohyaDataset,
    cfg: Config,
    preset: Preset,
    *,
    dataset_toml: Path,
    prompts_file: Path,
    max_token_length: int,
    family: str = families.DEFAULT,
    dataset_doc: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """config.toml as tables (sd-scripts flattens them); checked key by key against the record.

    ``dataset_doc`` (dataset_config.toml) lets the family's rules that span both files be checked.
    """
    out = ds.out.resolve()
    k = cfg.kohya
    if k.batch_size < 1 or k.epochs < 1:
        raise ConfigError("kohya.batch_size and kohya.epochs must be at least 1")
    model: dict[str, Any] = {}
    if cfg.paths.base_model:
        model["pretrained_model_name_or_path"] = str(Path(cfg.paths.base_model).expanduser().resolve())
    model["tokenizer_cache_dir"] = str(tokenizer_cache_dir(cfg))
    if k.attention != "none":
        model[k.attention] = True
    if max_token_length > CLIP_CHUNK:
        model["max_token_length"] = max_token_length
    doc: dict[str, Any] = {
        "model": model,
        "network": {
            "network_module": "networks.lora",
            "network_dim": k.network_dim,
            "network_alpha": k.network_alpha,
        },
        "optimizer": {
            "optimizer_type": k.optimizer,
            "learning_rate": k.learning_rate,
            "unet_lr": k.unet_lr,
            "text_encoder_lr": k.text_encoder_lr,
        },
        "training": {
            "dataset_config": str(dataset_toml.resolve()),
            "resolution": f"{resolution_for(cfg, family)},{resolution_for(cfg, family)}",  # argparse type str: "W,H"
            "train_batch_size": k.batch_size,
            "max_train_epochs": k.epochs,
            "mixed_precision": k.mixed_precision,
            "seed": cfg.runtime.seed,
            **masked_loss_args(ds),
        },
        "saving": {
            "output_dir": str(out / "model"),
            "output_name": k.output_name or cfg.character.trigger,
            "save_model_as": "safetensors",
            "save_precision": k.save_precision,
            "save_every_n_epochs": 1,
        },
        "logging": {"logging_dir": str(out / "log")},
    }
    if k.sample_every_n_epochs > 0:
        doc["sampling"] = {
            "sample_prompts": str(prompts_file.resolve()),
            "sample_every_n_epochs": k.sample_every_n_epochs,
            "sample_sampler": k.sample_sampler,
        }
    doc["training"].update(families.family(family).derived_train_args(cfg))
    if ds.val_dir is not None:
        doc["training"].update(validation_args(cfg))
    doc["preset"] = dict(preset.train)
    extra = parse_extra_args(cfg, family)
    for table in doc.values():
        for key in list(table):
            if key in extra:
                del table[key]
    if extra:
        doc["extra_args"] = extra
    flat = flatten(doc)
    if flat.get("max_data_loader_n_workers") == 0 and flat.get("persistent_data_loader_workers"):
        # sd-scripts refuses the pair ("persistent_workers option needs num_workers > 0"):
        # asking for no worker processes wins over the preset's persistent ones.
        for table in doc.values():
            if "persistent_data_loader_workers" in table:
                table["persistent_data_loader_workers"] = False
    flat = flatten(doc)
    for key, value in flat.items():
        check_train_value(key, value, "config.toml", family)
    families.family(family).check_train_args(flat, dataset_doc or {}, f"config.toml (preset {preset.path.name})")
    return doc
