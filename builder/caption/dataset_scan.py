"""Finding the images of a dataset to caption, and the trigger and class word of each.

A kohya training folder is named ``<repeats>_<instance tokens>`` (e.g. ``10_ohwx woman``);
kohya reads the part after the first underscore as the caption of uncaptioned images,
so its first word is the trigger and the rest is the class. A run folder made by this
builder or by the kohya_ss GUI keeps them under ``img/`` beside ``reg/``, ``model/`` and
``log/``; only ``img/`` is captioned (regularisation images must not learn the trigger).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from builder.errors import BuilderError
from builder.io import list_images

_KOHYA_FOLDER = re.compile(r"^(\d+)_(.+)$")


@dataclass(frozen=True)
class CaptionTarget:
    image: Path
    caption: Path
    trigger: str
    class_word: str
    origin: str  # where trigger and class came from: "folder <name>", "flags" or "config"


def parse_kohya_folder(name: str) -> tuple[str, str] | None:
    """(trigger, class word) from a kohya folder name, or None if ``name`` is not one."""
    match = _KOHYA_FOLDER.match(name)
    if match is None:
        return None
    tokens = match.group(2).split()
    if not tokens:
        return None
    return tokens[0], " ".join(tokens[1:])


def caption_root(folder: Path) -> Path:
    """The folder whose images are captioned: ``folder/img`` for a run folder, else ``folder``."""
    folder = Path(folder)
    if not folder.is_dir():
        raise BuilderError(f"{folder}: no such folder")
    img = folder / "img"
    if img.is_dir() and any(parse_kohya_folder(p.name) for p in img.iterdir() if p.is_dir()):
        return img
    return folder


def _folder_identity(image: Path, root: Path) -> tuple[str, str, str] | None:
    for parent in (image.parent, *image.parent.parents):
        parsed = parse_kohya_folder(parent.name)
        if parsed is not None:
            return (*parsed, f"folder '{parent.name}'")
        if parent == root:
            return None
    return None


def scan_dataset(
    folder: Path,
    extension: str,
    trigger: str | None,
    class_word: str | None,
    default_trigger: str,
    default_class: str,
) -> tuple[list[CaptionTarget], list[tuple[Path, str]]]:
    """Every image to caption, and the images that cannot be (with the reason).

    ``trigger``/``class_word`` are what the user gave explicitly (None if not); they win
    over the kohya folder name, which wins over the config's [character] values.
    """
    root = caption_root(folder)
    targets: list[CaptionTarget] = []
    problems: list[tuple[Path, str]] = []
    owners: dict[Path, Path] = {}
    for image in list_images(root, recursive=True):
        caption = image.with_suffix(extension)
        if caption in owners:
            # kohya pairs a caption with an image by stem, so a.png and a.jpg would share a.txt.
            problems.append((image, f"shares the caption file {caption.name} with {owners[caption].name}"))
            continue
        owners[caption] = image
        found = _folder_identity(image, root)
        if found is not None:
            folder_trigger, folder_class, origin = found
        else:
            folder_trigger, folder_class, origin = default_trigger, default_class, "config"
        if trigger is not None or class_word is not None:
            origin = "flags" if trigger is not None and class_word is not None else f"{origin} and flags"
        targets.append(
            CaptionTarget(
                image=image,
                caption=caption,
                trigger=folder_trigger if trigger is None else trigger,
                class_word=folder_class if class_word is None else class_word,
                origin=origin,
            )
        )
    return targets, problems
