"""Registry of every model file the product uses, and the one cache folder they live in.

TODO(foundation helper): fill in REGISTRY with the official facts, fetch with resume,
checksum verification. The API below (WeightSpec, REGISTRY, cache_dir, weight_path,
require) is what the model loaders call; keep it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from builder.errors import MissingWeightError

ENV_VAR = "LORA_BUILDER_WEIGHTS"


@dataclass(frozen=True)
class WeightSpec:
    name: str  # registry key, used on the command line
    filename: str  # official file name, kept unchanged in the cache
    url: str  # official download URL (or Hugging Face repo id when kind == "hf")
    size: int | None  # bytes; None where it could not be read
    sha256: str | None  # None where no upstream checksum could be read here
    license: str
    purpose: str
    kind: str = "file"  # file | zip | hf
    subdir: str = ""  # folder inside the cache


REGISTRY: dict[str, WeightSpec] = {}


def cache_dir(weights_dir: str = "") -> Path:
    if weights_dir:
        return Path(weights_dir).expanduser()
    if os.environ.get(ENV_VAR):
        return Path(os.environ[ENV_VAR]).expanduser()
    return Path.home() / ".cache" / "lora-builder"


def weight_path(name: str, weights_dir: str = "") -> Path:
    spec = REGISTRY[name]
    return cache_dir(weights_dir) / spec.subdir / spec.filename


def require(name: str, weights_dir: str = "") -> Path:
    """The cached file for ``name``, or a MissingWeightError saying where to get it and put it."""
    path = weight_path(name, weights_dir)
    if not path.exists():
        spec = REGISTRY[name]
        raise MissingWeightError(
            f"model file '{spec.filename}' ({name}) is missing. Run `python launch.py weights "
            f"--fetch {name}`, or download {spec.url} by hand and put it at {path}"
        )
    return path
