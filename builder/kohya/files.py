"""Write every file kohya needs for a finished dataset: the build/run stage's one call."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from builder import families
from builder.config import Config
from builder.errors import BuilderError
from builder.families import resolve_family
from builder.io import atomic_write_json, atomic_write_text
from builder.kohya.dataset import KohyaDataset, attach_masks, finalize_dataset
from builder.kohya.gui import gui_config, masked_gui_fields
from builder.kohya.presets import load_preset, preset_name
from builder.kohya.prompts import sample_prompts_text
from builder.kohya.schema import schema
from builder.kohya.toml import (
    dataset_config,
    dumps,
    flatten,
    keep_tokens_for,
    max_token_length_for,
    prepare_tokenizer_cache,
    read_captions,
    training_config,
)
from builder.kohya.validation import validation_dir, validation_images

DATASET_TOML = "dataset_config.toml"
CONFIG_TOML = "config.toml"
PROMPTS_TXT = "sample_prompts.txt"
GUI_JSON = "kohya_gui_lora.json"


@dataclass
class KohyaFiles:
    dataset: KohyaDataset
    dataset_config: Path
    config: Path
    sample_prompts: Path
    gui_config: Path
    keep_tokens: int
    max_token_length: int
    family: str


def write_kohya_files(out: Path, cfg: Config, caption_extension: str | None = None) -> KohyaFiles:
    """Finalize the dataset (repeats, folder name) and write both TOMLs, the prompts and the GUI JSON.

    ``caption_extension``: what the caller wrote; it must agree with the files on disk,
    which are what sd-scripts will read.
    """
    out = Path(out)
    ds = attach_masks(finalize_dataset(out, cfg), cfg)
    ds.val_images = validation_images(out, cfg)
    ds.val_dir = validation_dir(out, cfg) if ds.val_images else None
    if caption_extension and ds.caption_extension and caption_extension != ds.caption_extension:
        raise BuilderError(
            f"{ds.image_dir}: captions on disk are {ds.caption_extension}, not {caption_extension}"
        )
    family = resolve_family(cfg.kohya.model_family, cfg.paths.base_model)
    preset = load_preset(preset_name(cfg, family), family)
    captions = read_captions(ds)
    keep = keep_tokens_for(captions, cfg.character.trigger, cfg.character.class_word)
    prepare_tokenizer_cache(cfg, family)
    max_tokens = max_token_length_for(captions, cfg)

    files = KohyaFiles(
        dataset=ds,
        dataset_config=out / DATASET_TOML,
        config=out / CONFIG_TOML,
        sample_prompts=out / PROMPTS_TXT,
        gui_config=out / GUI_JSON,
        keep_tokens=keep,
        max_token_length=max_tokens,
        family=family,
    )
    commit = schema()["sd_scripts"]["commit"][:10]
    prompts = sample_prompts_text(cfg, family)
    dataset_doc = dataset_config(ds, cfg, preset, keep, family)
    train_doc = training_config(
        ds, cfg, preset, dataset_toml=files.dataset_config, prompts_file=files.sample_prompts,
        max_token_length=max_tokens, family=family, dataset_doc=dataset_doc,
    )
    atomic_write_text(files.sample_prompts, prompts)
    atomic_write_text(
        files.dataset_config,
        dumps(dataset_doc, header=f"sd-scripts dataset config (checked against sd-scripts {commit}).\n"
              f"{ds.plan.describe()}"),
    )
    atomic_write_text(
        files.config,
        dumps(train_doc, header=f"{families.family(family).SCRIPT} --config_file (checked against sd-scripts {commit}).\n"
              f"Preset: {preset.path.name}. sd-scripts merges these tables into one set of arguments."),
    )
    atomic_write_json(files.gui_config, dict(sorted({
        **gui_config(
            ds, flatten(train_doc), dataset_doc["general"], prompts, family, cfg.kohya.num_processes, cfg.kohya.gpu_ids
        ),
        **masked_gui_fields(ds, files.dataset_config),
    }.items())))
    return files
