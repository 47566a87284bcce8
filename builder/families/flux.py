"""FLUX.1 (dev and schnell): flux_train_network.py, FluxPipeline, 1024 px.

dev and schnell are one family: the same files, script, LoRA names and pipeline. What differs is
read from the transformer itself, as sd-scripts reads it (``flux_utils.analyze_checkpoint_state``:
schnell has no ``guidance_in``): T5's token budget (512 dev, 256 schnell) and the sampler's
defaults. Chroma (builder/families/chroma.py) is a family of its own: no CLIP-L, its own
training flags, presets and pipeline.

The base model is four single files (UPSTREAM_FACTS §8), each told by its tensor names, not its
file name:

- the transformer in Black Forest Labs' layout (``double_blocks.*``/``single_blocks.*``, e.g.
  ``flux1-dev.safetensors``); a diffusers-layout one (``transformer_blocks.*``) is refused:
  sd-scripts loads only the BFL single file;
- ``ae.safetensors`` (BFL's autoencoder, ``encoder.down.*``);
- ``clip_l.safetensors`` (``text_model.*``);
- ``t5xxl_fp16.safetensors`` or an fp8 one (``encoder.block.*``).

``--base-model`` names them as a folder holding them, the transformer file (the others beside
it), registry names (``flux1-dev``: its default companions are fetched too), or a comma list of
any of these (``flux1-dev,t5xxl_fp8_e4m3fn``). A set made of parts in different places is
written as a small ``flux_base.json`` folder (builder.base_model) that this module reads.

Late checks (``FluxNetworkTrainer.assert_extra_args`` and ``load_target_model``, minutes into a
run): bucket steps of 64 (the base trainer's ``verify_bucket_reso_steps(64)`` runs first), the
caption-caching rules SDXL has, ``blocks_to_swap`` with ``cpu_offload_checkpointing``, and with
``fp8_base`` a checkpoint in an fp8 format other than float8_e4m3fn (``ValueError: Unsupported fp8
model dtype``). T5 in ComfyUI's "scaled" fp8 (``scaled_fp8`` tensor) is refused too: sd-scripts'
docs say to use the fp8 file "without scaled".
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from builder.caption.clip_tokenizer import CLIP_CACHE_NAME
from builder.caption.t5_tokenizer import T5_CACHE_NAME
from builder.config import Config
from builder.errors import BuilderError, ConfigError
from builder.families import flux_models as M
from builder.families.common import (
    SampleDefaults,
    check_bucket_steps,
    check_cached_captions,
    pipeline_class,
    safetensors_dtypes,
    safetensors_keys,
)

NAME = "flux"
TITLE = "FLUX.1"
TOLD_BY = "its transformer has FLUX.1's double_blocks/single_blocks (Black Forest Labs' layout)"
RESOLUTION = 1024
BUCKET_STEP = 64  # NetworkTrainer.assert_extra_args: verify_bucket_reso_steps(64), before FLUX's own 32
SCRIPT = "flux_train_network.py"
SCHEMA_SECTIONS = ("train_network_arguments", "flux_train_network_arguments")
TOKENIZERS = (CLIP_CACHE_NAME, T5_CACHE_NAME)
PRESET = "character_flux"
# T5 reads sentences: a sentence captioner (Florence-2) by default, and captions are never shuffled.
SENTENCE_CAPTIONS = True
# kohya_ss 45088f0 lora_gui: the flux1 checkbox runs flux_train_network.py and wants LoRA_type
# "Flux1" (networks.lora_flux); model_type is emitted only for chroma.
GUI_FIELDS: dict[str, Any] = {"sdxl": False, "flux1_checkbox": True, "LoRA_type": "Flux1", "model_type": "flux"}
GUI_RENAMES = {
    "cache_text_encoder_outputs": "flux1_cache_text_encoder_outputs",
    "cache_text_encoder_outputs_to_disk": "flux1_cache_text_encoder_outputs_to_disk",
}
BASE_FILES = ("four .safetensors files: the transformer in Black Forest Labs' layout (flux1-dev.safetensors), "
              "ae.safetensors, clip_l.safetensors and t5xxl_fp16.safetensors (or an fp8 T5)")
PIPELINE = "FluxPipeline"
PIPELINE_KWARGS: dict[str, Any] = {}
CONFIG_REPO = "black-forest-labs/FLUX.1-dev"
CONFIG_FOLDERS = ("transformer", "vae", "text_encoder", "tokenizer", "scheduler", "text_encoder_2", "tokenizer_2")
LORA_TEXT_PREFIXES = ("lora_te1_", "lora_te3_")  # networks/lora_flux.py: CLIP-L, T5
LORA_TRAINED_FOR = "FLUX.1"

T5_MAX_TOKENS = {"dev": 512, "schnell": 256}  # flux_train_network.get_tokenize_strategy's defaults
GUIDANCE = {"dev": 1.0, "schnell": 1.0}  # docs: "for training, specify 1.0" (schnell has no guidance_in)
ROLES = ("transformer", "ae", "clip_l", "t5xxl")
ROLE_ARGS = {"transformer": "pretrained_model_name_or_path", "ae": "ae", "clip_l": "clip_l", "t5xxl": "t5xxl"}
ROLE_FILES = {"transformer": "e.g. flux1-dev.safetensors or Chroma1-HD.safetensors", "ae": M.AE_FILE, "clip_l": M.CLIP_FILE, "t5xxl": M.T5_FILE}
# A registry transformer's default companions (builder.weights), fetched with it.
REGISTRY_COMPANIONS = {
    "flux1-dev": ("flux1-dev-ae", "flux-clip-l", "t5xxl-fp16"),
    "flux1-schnell": ("flux1-ae", "flux-clip-l", "t5xxl-fp16"),
    "chroma1-hd": ("flux1-ae", "t5xxl-fp16"),
}
MANIFEST = "flux_base.json"  # a set whose parts live in different folders (builder.base_model)
# fp8 dtypes (safetensors names) sd-scripts' load_target_model refuses with fp8_base
REFUSED_FP8 = {"F8_E5M2": "float8_e5m2", "F8_E4M3FNUZ": "float8_e4m3fnuz", "F8_E5M2FNUZ": "float8_e5m2fnuz"}


# ---- the parts, told by their tensor names ---------------------------------------------------

def is_diffusers_transformer(keys: list[str]) -> bool:
    return any(k.startswith("single_transformer_blocks.") for k in keys) and any(
        k.startswith("transformer_blocks.") for k in keys)


COMFY_PREFIX = "model.diffusion_model."  # a ComfyUI-saved transformer; analyze_checkpoint_state strips it


def _bfl(keys: list[str]) -> list[str]:
    return [k.removeprefix(COMFY_PREFIX) for k in keys]


def role_of(keys: list[str]) -> str | None:
    """Which part of a FLUX/Chroma base a single file's tensor names make it, None for none."""
    keys = _bfl(keys)
    if any(k.startswith(("double_blocks.", "single_blocks.")) for k in keys):
        return "transformer"
    if any(k.startswith("encoder.down.") for k in keys) and any(k.startswith("decoder.up.") for k in keys):
        return "ae"
    if any(k.startswith("encoder.block.") for k in keys):
        return "t5xxl"
    if any(k.startswith("text_model.encoder.layers.") for k in keys):
        return "clip_l"
    return None


