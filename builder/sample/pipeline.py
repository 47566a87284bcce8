"""The diffusers side of sampling: load the base model, check and apply kohya LoRAs, render.

A base model is either one ``.safetensors``/``.ckpt`` file (the way SD 1.5 and SDXL
checkpoints are shared; loaded with ``from_single_file``) or a diffusers folder
(``model_index.json``; ``from_pretrained``), loaded with the pipeline of its model family
(builder.families: ``StableDiffusionPipeline`` for SD 1.5, ``StableDiffusionXLPipeline`` for
SDXL). LoRAs are the files sd-scripts writes, in its own key layout (``lora_unet_<module path
with _>.lora_down.weight`` ...; text encoders ``lora_te_``, for SDXL ``lora_te1_`` and
``lora_te2_``; each family maps these names onto its pipeline); diffusers'
``load_lora_weights`` converts that layout itself, and each file is checked against the
loaded UNet and text encoders first so a LoRA for another base model fails with a reason
instead of being applied to nothing.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import diffusers
import numpy as np
import torch
from diffusers import DiffusionPipeline

from builder import families
from builder.base_model import check_local
from builder.config import Config
from builder.device import model_dtype
from builder.errors import BuilderError
from builder.families import detect_family, resolve_family
from builder.sample.prompts import SAMPLERS, SamplePrompt

Pipeline = DiffusionPipeline  # the family's pipeline class (builder.families: PIPELINE)

SET_BASE_MODEL = (
    "pass --base-model FILE|DIR or set [paths] base_model in the config: an SD 1.5 or SDXL "
    ".safetensors/.ckpt checkpoint (e.g. v1-5-pruned-emaonly.safetensors, sd_xl_base_1.0.safetensors) "
    "or a diffusers folder"
)


def single_file_config_help(family: str) -> str:
    fam = families.family(family)
    return (
        f"from_single_file reads the component configs of the model family (for {fam.TITLE}: "
        f"{fam.CONFIG_REPO}, a few kB of JSON and the tokenizers) from the Hugging Face Hub unless "
        "[sample] model_config (--model-config) names a local diffusers folder holding them "
        f"(model_index.json, {', '.join(f + '/' for f in fam.CONFIG_FOLDERS)} configs). With no internet, point "
        "--model-config at such a folder, or run once online so the Hugging Face cache keeps them"
    )


def resolve_base_model(cfg: Config) -> Path:
    """The configured base model path, checked before anything slow happens."""
    if not cfg.paths.base_model:
        raise BuilderError(f"no base model configured: {SET_BASE_MODEL}")
    path = Path(cfg.paths.base_model).expanduser()
    if not path.exists():
        raise BuilderError(f"base model {path} does not exist ({SET_BASE_MODEL})")
    return check_local(path)


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Hide diffusers' and transformers' tqdm bars while loading: they tear the rich progress display."""
    from diffusers.utils import logging as dlog
    from transformers.utils import logging as tlog

    was = [(lib, lib.is_progress_bar_enabled()) for lib in (dlog, tlog)]
    for lib, _ in was:
        lib.disable_progress_bar()
    try:
        yield
    finally:
        for lib, enabled in was:
            if enabled:
                lib.enable_progress_bar()


def pipeline_family(path: Path, cfg: Config) -> str:
    """The base model's own family where its files tell; kohya.model_family for a .ckpt."""
    return detect_family(path) or resolve_family(cfg.kohya.model_family, path)


def load_pipeline(path: Path, cfg: Config, device: torch.device) -> Pipeline:
    family = pipeline_family(path, cfg)
    fam = families.family(family)
    with _quiet():
        try:
            pipe = fam.load_pipeline(path, cfg, model_dtype(device))
        except BuilderError:
            raise
        except Exception as exc:  # diffusers raises OSError, ValueError, hub errors... for one cause: unusable input
            hint = f". {single_file_config_help(family)}" if path.is_file() else ""
            raise BuilderError(f"cannot load base model {path} ({fam.TITLE}): {exc}{hint}") from exc
    pipe.set_progress_bar_config(disable=True)  # the sampler draws one rich bar over all renders
    return pipe.to(device)


def _read_lora(path: Path) -> dict[str, torch.Tensor]:
    try:
        if path.suffix.lower() == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # safetensors and torch raise many types for a corrupt file
        raise BuilderError(f"LoRA file {path} cannot be read: {exc}") from None
    if not isinstance(obj, dict):
        raise BuilderError(f"LoRA file {path} holds a {type(obj).__name__}, not a state dict")
    return obj


