"""Which kept result trains, which validates and which is left out: one plan per settle.

Deterministic from the kept records and ``[dataset]`` alone, so a resumed build plans as an
uninterrupted one. Photos (records without a parent) are split first (validation.py), then
the training photos are pose-balanced (pose_balance.py); a close-up (a record naming its
parent) follows its parent into training, and is left out when its parent validates or is
balanced out. The plan goes into each record's ``dataset`` field, ``dataset_plan.json``,
the build summary and the contact sheet labels.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from builder.config import Config
from builder.dataset.pose_balance import Balance, PosedPhoto, balance
from builder.dataset.validation import choose_held_out, split_size
from builder.io import atomic_write_json
from builder.manifest import BY_OVERRIDE, Record

TRAIN = "train"
VALIDATION = "validation"
POSE_CAPPED = "pose capped"
WITH_PARENT = "left out with its parent"  # a close-up of a validation or pose-capped photo
PLAN_FILE = "dataset_plan.json"
SHORT = {TRAIN: "", VALIDATION: "val", POSE_CAPPED: "pose capped", WITH_PARENT: "parent not training"}


@dataclass
class DatasetPlan:
    roles: dict[str, str] = field(default_factory=dict)  # record key -> TRAIN, VALIDATION, ...
    bins: dict[str, str] = field(default_factory=dict)  # photo key -> pose bin
    reasons: dict[str, str] = field(default_factory=dict)  # key -> why it does not train
    pose_before: dict[str, int] = field(default_factory=dict)
    pose_after: dict[str, int] = field(default_factory=dict)
    pose_cap: int | None = None
    pose_note: str = ""
    validation: list[str] = field(default_factory=list)
    validation_note: str = ""

    def keys(self, role: str) -> list[str]:
        return sorted(k for k, r in self.roles.items() if r == role)

    def record_field(self, key: str) -> dict[str, Any] | None:
        if key not in self.roles:
            return None
        out: dict[str, Any] = {"role": self.roles[key]}
        if key in self.bins:
            out["pose_bin"] = self.bins[key]
        if key in self.reasons:
            out["reason"] = self.reasons[key]
        return out

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def parent_of(record: Record) -> str | None:
    return getattr(record, "parent", None) or None


def _pose(record: Record) -> tuple[float | None, float | None]:
    scores = (record.quality or {}).get("scores", {})
    return scores.get("yaw"), scores.get("pitch")


def plan_dataset(kept: list[Record], cfg: Config) -> DatasetPlan:
    dc = cfg.dataset
    photos = sorted((r for r in kept if parent_of(r) is None), key=lambda r: r.key)
    posed = [
        PosedPhoto(r.key, *_pose(r), score=float((r.quality or {}).get("combined", 0.0)), pinned=r.decided_by == BY_OVERRIDE)
        for r in photos
    ]
    everyone = balance(posed, dc.pose_yaw_edges, dc.pose_pitch_edges, 1.0, 0, "off")  # bins of every photo
    size = split_size(len(photos), dc)
    held = choose_held_out(everyone.bins, size.held, cfg.runtime.seed)
    rest = [p for p in posed if p.key not in set(held)]
    bal: Balance = balance(rest, dc.pose_yaw_edges, dc.pose_pitch_edges, dc.pose_max_share, dc.min_train_images, dc.pose_balance)
    plan = DatasetPlan(
        bins=everyone.bins, pose_before=everyone.before, pose_after=bal.after, pose_cap=bal.cap,
        pose_note=bal.note, validation=held, validation_note=size.note,
    )
    for key in held:
        plan.roles[key] = VALIDATION
        plan.reasons[key] = "held out: validation dataset"
    for key in bal.kept:
        plan.roles[key] = TRAIN
    for key, why in bal.dropped.items():
        plan.roles[key], plan.reasons[key] = POSE_CAPPED, why
    for r in kept:
        parent = parent_of(r)
        if parent is None:
            continue
        parent_role = plan.roles.get(parent)
        if parent_role == TRAIN:
            plan.roles[r.key] = TRAIN
        else:
            plan.roles[r.key] = WITH_PARENT
            plan.reasons[r.key] = f"close-up of {parent} ({parent_role or 'not kept'}): not trained, never validated"
    return plan


def write_plan(out: Path, plan: DatasetPlan) -> Path:
    path = Path(out) / PLAN_FILE
    atomic_write_json(path, plan.to_dict())
    return path


def label(record_field: dict[str, Any] | None) -> str:
    """A short tag for a contact-sheet label: 'val', 'pose capped', or ''."""
    if not record_field:
        return ""
    return SHORT.get(record_field.get("role", ""), "")