def is_chroma(keys: list[str]) -> bool:
    keys = _bfl(keys)
    return any(k.startswith("distilled_guidance_layer.") for k in keys)


def variant_of(keys: list[str]) -> str:
    """"chroma", "schnell" (no guidance_in: analyze_checkpoint_state) or "dev"."""
    if is_chroma(keys):
        return "chroma"
    return "dev" if any(k.removeprefix(COMFY_PREFIX).startswith("guidance_in.") for k in keys) else "schnell"


def refuse_diffusers(path: Path) -> BuilderError:
    return BuilderError(
        f"{path} is a FLUX transformer in diffusers' layout (transformer_blocks.*); sd-scripts' "
        "flux_train_network.py loads only Black Forest Labs' single file (\"the weights in the subfolder are "
        "in Diffusers format and cannot be used\"): use flux1-dev.safetensors / flux1-schnell.safetensors "
        "from the top of the model's Hugging Face repo"
    )


def owns_keys(keys: list[str]) -> bool:
    if is_diffusers_transformer(keys) and any(k.startswith("x_embedder.") for k in keys):
        raise BuilderError(
            "the base model is a FLUX transformer in diffusers' layout (transformer_blocks.*); sd-scripts "
            "needs Black Forest Labs' single file (flux1-dev.safetensors)"
        )
    return role_of(keys) == "transformer" and not is_chroma(keys)


