"""The training folder as the kohya_ss GUI's folder preparation makes it.

    <out>/img/<repeats>_<trigger> <class>/0001.png, 0001.txt, ...
    <out>/reg/<repeats>_<class>/0001.png, ...      (only when regularisation images are given)
    <out>/model/                                    (sd-scripts writes the LoRA epochs here)
    <out>/log/                                      (training logs)

sd-scripts reads the repeat count from the folder name (the integer before the first
``_``), so the build stage adds images to whatever instance folder exists, and
``finalize_dataset`` decides the repeats once the image count is known and renames the
folder. A resumed build finds the folder again by its class tokens, whatever its repeats.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path

from builder.config import Config
from builder.console import console
from builder.errors import BuilderError
from builder.io import atomic_write_bytes, list_images, load_image, write_image

# sd-scripts' train_util.IMAGE_EXTENSIONS (it globs both cases); other files in the folder are ignored.
KOHYA_IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
CAPTION_EXTENSIONS = (".txt", ".caption")
# Characters that break a folder name on Windows, macOS or Linux.
_UNSAFE_CHARS = set('<>:"/\\|?*')


@dataclass(frozen=True)
class StepPlan:
    """How many optimiser steps a repeat count gives, as sd-scripts counts them."""

    images: int
    repeats: int
    epochs: int
    batch_size: int
    with_reg: bool  # sd-scripts adds as many regularisation items as training items per epoch
    target_steps: int
    processes: int = 1  # GPUs (kohya.num_processes): each optimiser step takes a batch on every one

    @property
    def steps_per_epoch(self) -> int:
        # train_network.py: ceil(len(train_dataloader) / accelerator.num_processes), the loader
        # holding ceil(items / batch) batches that the processes share out.
        items = self.images * self.repeats * (2 if self.with_reg else 1)
        return math.ceil(math.ceil(items / self.batch_size) / self.processes)

    @property
    def total_steps(self) -> int:
        return self.steps_per_epoch * self.epochs

    def describe(self) -> str:
        reg = " x 2 (reg)" if self.with_reg else ""
        batch = (
            f"batch {self.batch_size} x {self.processes} GPUs (effective batch {self.batch_size * self.processes})"
            if self.processes > 1 else f"batch {self.batch_size}"
        )
        return (
            f"{self.images} images x {self.repeats} repeats{reg} / {batch} = "
            f"{self.steps_per_epoch} steps per epoch, x {self.epochs} epochs = {self.total_steps} steps "
            f"(target {self.target_steps}, kohya.target_steps; aspect-ratio buckets that do not fill "
            "a batch add a few)"
        )


@dataclass
class KohyaDataset:
    """A finished training folder: what the TOMLs and the GUI JSON describe."""

    out: Path
    image_dir: Path  # <out>/img/<repeats>_<trigger> <class>
    class_tokens: str  # "<trigger> <class>", the caption of an image without a caption file
    repeats: int
    images: list[Path]
    caption_extension: str | None  # the captions actually on disk; None when there are none
    captions: list[Path]
    uncaptioned: list[Path]  # images sd-scripts will caption with class_tokens alone
    reg_dir: Path | None
    reg_class_tokens: str
    reg_repeats: int
    reg_images: list[Path]
    plan: StepPlan
    mask_dir: Path | None = None  # conditioning_data_dir of the loss masks (attach_masks); None: no masks
    mask_note: str = ""  # why the dataset trains without masks
    val_dir: Path | None = None  # <out>/val/1_<trigger> <class>: sd-scripts' validation dataset (kohya/validation.py)
    val_images: list[Path] = field(default_factory=list)


def check_folder_words(text: str, what: str) -> str:
    """The trigger and class become part of a folder name: refuse what some OS cannot store."""
    text = text.strip()
    if not text:
        raise BuilderError(f"{what} is empty; the training folder is named '<repeats>_<trigger> <class>'")
    bad = sorted({c for c in text if c in _UNSAFE_CHARS or ord(c) < 32})
    if bad or text.endswith("."):
        shown = ", ".join(repr(c) for c in bad) if bad else "a trailing '.'"
        raise BuilderError(f"{what} {text!r} cannot be part of a folder name on every OS (it has {shown})")
    return text


def class_tokens(cfg: Config) -> str:
    trigger = check_folder_words(cfg.character.trigger, "character.trigger")
    word = check_folder_words(cfg.character.class_word, "character.class_word")
    return f"{trigger} {word}"


def folder_name(repeats: int, tokens: str) -> str:
    if repeats < 1:
        raise BuilderError(f"repeats must be at least 1, got {repeats}")
    return f"{repeats}_{tokens}"


def parse_folder_name(name: str) -> tuple[int, str] | None:
    """(repeats, class tokens) the way sd-scripts reads a folder name, or None if it skips it."""
    head, _, rest = name.partition("_")
    try:
        repeats = int(head)
    except ValueError:
        return None
    return (repeats, rest) if repeats >= 1 else None


def image_name(index: int, ext: str = ".png") -> str:
    """Zero-padded, ASCII-only names that sort in order on every OS."""
    if index < 1:
        raise BuilderError(f"image index must be at least 1, got {index}")
    return f"{index:04d}{ext}"


def prepare_layout(out: Path) -> None:
    for sub in ("img", "model", "log"):
        (Path(out) / sub).mkdir(parents=True, exist_ok=True)


def _find_tokens_dir(parent: Path, tokens: str) -> Path | None:
    if not parent.is_dir():
        return None
    found = [d for d in parent.iterdir() if d.is_dir() and (parse_folder_name(d.name) or (0, ""))[1] == tokens]
    if len(found) > 1:
        names = ", ".join(sorted(d.name for d in found))
        raise BuilderError(f"{parent}: several folders hold '{tokens}' ({names}); keep one")
    return found[0] if found else None


def instance_dir(out: Path, cfg: Config, create: bool = True) -> Path:
    """The folder training images go into; created as ``1_<tokens>`` until finalize_dataset."""
    tokens = class_tokens(cfg)
    img = Path(out) / "img"
    found = _find_tokens_dir(img, tokens)
    if found is not None:
        return found
    if not create:
        raise BuilderError(f"{img}: no training folder '<repeats>_{tokens}' (run `launch.py build` first)")
    prepare_layout(out)
    folder = img / folder_name(1, tokens)
    folder.mkdir(exist_ok=True)
    return folder


def kohya_images(folder: Path) -> list[Path]:
    """The images sd-scripts will train on in this folder, in name order."""
    if not folder.is_dir():
        return []
    return sorted(
        p for p in folder.iterdir()
        if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in KOHYA_IMAGE_EXTENSIONS
    )


def detect_caption_extension(images: list[Path], preferred: str = ".txt") -> tuple[str | None, list[Path]]:
    """The caption extension the files on disk use, and the images that have no caption.

    sd-scripts reads exactly one extension per subset, so a folder where some images
    have only ``.txt`` and others only ``.caption`` captions cannot be described.
    """
    has = {ext: {p for p in images if p.with_suffix(ext).is_file()} for ext in CAPTION_EXTENSIONS}
    used = [ext for ext in CAPTION_EXTENSIONS if has[ext]]
    if not used:
        return None, list(images)
    if len(used) > 1 and has[used[0]] != has[used[1]]:
        only = {ext: sorted(has[ext] - has[other]) for ext, other in (used, used[::-1])}
        examples = "; ".join(f"{ext}: {only[ext][0].name}" for ext in used if only[ext])
        raise BuilderError(
            f"{images[0].parent}: captions are split between .txt and .caption files ({examples}); "
            "sd-scripts reads one extension per folder, so rename them to one"
        )
    ext = preferred if preferred in used else used[0]
    return ext, [p for p in images if p not in has[ext]]


def choose_repeats(
    images: int, epochs: int, batch_size: int, target_steps: int, with_reg: bool = False, processes: int = 1
) -> StepPlan:
    """The repeat count (>= 1) whose total step count is closest to the target; ties go low.

    ``target_steps`` counts optimiser steps, so N GPUs (each step a batch on every one)
    get N times the repeats one GPU would: the same steps, N times the images seen.
    """
    if images < 1:
        raise BuilderError("the training folder has no images; nothing to train on")
    if epochs < 1 or batch_size < 1 or target_steps < 1 or processes < 1:
        raise BuilderError(
            f"kohya.epochs ({epochs}), kohya.batch_size ({batch_size}), kohya.target_steps "
            f"({target_steps}) and kohya.num_processes ({processes}) must all be at least 1"
        )
    ideal = target_steps * batch_size * processes / (images * epochs * (2 if with_reg else 1))
    # Steps per epoch round up twice (batches, then their share per GPU), so a run of repeat
    # counts up to batch_size * processes long gives one step count: search that far below.
    low = max(1, math.floor(ideal) - batch_size * processes)
    plans = [StepPlan(images, r, epochs, batch_size, with_reg, target_steps, processes)
             for r in range(low, max(low, math.ceil(ideal)) + 1)]
    return min(plans, key=lambda p: (abs(p.total_steps - target_steps), p.repeats))


def reg_dir(out: Path, cfg: Config) -> Path:
    """``reg/<reg_repeats>_<class>/``, created, or renamed from another repeat count."""
    word = check_folder_words(cfg.character.class_word, "character.class_word")
    reg_root = Path(out) / "reg"
    folder = _find_tokens_dir(reg_root, word)
    wanted = reg_root / folder_name(cfg.kohya.reg_repeats, word)
    if folder is not None and folder != wanted:
        os.rename(folder, wanted)
    wanted.mkdir(parents=True, exist_ok=True)
    return wanted


def copy_reg_images(out: Path, cfg: Config) -> Path | None:
    """Copy cfg.paths.reg into ``reg/<reg_repeats>_<class>/`` under safe names (idempotent)."""
    if not cfg.paths.reg:
        return _find_tokens_dir(Path(out) / "reg", check_folder_words(cfg.character.class_word, "character.class_word"))
    sources = list_images(Path(cfg.paths.reg))
    if not sources:
        raise BuilderError(f"{cfg.paths.reg}: paths.reg holds no images")
    folder = reg_dir(out, cfg)
    for i, src in enumerate(sources, start=1):
        ext = src.suffix.lower()
        if ext in KOHYA_IMAGE_EXTENSIONS:
            dst = folder / image_name(i, ".jpg" if ext == ".jpeg" else ext)
            if not dst.exists() or dst.stat().st_size != src.stat().st_size:
                atomic_write_bytes(dst, src.read_bytes())
        else:  # e.g. TIFF: sd-scripts would skip it, so store it as PNG
            dst = folder / image_name(i, ".png")
            if not dst.exists():
                write_image(dst, load_image(src, cfg.runtime.max_pixels))
    return folder


def finalize_dataset(out: Path, cfg: Config) -> KohyaDataset:
    """Count what the build wrote, choose the repeats, and give the folder its final name.

    Safe to call again after more images arrive: the folder is renamed to the new count.
    """
    out = Path(out)
    prepare_layout(out)
    tokens = class_tokens(cfg)
    folder = instance_dir(out, cfg, create=False)
    images = kohya_images(folder)
    reg_dir = copy_reg_images(out, cfg)
    reg_images = kohya_images(reg_dir) if reg_dir else []
    if not reg_images:
        reg_dir = None  # an empty reg folder would only add a subset sd-scripts warns about
    plan = choose_repeats(
        len(images), cfg.kohya.epochs, cfg.kohya.batch_size, cfg.kohya.target_steps, bool(reg_images),
        cfg.kohya.num_processes,
    )
    final = folder.parent / folder_name(plan.repeats, tokens)
    if final != folder:
        os.rename(folder, final)
        images = [final / p.name for p in images]
    ext, uncaptioned = detect_caption_extension(images, cfg.caption.extension)
    if uncaptioned and ext is not None:
        console.print(
            f"[yellow]{len(uncaptioned)} of {len(images)} images in {final} have no {ext} caption "
            f"(e.g. {uncaptioned[0].name}); sd-scripts trains them on '{tokens}' alone[/yellow]"
        )
    console.print(f"repeats {plan.repeats}: {plan.describe()}")
    reg_repeats, reg_tokens = parse_folder_name(reg_dir.name) if reg_dir else (cfg.kohya.reg_repeats, "")
    return KohyaDataset(
        out=out,
        image_dir=final,
        class_tokens=tokens,
        repeats=plan.repeats,
        images=images,
        caption_extension=ext,
        captions=[p.with_suffix(ext) for p in images if p not in uncaptioned] if ext else [],
        uncaptioned=uncaptioned,
        reg_dir=reg_dir,
        reg_class_tokens=reg_tokens,
        reg_repeats=reg_repeats,
        reg_images=reg_images,
        plan=plan,
    )


# ---- loss masks (sd-scripts masked_loss: a conditioning_data_dir per subset) ----

MASK_ROOT = "mask"
MASK_SOURCE = "results/masks"  # where the build writes each result's mask, under the image's name
NO_MASKS_WITH_REG = (
    "sd-scripts' masked subsets (conditioning_data_dir) cannot be regularisation subsets (its schema has no "
    "is_reg there), so with regularisation images the loss masks are not used"
)


def conditioning_dir(image_dir: Path) -> Path:
    """``<out>/mask/<img>/<trigger> <class>``: the masks of ``image_dir``'s images. Named without the
    repeat count, so renaming the image folder for new repeats leaves it where it is."""
    parsed = parse_folder_name(image_dir.name)
    tokens = parsed[1] if parsed else image_dir.name
    return image_dir.parent.parent / MASK_ROOT / image_dir.parent.name / tokens


def sync_masks(images: list[Path], source: Path, folder: Path) -> list[Path]:
    """Make ``folder`` hold exactly one mask per image, under the image's name: sd-scripts stops on
    a missing mask and on an extra one. Returns the images with no mask in ``source`` (then the
    folder is emptied, and the dataset trains without masks)."""
    missing = [p for p in images if not (source / p.name).is_file()]
    wanted = {} if missing else {p.name: source / p.name for p in images}
    folder.mkdir(parents=True, exist_ok=True)
    for existing in kohya_images(folder):
        if existing.name not in wanted:
            existing.unlink()
    for name, src in sorted(wanted.items()):
        dst = folder / name
        if not dst.exists() or dst.stat().st_size != src.stat().st_size:
            atomic_write_bytes(dst, src.read_bytes())
    return missing


def attach_masks(ds: KohyaDataset, cfg: Config) -> KohyaDataset:
    """The dataset with its loss masks in place (``mask_dir``), or the reason it has none."""
    folder = conditioning_dir(ds.image_dir)
    if not cfg.dataset.masks:
        sync_masks([], ds.out / MASK_SOURCE, folder)
        ds.mask_dir, ds.mask_note = None, "loss masks are off (dataset.masks)"
        return ds
    if ds.reg_dir is not None:
        sync_masks([], ds.out / MASK_SOURCE, folder)
        ds.mask_dir, ds.mask_note = None, NO_MASKS_WITH_REG
        console.print(f"[yellow]{NO_MASKS_WITH_REG}[/yellow]")
        return ds
    if ds.uncaptioned:
        sync_masks([], ds.out / MASK_SOURCE, folder)
        ds.mask_dir = None
        ds.mask_note = (
            f"{len(ds.uncaptioned)} of {len(ds.images)} images have no caption yet; sd-scripts' masked subsets "
            "read captions from files only (no class_tokens), so the masks are used once every image is captioned"
        )
        return ds
    missing = sync_masks(ds.images, ds.out / MASK_SOURCE, folder)
    if missing:
        ds.mask_dir = None
        ds.mask_note = (
            f"{len(missing)} of {len(ds.images)} images have no loss mask (e.g. {missing[0].name}, built before "
            f"masks or with dataset.masks off); sd-scripts needs one per image, so none are used"
        )
        console.print(f"[yellow]{ds.mask_note}[/yellow]")
        return ds
    ds.mask_dir, ds.mask_note = folder, ""
    return ds
