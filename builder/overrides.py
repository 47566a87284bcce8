"""overrides.json: a person's decisions about single photos, which no re-run undoes.

One record per donor photo (keyed like the manifest), each field stamped with who set it
and when::

    {"TaylorSwift14.jpeg": {
        "status":  {"value": "rejected", "by": "alice (review page)", "at": "2026-12-01T10:02:03+00:00"},
        "caption": {"value": "ohwx, woman, smiling", "by": "alice (review page)", "at": "..."}}}

``status`` wins over the quality filter (and over ``--random-weights``) when the build
settles; ``caption`` is the text of the photo's caption file whenever its image is in the
training folder, and the caption stage never replaces it. Each change is a locked
read-modify-write of the whole file, written atomically, so two edits at once (two
browser tabs) both land, each on its own field.
"""

from __future__ import annotations

import getpass
import json
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from builder.errors import BuilderError
from builder.io import atomic_write_json
from builder.manifest import KEPT, REJECTED, result_name

OVERRIDES = "overrides.json"
FIELDS = ("status", "caption")
STATUSES = (KEPT, REJECTED)

# One lock per process: the review server's request threads share it.
_LOCK = threading.Lock()


@dataclass(frozen=True)
class Stamp:
    value: str
    by: str
    at: str

    def to_dict(self) -> dict[str, str]:
        return {"value": self.value, "by": self.by, "at": self.at}


def default_author() -> str:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no login name (some containers)
        user = "someone"
    return f"{user} (review page)"


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _validate(path: Path, data: Any) -> dict[str, dict[str, Stamp]]:
    if not isinstance(data, dict):
        raise BuilderError(f"{path}: expected a JSON object of photo -> overrides")
    out: dict[str, dict[str, Stamp]] = {}
    for key, fields in data.items():
        if not isinstance(fields, dict):
            raise BuilderError(f"{path}: the overrides of {key!r} are not an object")
        out[key] = {}
        for name, stamp in fields.items():
            if name not in FIELDS or not isinstance(stamp, dict) or not isinstance(stamp.get("value"), str):
                raise BuilderError(f"{path}: {key!r} has a bad {name!r} override (fields: {', '.join(FIELDS)})")
            if name == "status" and stamp["value"] not in STATUSES:
                raise BuilderError(f"{path}: {key!r} status override {stamp['value']!r} is not {' or '.join(STATUSES)}")
            out[key][name] = Stamp(stamp["value"], str(stamp.get("by", "")), str(stamp.get("at", "")))
    return out


def load_overrides(run_dir: Path) -> dict[str, dict[str, Stamp]]:
    """photo key -> field -> Stamp; an absent file means no overrides."""
    path = Path(run_dir) / OVERRIDES
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise BuilderError(f"{path}: cannot read ({exc.strerror or exc})") from None
    try:
        return _validate(path, json.loads(text))
    except json.JSONDecodeError as exc:
        raise BuilderError(f"{path}: not valid JSON ({exc.msg}, line {exc.lineno}); fix or delete it") from None


def set_override(run_dir: Path, key: str, field: str, value: str | None, by: str | None = None) -> Stamp | None:
    """Set (or, with ``value=None``, clear) one field of one photo's overrides; return the new stamp."""
    if field not in FIELDS:
        raise BuilderError(f"unknown override field {field!r} (fields: {', '.join(FIELDS)})")
    if field == "status" and value is not None and value not in STATUSES:
        raise BuilderError(f"status must be {' or '.join(STATUSES)}, not {value!r}")
    with _LOCK:
        current = load_overrides(run_dir)
        fields = current.setdefault(key, {})
        stamp = None
        if value is None:
            fields.pop(field, None)
        else:
            stamp = Stamp(value, by or default_author(), _now())
            fields[field] = stamp
        if not fields:
            del current[key]
        atomic_write_json(
            Path(run_dir) / OVERRIDES,
            {k: {f: s.to_dict() for f, s in v.items()} for k, v in sorted(current.items())},
        )
    return stamp


def caption_overrides(run_dir: Path) -> dict[str, str]:
    """result file name -> caption text, for the photos whose caption a person wrote."""
    return {result_name(key): f["caption"].value for key, f in load_overrides(run_dir).items() if "caption" in f}