def _folder_files(folder: Path) -> dict[str, tuple[Path, list[str]]]:
    """The FLUX/Chroma parts among a folder's top-level .safetensors files, by role (one each)."""
    found: dict[str, tuple[Path, list[str]]] = {}
    for path in sorted(folder.glob("*.safetensors")):
        try:
            keys = safetensors_keys(path)
        except BuilderError:
            continue
        if is_diffusers_transformer(keys):
            raise refuse_diffusers(path)
        role = role_of(keys)
        if role is None:
            continue
        if role in found:
            raise BuilderError(
                f"{folder} holds two {role} files ({found[role][0].name}, {path.name}); keep one, or name the "
                f"parts with --base-model a,b,c,d"
            )
        found[role] = (path, keys)
    return found


@dataclass(frozen=True)
class FluxBase:
    """The files of a FLUX.1 or Chroma base, each checked to be the part it is named for."""

    transformer: Path
    ae: Path
    clip_l: Path | None  # None for Chroma
    t5xxl: Path
    variant: str  # dev | schnell | chroma

    @property
    def family(self) -> str:
        return "chroma" if self.variant == "chroma" else NAME

    def train_args(self) -> dict[str, str]:
        args = {ROLE_ARGS[r]: str(p.resolve()) for r in ROLES if (p := getattr(self, r)) is not None}
        return args


def _manifest_parts(folder: Path) -> dict[str, Path] | None:
    path = folder / MANIFEST
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return {role: Path(data[role]) for role in ROLES if data.get(role)}
    except (OSError, ValueError, TypeError, AttributeError) as exc:
        raise BuilderError(f"{path}: not a FLUX base list ({exc}); delete it and give --base-model again") from None


def write_manifest(folder: Path, parts: dict[str, Path]) -> Path:
    from builder.io import atomic_write_json

    atomic_write_json(folder / MANIFEST, {role: str(parts[role].resolve()) for role in ROLES if role in parts})
    return folder


def find_parts(path: Path) -> dict[str, tuple[Path, list[str]]]:
    """The parts a base-model path names: a folder (or flux_base.json folder), or the transformer file."""
    path = Path(path).expanduser()
    if path.is_dir():
        listed = _manifest_parts(path)
        if listed is None:
            return _folder_files(path)
        parts = {}
        for role, file in listed.items():
            if not file.is_file():
                raise BuilderError(f"{path / MANIFEST}: its {role} {file} does not exist; give --base-model again")
            parts[role] = (file, safetensors_keys(file))
        return parts
    keys = safetensors_keys(path)
    if is_diffusers_transformer(keys):
        raise refuse_diffusers(path)
    if role_of(keys) != "transformer":
        raise BuilderError(f"{path} is not a FLUX/Chroma transformer (no double_blocks.*/single_blocks.* tensors)")
    beside = {r: v for r, v in _folder_files(path.parent).items() if r != "transformer"}
    return {"transformer": (path, keys), **beside}


def needed_roles(variant: str) -> tuple[str, ...]:
    return tuple(r for r in ROLES if not (r == "clip_l" and variant == "chroma"))


