"""Model families (SD 1.5, SDXL, ...): one module each, picked by name or told from the base model.

A family module ``builder/families/<name>.py`` provides exactly these names (``FamilyModule``):

Identity and detection
    ``NAME``         the ``kohya.model_family`` value ("sd15")
    ``TITLE``        for messages ("SD 1.5")
    ``TOLD_BY``      what in its files tells it, for messages ("it has SDXL's second text encoder")
    ``owns_keys(keys) -> bool``   a single .safetensors checkpoint's tensor names (header only) are
                     this family's; may raise BuilderError for a relative it refuses (SD 2.x)
    ``owns_folder(path) -> bool`` a folder (a diffusers pipeline, or the family's own set of files)
                     is a base model of this family
Training (sd-scripts)
    ``RESOLUTION``   native training and sampling size in px
    ``BUCKET_STEP``  what its script's ``verify_bucket_reso_steps`` demands
    ``SCRIPT``       its sd-scripts training script ("train_network.py")
    ``SCHEMA_SECTIONS``  the ``sdscripts_schema.json`` argument tables of SCRIPT, merged in order
    ``TOKENIZERS``   the tokenizer_cache_dir folders SCRIPT loads (builder.caption.clip_tokenizer names)
    ``PRESET``       its default preset; its presets are ``kohya_configs/*_<NAME>.toml``
    ``SENTENCE_CAPTIONS``  its text encoder reads sentences (T5): a sentence captioner by default,
                     captions never shuffled, their budget counted in T5 tokens
    ``derived_train_args(cfg) -> dict``  config.toml arguments it adds to the common derived ones
    ``check_train_args(train, dataset_doc, origin)``  what SCRIPT refuses minutes into a run (after
                     loading the models), raised now as a ConfigError with the fix; ``train`` is
                     config.toml flattened, ``dataset_doc`` dataset_config.toml as parsed
    ``GUI_FIELDS``   kohya_ss GUI JSON fields it sets ({"sdxl": True})
    ``GUI_RENAMES``  sd-scripts argument -> GUI field, for the arguments only it has
Base model
    ``BASE_FILES``   what a base model of this family is made of, in words (help and errors)
    ``random_base_cached(weights_dir, seed) -> Path | None``  the generated random base, if complete
    ``make_random_base(weights_dir, seed) -> Path``  generate it (once) for ``--random-weights``:
                     real layout, seeded random weights; nothing is downloaded
Sampling (diffusers)
    ``PIPELINE``     the diffusers pipeline class name that samples it
    ``PIPELINE_KWARGS``  extra keyword arguments for ``from_pretrained``/``from_single_file``
    ``CONFIG_REPO``  ``from_single_file``'s default source of the component configs
    ``CONFIG_FOLDERS``  the subfolders a local ``[sample] model_config`` folder must hold
    ``LORA_TEXT_PREFIXES``  sd-scripts' text-encoder LoRA prefixes ("lora_te_",)
    ``LORA_TRAINED_FOR``  what a LoRA with those prefixes was trained for, in messages ("SD 1.x/2.x")
    ``lora_targets(pipe) -> dict[str, Module]``  every module name sd-scripts' LoRA for this family
                     may carry, mapped onto the pipeline's Linear/Conv2d it patches (FLUX: a fused
                     qkv name maps onto diffusers' separate q, k, v as one target)
    ``load_pipeline(path, cfg, dtype) -> pipeline``  the base model as its diffusers pipeline, on the CPU
    ``sample_defaults(base_model) -> SampleDefaults``  steps, guidance, sampler and prompt-line options
                     for what ``[sample]`` leaves unset (FLUX: per variant, told from the transformer)

Adding a family: write its module, add it to ``MODULES`` (more specific families first: detection
takes the first module that owns the keys or folder), add its ``kohya_configs/*_<name>.toml``
presets and its tests. Registry entries (builder.weights) name their family with ``family=NAME``.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from types import ModuleType
from typing import Any, Protocol

from builder import weights as W
from builder.config import Config
from builder.errors import BuilderError, ConfigError
from builder.families import chroma, flux, sd15, sdxl
from builder.families.common import SampleDefaults, safetensors_keys
from builder.registry import pick


class FamilyModule(Protocol):
    """The names every module in MODULES provides (see the module docstring)."""

    NAME: str
    TITLE: str
    TOLD_BY: str
    RESOLUTION: int
    BUCKET_STEP: int
    SCRIPT: str
    SCHEMA_SECTIONS: tuple[str, ...]
    TOKENIZERS: tuple[str, ...]
    PRESET: str
    SENTENCE_CAPTIONS: bool
    GUI_FIELDS: dict[str, Any]
    GUI_RENAMES: dict[str, str]
    BASE_FILES: str
    PIPELINE: str
    PIPELINE_KWARGS: dict[str, Any]
    CONFIG_REPO: str
    CONFIG_FOLDERS: tuple[str, ...]
    LORA_TEXT_PREFIXES: tuple[str, ...]
    LORA_TRAINED_FOR: str

    def owns_keys(self, keys: list[str]) -> bool: ...
    def owns_folder(self, path: Path) -> bool: ...
    def derived_train_args(self, cfg: Config) -> dict[str, Any]: ...
    def check_train_args(self, train: dict[str, Any], dataset_doc: dict[str, Any], origin: str) -> None: ...
    def random_base_cached(self, weights_dir: str, seed: int) -> Path | None: ...
    def make_random_base(self, weights_dir: str, seed: int) -> Path: ...
    def lora_targets(self, pipe: Any) -> dict[str, Any]: ...
    def load_pipeline(self, path: Path, cfg: Config, dtype: Any) -> Any: ...
    def sample_defaults(self, base_model: str | Path | None) -> SampleDefaults: ...


# Detection order: the first module that owns a checkpoint's keys or a folder wins, so a
# family whose keys include another's (SDXL's UNet keys are SD's) comes before it. Chroma's
# transformer has FLUX's double_blocks too (and a distilled_guidance_layer), so it comes first.
MODULES: tuple[ModuleType, ...] = (chroma, flux, sdxl, sd15)
FAMILIES: dict[str, FamilyModule] = {m.NAME: m for m in MODULES}  # type: ignore[misc]
DEFAULT = "sd15"  # kohya.model_family = "auto" when the base model does not tell
KEY = "kohya.model_family"


def family(name: str) -> FamilyModule:
    """The family module ``name``, or a ConfigError naming kohya.model_family and the choices."""
    return pick(FAMILIES, name, KEY)


def title(name: str) -> str:
    return family(name).TITLE


def family_from_keys(keys: list[str]) -> str | None:
    """The family whose checkpoint has these tensor names, None when none claims them."""
    return next((m.NAME for m in FAMILIES.values() if m.owns_keys(keys)), None)


def detect_family(path: str | Path) -> str | None:
    """The family of the base model at ``path``, or None when it cannot be told without loading it.

    A folder is asked of each family; a ``.safetensors`` file is told by the key names in its
    header (nothing else is read). A ``.ckpt`` is a pickle that cannot be inspected without
    loading it, so there ``kohya.model_family`` decides.
    """
    path = Path(path).expanduser()
    if path.is_dir():
        return next((m.NAME for m in FAMILIES.values() if m.owns_folder(path)), None)
    if path.is_file() and path.suffix.lower() == ".safetensors":
        try:
            return family_from_keys(safetensors_keys(path))
        except BuilderError as exc:
            raise BuilderError(f"base model {exc}") from None
    return None


def registry_family(spec: str) -> str | None:
    """The family of a base model given by registry name (builder.weights), before it is fetched."""
    entry = W.REGISTRY.get(spec)
    return entry.family if entry is not None and entry.family in FAMILIES else None


def resolve_family(setting: str, base_model: str | Path | None) -> str:
    """``kohya.model_family`` made definite: "auto" is told from the base model, else DEFAULT.

    ``base_model``: a path, or a registry name (its entry's family).

    A flag that contradicts what the checkpoint's keys say is refused: sd-scripts would
    fail only after loading several GB, with a shape error.
    """
    if setting not in (*FAMILIES, "auto"):
        raise ConfigError(f"{KEY} = {setting!r}: choose auto, {' or '.join(FAMILIES)}")
    found = None
    if base_model and Path(base_model).expanduser().exists():
        found = detect_family(base_model)
    elif base_model:
        found = registry_family(str(base_model))
    if setting == "auto":
        return found or DEFAULT
    if found is not None and found != setting:
        raise ConfigError(
            f"{KEY} = {setting!r}, but the base model {base_model} is {title(found)} "
            f"({FAMILIES[found].TOLD_BY}); set {KEY} = \"{found}\" or \"auto\""
        )
    return setting


def sample_settings(cfg: Config, name: str | None = None) -> SampleDefaults:
    """The family's sampling defaults (family ``name``, else the configured base model's) with
    ``[sample]`` steps, guidance and sampler put over them where set."""
    d = family(name or resolve_family(cfg.kohya.model_family, cfg.paths.base_model)).sample_defaults(
        cfg.paths.base_model or None)
    s = cfg.sample
    return replace(d, steps=s.steps or d.steps, guidance=d.guidance if s.guidance is None else s.guidance,
                   sampler=s.sampler or d.sampler)


def for_pipeline(pipe: Any) -> FamilyModule:
    """The family a loaded diffusers pipeline samples."""
    name = type(pipe).__name__
    for m in FAMILIES.values():
        if name == m.PIPELINE:
            return m
    raise BuilderError(f"{name} is not the pipeline of any model family ({', '.join(FAMILIES)})")


__all__ = [
    "DEFAULT", "FAMILIES", "MODULES", "FamilyModule", "detect_family", "family", "family_from_keys",
    "for_pipeline", "registry_family", "resolve_family", "safetensors_keys", "sample_settings", "title",
]
