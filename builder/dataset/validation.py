"""The validation split: which kept photos are held out from training, and whether there is one.

On by default once ``[dataset] validation_min_photos`` photos are kept: ``validation_share``
of them (VALIDATION_SHARE when unset), at least ``validation_min_held``. The photos are taken
one at a time from the fullest pose bin, inside a bin in a seeded hash order of their keys,
so rare poses stay in training and a re-run (or one more photo) holds out the same ones.
Close-ups (records with a parent) are never held out; those of a held-out photo do not
train either (kohya/validation.py writes the folder sd-scripts reads as validation).
"""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass

from builder.config import VALIDATION_SHARE, DatasetConfig
from builder.errors import ConfigError


@dataclass(frozen=True)
class SplitSize:
    held: int  # photos held out; 0: no validation split
    note: str  # why, for the summary and dataset_plan.json


def _share(dc: DatasetConfig) -> float:
    share = VALIDATION_SHARE if dc.validation_share is None else dc.validation_share
    if not 0.0 < share < 1.0:
        raise ConfigError(f"[dataset] validation_share = {share}: must be above 0 and below 1")
    return share


def split_size(photos: int, dc: DatasetConfig) -> SplitSize:
    """How many of ``photos`` kept photos to hold out. A share the user set that leaves fewer than
    ``min_train_images`` is a ConfigError; the default share shrinks instead, or the split is off."""
    if not dc.validation:
        return SplitSize(0, "off ([dataset] validation = false)")
    share = _share(dc)
    if photos < dc.validation_min_photos:
        return SplitSize(0, f"off: {photos} photo(s) kept, a split needs {dc.validation_min_photos} ([dataset] validation_min_photos)")
    held = max(dc.validation_min_held, round(share * photos))
    if photos - held < dc.min_train_images:
        if dc.validation_share is not None:
            raise ConfigError(
                f"[dataset] validation_share = {dc.validation_share} holds out {held} of {photos} photos and leaves "
                f"{photos - held} to train, fewer than [dataset] min_train_images = {dc.min_train_images}; "
                "lower the share or add photos"
            )
        held = photos - dc.min_train_images
        if held < dc.validation_min_held:
            return SplitSize(0, f"off: {photos} photos kept leave too few to hold {dc.validation_min_held} out "
                             f"and train on {dc.min_train_images} ([dataset] min_train_images)")
    return SplitSize(held, f"{held} of {photos} photos held out ({held / photos:.0%}) as the validation dataset")


def check_before_work(photos: int, dc: DatasetConfig) -> None:
    """Before any photo is processed: a set share that fails even if every donor photo is kept."""
    if dc.validation and dc.validation_share is not None:
        _share(dc)
        if photos >= dc.validation_min_photos:
            split_size(photos, dc)


def _order(key: str, seed: int) -> str:
    return hashlib.sha1(f"{seed}:{key}".encode()).hexdigest()


def choose_held_out(bins: dict[str, str], held: int, seed: int) -> list[str]:
    """``held`` keys of ``bins`` (key -> pose bin), each taken from the bin that has most photos left."""
    left = {k: b for k, b in bins.items()}
    chosen: list[str] = []
    for _ in range(min(held, len(left))):
        sizes = Counter(left.values())
        fullest = max(sizes, key=lambda b: (sizes[b], b))
        pick = min((k for k, b in left.items() if b == fullest), key=lambda k: _order(k, seed))
        chosen.append(pick)
        del left[pick]
    return sorted(chosen)