def base_set(path: str | Path) -> FluxBase:
    """The FLUX/Chroma base at ``path``, every part present; else a BuilderError naming the part and the fix."""
    path = Path(path).expanduser()
    parts = find_parts(path)
    if "transformer" not in parts:
        raise BuilderError(
            f"{path}: no FLUX transformer (a .safetensors with double_blocks.*/single_blocks.*, e.g. "
            "flux1-dev.safetensors) here; put it in the folder or name it with --base-model"
        )
    transformer, keys = parts["transformer"]
    variant = variant_of(keys)
    where = path if path.is_dir() else path.parent
    missing = [r for r in needed_roles(variant) if r not in parts]
    if missing:
        names = ", ".join(f"{r} ({_fetch_hint(r)})" for r in missing)
        raise BuilderError(
            f"the FLUX base {transformer} ({'Chroma' if variant == 'chroma' else 'FLUX.1 ' + variant}) has no "
            f"{names}: put the file(s) in {where}, or name every part with --base-model "
            f"{transformer},<{'>,<'.join(missing)}> (a path or a registry name each)"
        )
    get = lambda r: parts[r][0] if r in parts and r in needed_roles(variant) else None  # noqa: E731
    return FluxBase(transformer, get("ae"), get("clip_l"), get("t5xxl"), variant)  # type: ignore[arg-type]


def _fetch_hint(role: str) -> str:
    return {
        "ae": "ae.safetensors from black-forest-labs/FLUX.1-schnell or -dev; registry name flux1-ae",
        "clip_l": "clip_l.safetensors from comfyanonymous/flux_text_encoders; registry name flux-clip-l",
        "t5xxl": "t5xxl_fp16.safetensors from comfyanonymous/flux_text_encoders; registry name t5xxl-fp16",
    }[role]


def refuse_diffusers_folder(path: Path) -> None:
    if "Flux" in (pipeline_class(path) or "") or "Chroma" in (pipeline_class(path) or ""):
        raise BuilderError(
            f"{path} is a diffusers FLUX/Chroma folder; sd-scripts' flux_train_network.py needs Black Forest "
            "Labs' single files: the transformer (flux1-dev.safetensors), ae.safetensors, clip_l.safetensors and "
            "t5xxl_fp16.safetensors, in one folder"
        )


def owns_folder(path: Path) -> bool:
    refuse_diffusers_folder(path)
    found = find_parts(path)
    return "transformer" in found and not is_chroma(found["transformer"][1])


# ---- training ---------------------------------------------------------------------------------

def base_of(cfg: Config) -> FluxBase:
    if not cfg.paths.base_model:
        raise ConfigError(f"a FLUX base model is needed: pass --base-model with {BASE_FILES}")
    return base_set(cfg.paths.base_model)


def t5_budget(base_model: str | Path) -> int:
    """t5xxl_max_token_length for this base: 256 for schnell, else 512 (also when it cannot be told yet)."""
    try:
        return T5_MAX_TOKENS.get(base_set(base_model).variant, 512) if base_model else 512
    except BuilderError:
        return 512


def derived_train_args(cfg: Config) -> dict[str, Any]:
    base = base_of(cfg)
    return {
        **base.train_args(),
        "network_module": "networks.lora_flux",
        "mixed_precision": "bf16",  # FLUX is trained and saved in bf16; fp16 overflows in its activations
        "save_precision": "bf16",
        "guidance_scale": GUIDANCE.get(base.variant, 1.0),
        "timestep_sampling": "flux_shift",  # docs' recommendation for FLUX.1
        "model_prediction_type": "raw",
        "discrete_flow_shift": 3.0,  # sd-scripts' default (read with timestep_sampling = shift)
        "t5xxl_max_token_length": T5_MAX_TOKENS.get(base.variant, 512),
    }


def check_fp8(train: dict[str, Any], origin: str) -> None:
    """With fp8_base, load_target_model keeps an fp8 file as it is and refuses every fp8 but e4m3fn."""
    if not (train.get("fp8_base") or train.get("fp8_base_unet")):
        return
    for arg in ("pretrained_model_name_or_path", "t5xxl"):
        if arg == "t5xxl" and train.get("fp8_base_unet"):
            continue  # fp8_base_unet loads T5 in the training dtype
        file = Path(str(train.get(arg, "")))
        if not file.is_file():
            continue
        dtypes = safetensors_dtypes(file)
        bad = sorted({REFUSED_FP8[d] for d in dtypes.values() if d in REFUSED_FP8})
        if bad:
            raise ConfigError(
                f"{origin}: {file} is stored as {', '.join(bad)}; with fp8_base sd-scripts loads it as it is and "
                "refuses it (\"Unsupported fp8 model dtype\"): use the bf16/fp16 file or a float8_e4m3fn one "
                "(e.g. t5xxl_fp8_e4m3fn.safetensors), or set fp8_base = false"
            )
        if arg == "t5xxl" and "scaled_fp8" in dtypes:
            raise ConfigError(
                f"{origin}: {file} is ComfyUI's scaled fp8 T5 (a scaled_fp8 tensor), which sd-scripts does not "
                "read (its docs: use t5xxl_fp8_e4m3fn.safetensors \"without scaled\"); use t5xxl_fp16.safetensors "
                "or t5xxl_fp8_e4m3fn.safetensors"
            )


