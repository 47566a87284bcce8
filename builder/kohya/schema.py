"""What the verified sd-scripts commit accepts, read from ``sdscripts_schema.json``.

The record is written by ``builder.kohya.verify_sdscripts`` from a real checkout; the
generators check their output against it, because train_network.py silently ignores an
unknown key in config.toml and the dataset schema rejects one only at training time.
"""

from __future__ import annotations

import difflib
import functools
import json
from pathlib import Path
from typing import Any

from builder import families
from builder.errors import ConfigError

SCHEMA_PATH = Path(__file__).with_name("sdscripts_schema.json")


@functools.cache
def schema() -> dict[str, Any]:
    return json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))


def dataset_keys(level: str) -> frozenset[str]:
    """Allowed keys at 'general', 'datasets' or 'subsets' level of dataset_config.toml."""
    return frozenset(schema()["dataset_config"][level])


def train_arguments(family: str = families.DEFAULT) -> dict[str, dict[str, Any]]:
    """The arguments of the family's training script (SDXL's adds a few to train_network.py's)."""
    args: dict[str, dict[str, Any]] = {}
    for section in families.family(family).SCHEMA_SECTIONS:
        args.update(schema()[section])
    return args


def gui_keys() -> frozenset[str]:
    return frozenset(schema()["kohya_ss_gui"]["lora_config_keys"])


def closest(name: str, valid: set[str] | frozenset[str]) -> str:
    match = difflib.get_close_matches(name, sorted(valid), n=1)
    return f" (did you mean '{match[0]}'?)" if match else ""


def check_train_value(key: str, value: Any, origin: str, family: str = families.DEFAULT) -> None:
    """One training-script argument as it will sit in config.toml (argparse does not convert it)."""
    args = train_arguments(family)
    if key not in args:
        others = [m for m in families.FAMILIES.values() if key in train_arguments(m.NAME)]
        scripts = list(dict.fromkeys(m.SCRIPT for m in reversed(others)))
        names = " or ".join(f'"{m.NAME}"' for m in reversed(others))
        hint = (f" ({' and '.join(scripts)} {'has' if len(scripts) == 1 else 'have'} it: kohya.model_family = {names})"
                if others else closest(key, set(args)))
        raise ConfigError(f"{origin}: '{key}' is not a {families.family(family).SCRIPT} argument{hint}")
    spec = args[key]
    if spec["kind"] == "flag":
        if not isinstance(value, bool):
            raise ConfigError(f"{origin}: {key} is an on/off flag; write true or false, not {value!r}")
        return
    if "choices" in spec and not isinstance(value, list) and value not in spec["choices"]:
        allowed = ", ".join(repr(c) for c in spec["choices"] if c is not None)
        raise ConfigError(f"{origin}: {key} = {value!r} is not one of {allowed}")
    expected = {"int": (int,), "float": (int, float), "str": (str,), "Path": (str,)}.get(spec.get("type", ""))
    if expected and not isinstance(value, list) and (isinstance(value, bool) or not isinstance(value, expected)):
        raise ConfigError(f"{origin}: {key} must be a {spec['type']}, got {value!r}")
