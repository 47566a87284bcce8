"""What the family modules share: reading a checkpoint's header, a diffusers folder's
pipeline class, and naming a model's modules the way sd-scripts' LoRAs name them."""

from __future__ import annotations

import json
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from builder.errors import BuilderError, ConfigError

if TYPE_CHECKING:
    import torch

    from builder.config import Config

MAX_HEADER = 100 << 20  # the safetensors format's own limit on the header size
COMPLETE = "model_index.json"  # a diffusers folder's file, written last: a folder with it is a complete one


def safetensors_keys(path: Path) -> list[str]:
    """The tensor names of a .safetensors file, read from its header alone."""
    return [k for k in safetensors_header(path) if k != "__metadata__"]


def safetensors_dtypes(path: Path) -> dict[str, str]:
    """Each tensor's dtype as the header names it ("BF16", "F8_E4M3"), read from the header alone."""
    return {k: str(v.get("dtype", "")) for k, v in safetensors_header(path).items()
            if k != "__metadata__" and isinstance(v, dict)}


def safetensors_header(path: Path) -> dict[str, Any]:
    """A .safetensors file's JSON header."""
    try:
        with open(path, "rb") as fh:
            raw = fh.read(8)
            if len(raw) != 8:
                raise BuilderError(f"{path}: too short to be a .safetensors file")
            (size,) = struct.unpack("<Q", raw)
            if size > MAX_HEADER:
                raise BuilderError(f"{path}: not a .safetensors file (header size {size})")
            header = json.loads(fh.read(size).decode("utf-8"))
    except OSError as exc:
        raise BuilderError(f"{path}: cannot read ({exc.strerror or exc})") from None
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise BuilderError(f"{path}: not a .safetensors file (its header is not JSON)") from None
    if not isinstance(header, dict):
        raise BuilderError(f"{path}: not a .safetensors file (its header is not a JSON object)")
    return header


def pipeline_class(folder: Path) -> str | None:
    """A diffusers folder's ``model_index.json`` ``_class_name``; None without a readable one."""
    index = folder / "model_index.json"
    if not index.is_file():
        return None
    try:
        name = json.loads(index.read_text(encoding="utf-8")).get("_class_name", "")
    except (OSError, ValueError, AttributeError):
        return None
    return name if isinstance(name, str) else None


def cached(folder: Path) -> Path | None:
    """``folder`` when it is a complete diffusers folder (its model_index.json written), else None."""
    return folder if (folder / COMPLETE).is_file() else None


def kohya_module_names(
    prefix: str, root: torch.nn.Module | None, alias: Callable[[str], str | None] | None = None
) -> dict[str, torch.nn.Module]:
    """sd-scripts' name for every Linear/Conv2d under ``root``: ``prefix`` + module path, dots as
    underscores; ``alias`` gives a second path a module also answers to (SDXL's SGM names)."""
    import torch

    targets: dict[str, torch.nn.Module] = {}
    if root is None:
        return targets
    text = not prefix.startswith("lora_unet_")
    for name, module in root.named_modules():
        if isinstance(module, (torch.nn.Linear, torch.nn.Conv2d)):
            key = name.replace(".", "_")
            targets[prefix + key] = module
            if alias is not None and (other := alias(name)):
                targets[prefix + other.replace(".", "_")] = module
            if text and not hasattr(root, "text_model"):
                # sd-scripts' transformers 4.x nests CLIP under text_model; transformers 5 does not.
                targets[prefix + "text_model_" + key] = module
    return targets


# ---- checks sd-scripts makes only after loading the models (SDXL's, and any family that caches
# its text-encoder outputs) ------------------------------------------------------------------

# BaseSubset.is_text_encoder_output_cacheable: what varies a caption between steps.
CAPTION_VARIATION = {
    "shuffle_caption": "kohya.shuffle_caption = false",
    "caption_dropout_rate": "caption_dropout_rate = 0",
    "token_warmup_step": "token_warmup_step = 0",
    "caption_tag_dropout_rate": "caption_tag_dropout_rate = 0",
}


def caches_text_encoder_outputs(train: dict[str, Any]) -> bool:
    return bool(train.get("cache_text_encoder_outputs") or train.get("cache_text_encoder_outputs_to_disk"))


