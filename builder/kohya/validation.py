"""The validation dataset sd-scripts reads as such: held-out photos in ``<out>/val/1_<trigger> <class>/``.

sd-scripts 48d368fa splits validation per dataset only (``validation_split`` under
``[[datasets]]``; per subset is its open PR #2190), so the held-out photos get a dataset of
their own with ``validation_split = 1.0``: its training half is empty (split_train_val keeps
``ceil(n * 0)`` images) and its validation half is every photo. ``validate_every_n_epochs``
goes into config.toml. The folder sits beside ``img/``, not in it, so the kohya_ss GUI's
``train_data_dir`` never trains on it.

The validation subset never gets loss masks (``conditioning_data_dir``): a dataset whose every
subset has one becomes a ControlNetDataset, whose DreamBooth delegate is always built as a
training dataset (train_util.py, ``DreamBoothDataset(db_subsets, True, ...)``), so with
``validation_split = 1.0`` it would hold no image on either side. Unmasked, it stays a
DreamBoothDataset that splits; with ``masked_loss`` on, apply_masked_loss leaves a batch
without masks as it is, so the validation loss is the whole image's.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from builder.config import Config
from builder.kohya.dataset import class_tokens, folder_name, kohya_images

VAL_ROOT = "val"


def validation_dir(out: Path, cfg: Config) -> Path:
    return Path(out) / VAL_ROOT / folder_name(1, class_tokens(cfg))


def validation_images(out: Path, cfg: Config) -> list[Path]:
    return kohya_images(validation_dir(out, cfg))


def validation_dataset(image_dir: Path, class_tokens_: str, seed: int) -> dict[str, Any]:
    """The ``[[datasets]]`` entry: every image of ``image_dir`` validates, none trains."""
    return {
        "validation_split": 1.0,
        "validation_seed": seed,
        "subsets": [{"image_dir": str(Path(image_dir).resolve()), "num_repeats": 1, "class_tokens": class_tokens_}],
    }


def validation_args(cfg: Config) -> dict[str, Any]:
    """config.toml's validation arguments (only written when there is a validation dataset)."""
    return {"validate_every_n_epochs": cfg.dataset.validate_every_n_epochs}