def check_parts(train: dict[str, Any], origin: str, chroma: bool) -> None:
    """Every file argument is there and is the part it is given as."""
    roles = needed_roles("chroma" if chroma else "dev")
    for role in roles:
        arg = ROLE_ARGS[role]
        value = train.get(arg)
        if not value:
            raise ConfigError(f"{origin}: {arg} is not set; {SCRIPT} needs the {role} file ({_fetch_hint(role) if role != 'transformer' else ROLE_FILES[role]})")
        file = Path(str(value))
        if not file.is_file():
            raise ConfigError(f"{origin}: {arg} = {file} does not exist; put the file there or give --base-model again")
        keys = safetensors_keys(file)
        if role == "transformer" and is_diffusers_transformer(keys):
            raise refuse_diffusers(file)
        if role_of(keys) != role:
            raise ConfigError(f"{origin}: {arg} = {file} is not a {role} file (its tensor names say {role_of(keys) or 'none of the FLUX parts'})")


def check_common(train: dict[str, Any], dataset_doc: dict[str, Any], origin: str, title: str) -> None:
    """What FLUX.1 and Chroma share (FluxNetworkTrainer.assert_extra_args, load_target_model)."""
    if train.get("v2") or train.get("v_parameterization"):
        raise ConfigError(f"{origin}: v2 / v_parameterization are SD 2.x flags; {SCRIPT} does not use them")
    if train.get("blocks_to_swap") and train.get("cpu_offload_checkpointing"):
        raise ConfigError(
            f"{origin}: blocks_to_swap cannot be used with cpu_offload_checkpointing ({SCRIPT} refuses the pair); "
            "drop one of them"
        )
    check_bucket_steps(train, dataset_doc, origin, title, BUCKET_STEP, SCRIPT)
    check_cached_captions(train, dataset_doc, origin, SCRIPT)
    check_fp8(train, origin)


def check_train_args(train: dict[str, Any], dataset_doc: dict[str, Any], origin: str) -> None:
    if train.get("model_type", "flux") != "flux":
        raise ConfigError(f"{origin}: model_type = {train['model_type']!r} trains Chroma; set kohya.model_family = \"chroma\"")
    check_parts(train, origin, chroma=False)
    transformer = Path(str(train["pretrained_model_name_or_path"]))
    if is_chroma(safetensors_keys(transformer)):
        raise ConfigError(f"{origin}: {transformer} is a Chroma transformer; set kohya.model_family = \"chroma\"")
    check_common(train, dataset_doc, origin, TITLE)


# ---- sampling and the random base: builder.families.flux_models -------------------------------

def lora_targets(pipe: Any) -> dict[str, Any]:
    return M.lora_targets(pipe)


def load_pipeline(path: Path, cfg: Config, dtype: Any) -> Any:
    base = base_set(path)
    return M.load_pipeline(base, dtype, M.tokenizer_sources(base, cfg.sample.model_config))


def sample_defaults(base_model: str | Path | None) -> SampleDefaults:
    """dev's, or schnell's when the base model's transformer is schnell (no guidance_in)."""
    if base_model and Path(base_model).expanduser().exists():
        return M.SAMPLE_DEFAULTS[base_set(base_model).variant]
    return M.SAMPLE_DEFAULTS["schnell" if "schnell" in str(base_model or "") else "dev"]  # a registry name


def random_base_cached(weights_dir: str, seed: int) -> Path | None:
    return M.random_base_cached(weights_dir, seed, "dev")


def make_random_base(weights_dir: str, seed: int) -> Path:
    return M.make_random_base(weights_dir, seed, "dev")