def subsets(dataset_doc: dict[str, Any]) -> list[dict[str, Any]]:
    """Each subset's settings layered as sd-scripts' BlueprintGenerator layers them (subset over dataset over general)."""
    general = dataset_doc.get("general", {})
    layered = []
    for ds in dataset_doc.get("datasets", []):
        ds_level = {k: v for k, v in ds.items() if k != "subsets"}
        layered += [{**general, **ds_level, **subset} for subset in ds.get("subsets", [])]
    return layered


def check_bucket_steps(
    train: dict[str, Any], dataset_doc: dict[str, Any], origin: str, title: str, step: int, script: str
) -> None:
    """Every dataset's bucket_reso_steps is a multiple of ``step`` (the script's verify_bucket_reso_steps)."""
    # The argparse namespace (config.toml) is the blueprint's last fallback, under every level.
    for subset in subsets(dataset_doc):
        steps = subset.get("bucket_reso_steps", train.get("bucket_reso_steps", 64))
        if steps % step:
            raise ConfigError(
                f"{origin}: bucket_reso_steps = {steps}; {title} needs a multiple of {step} "
                f"({script}: verify_bucket_reso_steps({step}))"
            )


def check_cached_captions(train: dict[str, Any], dataset_doc: dict[str, Any], origin: str, script: str) -> None:
    """``cache_text_encoder_outputs`` (implied by ``..._to_disk``) stores one encoding per caption, so the
    text encoders cannot be trained and no subset may change its caption from step to step."""
    if not caches_text_encoder_outputs(train):
        return
    why = "cache_text_encoder_outputs stores one text-encoder output per caption"
    if not train.get("network_train_unet_only"):
        raise ConfigError(
            f"{origin}: {why}, so the text encoders cannot be trained: set network_train_unet_only = true, "
            f"or cache_text_encoder_outputs = false ({script} refuses the combination)"
        )
    for subset in subsets(dataset_doc):
        varied = [k for k in CAPTION_VARIATION if subset.get(k, train.get(k, 0))]
        if varied:
            fixes = " and ".join(CAPTION_VARIATION[k] for k in varied)
            raise ConfigError(
                f"{origin}: {why}, so captions cannot change between steps, but {', '.join(varied)} "
                f"{'is' if len(varied) == 1 else 'are'} on for {subset.get('image_dir', 'a subset')}: set {fixes}, "
                f"or cache_text_encoder_outputs = false ({script} refuses the combination)"
            )


# ---- sampling ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class SampleDefaults:
    """A family's sampling defaults, for what ``[sample]`` and a prompt line leave unset."""

    steps: int
    guidance: float  # the pipeline's guidance_scale: CFG for SD and Chroma, FLUX.1's distilled guidance
    sampler: str  # a kohya sampler name; "": the pipeline's own scheduler, and --ss is ignored (sd-scripts' FLUX)
    guidance_options: tuple[str, ...] = ("l", "g")  # the prompt-line options (sd-scripts) that set guidance
    line_extra: str = ""  # options every sample_prompts.txt line needs (Chroma: --g 0)
    call_kwargs: dict[str, Any] = field(default_factory=dict)  # more arguments for the pipeline's __call__


def load_diffusers(pipeline: str, kwargs: dict[str, Any], path: Path, model_config: str, dtype: torch.dtype) -> Any:
    """A diffusers folder (``from_pretrained``) or one checkpoint file (``from_single_file``, with the
    component configs from ``model_config``: a local folder, a hub repo id, or "" for the default)."""
    import diffusers

    cls = getattr(diffusers, pipeline)
    if path.is_dir():
        return cls.from_pretrained(path, local_files_only=True, dtype=dtype, **kwargs)
    config = model_config or None
    if config and not Path(config).is_dir() and (config.startswith((".", "/", "~")) or config.count("/") != 1):
        raise BuilderError(f"[sample] model_config {config} is neither a folder nor a Hugging Face repo id")
    return cls.from_single_file(str(path), config=config, local_files_only=bool(config and Path(config).is_dir()),
                                dtype=dtype, **kwargs)


def diffusers_loader(pipeline: str, kwargs: dict[str, Any]) -> Callable[[Path, Config, torch.dtype], Any]:
    """A family's ``load_pipeline`` for a base that is a diffusers folder or one checkpoint (SD 1.5, SDXL)."""
    return lambda path, cfg, dtype: load_diffusers(pipeline, kwargs, path, cfg.sample.model_config, dtype)
