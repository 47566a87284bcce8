"""caption_store/: the captioner's text of a photo whose caption file is not in the training
folder right now, so no caption is lost while a result is out or a person's caption covers it.

The image folder holds one caption file per kept image. Two things take that file away and
later give it back, and the store keeps the captioner's text in between:

- a result that stops being kept (a person rejects it) leaves ``img/`` with its caption;
  its text waits here and goes back beside the image when the result is kept again;
- a person's caption (overrides.json) replaces the captioner's file; the captioner's text
  waits here, and clearing the person's caption ("revert caption") writes it back.

So an entry exists exactly while its text is not in the image folder; it is moved back, not
copied, when it returns. An empty entry records that the captioner had written nothing yet.
Nothing here ever holds or replaces a person's caption: those live in overrides.json.
"""

from __future__ import annotations

from pathlib import Path

from builder.io import atomic_write_text

STORE = "caption_store"


def entry(run_dir: Path, image_name: str) -> Path:
    return Path(run_dir) / STORE / Path(image_name).with_suffix(".txt").name


def stored(run_dir: Path, image_name: str) -> str | None:
    """The captioner's text kept aside for this image ("" if it had none), or None."""
    try:
        return entry(run_dir, image_name).read_text(encoding="utf-8")
    except FileNotFoundError:
        return None


def leave(run_dir: Path, caption: Path, person: str | None) -> None:
    """The image of ``caption`` leaves the training folder: keep the captioner's text first."""
    if not caption.is_file():
        return
    text = caption.read_text(encoding="utf-8-sig")
    if person is not None and (text == person or stored(run_dir, caption.name) is not None):
        return  # the file holds the person's text (overrides.json has it); the store has the captioner's
    atomic_write_text(entry(run_dir, caption.name), text)


def follow(run_dir: Path, caption: Path, person: str | None) -> None:
    """Make the caption file of an image in the training folder say what it should: the person's
    caption if there is one (keeping the captioner's aside), else the captioner's, brought back."""
    kept = entry(run_dir, caption.name)
    if person is not None:
        current = caption.read_text(encoding="utf-8-sig") if caption.is_file() else None
        if current == person:
            return
        if not kept.exists():
            atomic_write_text(kept, current or "")
        atomic_write_text(caption, person)
        return
    text = stored(run_dir, caption.name)
    if text is None:
        return
    if text:
        atomic_write_text(caption, text)
    else:
        caption.unlink(missing_ok=True)  # the captioner had written none: `caption` makes one
    kept.unlink()
