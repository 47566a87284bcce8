"""Which Stable Diffusion family a base model belongs to: SD 1.5 or SDXL.

Told from the model itself where that is cheap: a single ``.safetensors`` file by the key
names in its header (the JSON before the tensors; nothing else is read), a diffusers
folder by its pipeline class and a ``text_encoder_2/`` folder. SDXL's second text encoder
(OpenCLIP bigG) is what sets it apart: ``conditioner.embedders.1.*`` in the original SGM
layout. A ``.ckpt`` is a pickle that cannot be inspected without loading it, so there
``kohya.model_family`` decides.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Literal

from builder import weights as W
from builder.errors import BuilderError, ConfigError

Family = Literal["sd15", "sdxl"]
FAMILIES: tuple[Family, ...] = ("sd15", "sdxl")
NAMES = {"sd15": "SD 1.5", "sdxl": "SDXL"}
# Native training/sampling resolution of each family (sd-scripts' docs; SDXL's is 1024x1024).
RESOLUTION: dict[str, int] = {"sd15": 512, "sdxl": 1024}

SDXL_KEY_PREFIX = "conditioner.embedders.1."  # OpenCLIP bigG, SDXL's second text encoder
SD2_KEY_PREFIX = "cond_stage_model.model."  # OpenCLIP ViT-H: SD 2.x, which this builder does not train
SD1_KEY_PREFIXES = ("cond_stage_model.transformer.", "model.diffusion_model.")
MAX_HEADER = 100 << 20  # the safetensors format's own limit on the header size


def safetensors_keys(path: Path) -> list[str]:
    """The tensor names of a .safetensors file, read from its header alone."""
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
    return [k for k in header if k != "__metadata__"]


def family_from_keys(keys: list[str]) -> Family | None:
    if any(k.startswith(SDXL_KEY_PREFIX) for k in keys):
        return "sdxl"
    if any(k.startswith(SD2_KEY_PREFIX) for k in keys):
        raise BuilderError(
            "the base model is Stable Diffusion 2.x (an OpenCLIP ViT-H text encoder, "
            f"{SD2_KEY_PREFIX}*); this builder trains SD 1.5 and SDXL LoRAs"
        )
    if any(k.startswith(SD1_KEY_PREFIXES) for k in keys):
        return "sd15"
    return None


def detect_family(path: str | Path) -> Family | None:
    """The family of the base model at ``path``, or None when it cannot be told without loading it."""
    path = Path(path).expanduser()
    if path.is_dir():
        index = path / "model_index.json"
        if (path / "text_encoder_2").is_dir():
            return "sdxl"
        if index.is_file():
            try:
                name = json.loads(index.read_text(encoding="utf-8")).get("_class_name", "")
            except (OSError, ValueError, AttributeError):
                return None
            return "sdxl" if "XL" in name else "sd15" if name.startswith("StableDiffusion") else None
        return None
    if path.is_file() and path.suffix.lower() == ".safetensors":
        try:
            return family_from_keys(safetensors_keys(path))
        except BuilderError as exc:
            raise BuilderError(f"base model {exc}") from None
    return None


def registry_family(spec: str) -> Family | None:
    """The family of a base model given by registry name (builder.weights), before it is fetched."""
    entry = W.REGISTRY.get(spec)
    return entry.family if entry is not None and entry.family in FAMILIES else None  # type: ignore[return-value]


def resolve_family(setting: str, base_model: str | Path | None) -> Family:
    """``kohya.model_family`` made definite: "auto" is told from the base model, else SD 1.5.

    ``base_model``: a path, or a registry name (its entry's family).

    A flag that contradicts what the checkpoint's keys say is refused: sd-scripts would
    fail only after loading several GB, with a shape error.
    """
    if setting not in (*FAMILIES, "auto"):
        raise ConfigError(f"kohya.model_family = {setting!r}: choose auto, sd15 or sdxl")
    found = None
    if base_model and Path(base_model).expanduser().exists():
        found = detect_family(base_model)
    elif base_model:
        found = registry_family(str(base_model))
    if setting == "auto":
        return found or "sd15"
    if found is not None and found != setting:
        raise ConfigError(
            f"kohya.model_family = {setting!r}, but the base model {base_model} is {NAMES[found]} "
            f"({'it has' if found == 'sdxl' else 'it lacks'} SDXL's second text encoder); "
            f"set kohya.model_family = \"{found}\" or \"auto\""
        )
    return setting  # type: ignore[return-value]