def _expected_shapes(module: torch.nn.Module, rank: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
    if isinstance(module, torch.nn.Conv2d):
        up_kernel = (1, 1)
        return (rank, module.in_channels, *module.kernel_size), (module.out_channels, rank, *up_kernel)
    return (rank, module.in_features), (module.out_features, rank)


def _shown(items: list[str]) -> str:
    return ", ".join(items[:3]) + (f" and {len(items) - 3} more" if len(items) > 3 else "")


def _trained_for(names: list[str]) -> str:
    """The family whose LoRA prefixes the most of these names' prefixes are (SDXL: lora_te1_ and lora_te2_)."""
    found = {n[: n.index("_", len("lora_te")) + 1] for n in names if n.startswith("lora_te") and "_" in n[len("lora_te"):]}
    score = {m.LORA_TRAINED_FOR: len(found & set(m.LORA_TEXT_PREFIXES)) for m in families.FAMILIES.values()}
    best = max(score, key=lambda k: score[k])
    return best if score[best] else "another model"


def check_lora(path: Path, pipe: Pipeline) -> int:
    """Refuse a LoRA that is not kohya-format or does not fit this UNet/text encoder; return its module count."""
    path = Path(path)
    if not path.is_file():
        raise BuilderError(f"LoRA file {path} does not exist")
    sd = _read_lora(path)
    if not sd:
        raise BuilderError(f"LoRA file {path} is empty")
    modules: dict[str, dict[str, torch.Tensor]] = {}
    foreign = []
    for key, tensor in sd.items():
        name, _, part = key.partition(".")
        if not name.startswith(("lora_unet_", "lora_te")) or part not in (
            "lora_down.weight", "lora_up.weight", "alpha", "dora_scale"
        ):
            foreign.append(key)
            continue
        modules.setdefault(name, {})[part] = tensor
    if foreign:
        raise BuilderError(
            f"LoRA file {path} is not in kohya sd-scripts' key format (lora_unet_*/lora_te_*/lora_te1_*/lora_te2_* with "
            f".lora_down.weight, .lora_up.weight, .alpha); unexpected keys: {_shown(foreign)}"
        )
    family = families.for_pipeline(pipe)
    targets = family.lora_targets(pipe)
    unknown = [name for name in modules if name not in targets]
    if unknown:
        what = "nothing" if len(unknown) == len(modules) else f"{len(unknown)} of its {len(modules)} modules"
        base = family.TITLE
        lora = _trained_for(list(modules))
        raise BuilderError(
            f"LoRA file {path} does not match this base model's UNet/text encoders ({what} found, e.g. "
            f"{_shown(unknown)}); it was trained for {lora}, the base model is {base}"
        )
    misshapen = []
    for name, parts in modules.items():
        if "lora_down.weight" not in parts or "lora_up.weight" not in parts:
            misshapen.append(f"{name} (needs both lora_down and lora_up)")
            continue
        rank = parts["lora_down.weight"].shape[0]
        down, up = _expected_shapes(targets[name], rank)
        got = (tuple(parts["lora_down.weight"].shape), tuple(parts["lora_up.weight"].shape))
        if got != (down, up):
            misshapen.append(f"{name} (file {got[0]}/{got[1]}, model {down}/{up})")
    if misshapen:
        raise BuilderError(f"LoRA file {path} has weights that do not fit this base model: {_shown(misshapen)}")
    return len(modules)


@contextlib.contextmanager
def lora_applied(pipe: Pipeline, path: Path | None) -> Iterator[None]:
    """Apply one LoRA for the duration of the block, then remove it completely.

    ``unload_lora_weights`` takes the LoRA layers out again (rather than merging them in),
    so the next epoch and the control row see the untouched base weights: epochs never stack.
    """
    if path is None:
        yield
        return
    with _quiet():
        try:
            pipe.load_lora_weights(str(path), adapter_name="epoch")
        except Exception as exc:  # diffusers/peft raise ValueError, KeyError, RuntimeError for a bad file
            pipe.unload_lora_weights()
            raise BuilderError(f"LoRA file {path} could not be applied: {exc}") from exc
    try:
        yield
    finally:
        pipe.unload_lora_weights()


def set_sampler(pipe: Pipeline, base_config: dict, sampler: str) -> None:
    """``sampler`` (a kohya name) as the pipeline's scheduler; "" keeps the pipeline's own (FLUX, Chroma)."""
    if not sampler:
        return
    class_name, extra = SAMPLERS[sampler]
    if type(pipe.scheduler).__name__ == class_name and all(pipe.scheduler.config.get(k) == v for k, v in extra.items()):
        return
    pipe.scheduler = getattr(diffusers, class_name).from_config(base_config, **extra)


def render(pipe: Pipeline, prompt: SamplePrompt, seed: int, base_scheduler_config: dict) -> np.ndarray:
    """One image as uint8 BGR; the seed drives a CPU generator so CPU and GPU runs start from the same noise."""
    set_sampler(pipe, base_scheduler_config, prompt.sampler)
    generator = torch.Generator("cpu").manual_seed(seed)
    with torch.inference_mode():
        out = pipe(
            prompt=prompt.text,
            negative_prompt=prompt.negative or None,
            width=prompt.width,
            height=prompt.height,
            num_inference_steps=prompt.steps,
            guidance_scale=prompt.guidance,
            generator=generator,
            output_type="np",
            **dict(prompt.call_kwargs),
        )
    rgb = np.clip(np.nan_to_num(out.images[0]), 0.0, 1.0)
    return np.ascontiguousarray((rgb * 255.0 + 0.5).astype(np.uint8)[:, :, ::-1])
