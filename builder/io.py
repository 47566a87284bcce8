"""Reading images safely and writing every output atomically.

Every file the builder writes goes through a temporary file in the same folder
followed by ``os.replace``, so an interrupted run never leaves a partial file
under the final name and a resumed run can trust what it finds.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from PIL import Image, ImageOps

from builder.errors import BuilderError, ImageError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff")
TMP_MARK = ".tmp"  # temporary files are ".<name>.<random>.tmp<suffix>"


def _read_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _read_umask()


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path`` in one step."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TMP_MARK + path.suffix, dir=path.parent)
        # mkstemp makes 0600 files; outputs get the usual umask-based mode so a GUI or
        # trainer run by another user can read the dataset.
        os.fchmod(fd, 0o666 & ~_UMASK)
        os.close(fd)
    except OSError as exc:
        raise BuilderError(f"cannot write {path}: {exc.strerror or exc}") from exc
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp_path, path)
    except OSError as exc:
        tmp_path.unlink(missing_ok=True)
        raise BuilderError(f"cannot write {path}: {exc.strerror or exc}") from exc
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def atomic_folder(folder: Path, what: str) -> Iterator[Path]:
    """Yield the path of a scratch folder beside ``folder``, not yet made (the writer makes it, as
    save_pretrained does); on success it replaces ``folder`` (a partial one an interrupted run left
    included) in one step. An OSError names ``folder`` and ``what``."""
    tmp = folder.with_name(f".{folder.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        yield tmp
        if folder.exists():
            shutil.rmtree(folder)
        os.replace(tmp, folder)
    except OSError as exc:
        raise BuilderError(f"{folder}: cannot write the {what} ({exc.strerror or exc})") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def write_image(path: Path, image_bgr: np.ndarray) -> None:
    """Encode in memory, then write atomically (the encoder picks the format from the suffix)."""
    path = Path(path)
    ok, buf = cv2.imencode(path.suffix or ".png", image_bgr)
    if not ok:
        raise BuilderError(f"cannot encode {path} as {path.suffix}")
    atomic_write_bytes(path, buf.tobytes())


def append_jsonl(path: Path, record: dict[str, Any]) -> None:
    """Append one JSON line and fsync; readers skip a torn last line (see read_jsonl)."""
    path = Path(path)
    line = json.dumps(record, sort_keys=True) + "\n"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a+b") as fh:
            # A crash can leave a torn last line with no newline: start on a fresh line so
            # this record does not fuse with it (read_jsonl drops only the torn one).
            if fh.tell() > 0:
                fh.seek(-1, os.SEEK_END)
                if fh.read(1) != b"\n":
                    line = "\n" + line
            fh.write(line.encode("utf-8"))
            fh.flush()
            os.fsync(fh.fileno())
    except OSError as exc:
        raise BuilderError(f"cannot write {path}: {exc.strerror or exc}") from exc


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Read records; a line cut short by a crash is dropped, not fatal."""
    path = Path(path)
    if not path.exists():
        return []
    records = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


def load_image(path: Path, max_pixels: int = 60_000_000) -> np.ndarray:
    """Decode any common photo into an upright 8-bit BGR array, or raise ImageError naming why.

    EXIF orientation is applied (phones store portraits sideways), alpha is composited
    on white, 16-bit and greyscale and CMYK are converted, and images over ``max_pixels``
    are refused before decoding so one huge file cannot exhaust memory.
    """
    path = Path(path)
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise ImageError(f"{path}: cannot read ({exc.strerror or exc})") from None
    if size == 0:
        raise ImageError(f"{path}: empty file (0 bytes)")
    Image.MAX_IMAGE_PIXELS = None  # we apply our own limit below, with a clearer message
    try:
        with Image.open(path) as im:
            w, h = im.size
            if w * h > max_pixels:
                raise ImageError(
                    f"{path}: {w}x{h} is {_megapixels(w * h)} megapixels, over the limit of "
                    f"{_megapixels(max_pixels)} (runtime.max_pixels)"
                )
            im.load()
            im = ImageOps.exif_transpose(im)
            image = _to_rgb8(im)
    except ImageError:
        raise
    except Exception as exc:  # decoders raise many types on bad files (struct.error, TypeError, ...)
        raise ImageError(f"{path}: not a readable image ({exc or type(exc).__name__})") from None
    if image.shape[0] < 16 or image.shape[1] < 16:
        raise ImageError(f"{path}: image is only {image.shape[1]}x{image.shape[0]} pixels")
    return np.ascontiguousarray(image[:, :, ::-1])


def _megapixels(n: int) -> str:
    """60 and 1600, but 0.25 (not "0") for the small limits tests and thumbnails use."""
    return f"{n / 1e6:.2f}".rstrip("0").rstrip(".")


def _to_rgb8(im: Image.Image) -> np.ndarray:
    if im.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(im, dtype=np.float64)
        # 16-bit modes always span 0..65535 (a dark 16-bit photo is still 16-bit); plain "I"
        # carries no depth, so values up to 255 are taken as 8-bit.
        peak = 65535.0 if im.mode.startswith("I;16") or arr.max() > 255 else 255.0
        grey = np.clip(arr / peak * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return np.stack([grey] * 3, axis=-1)
    if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
        rgba = im.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return np.asarray(Image.alpha_composite(background, rgba).convert("RGB"))
    return np.asarray(im.convert("RGB"))


def list_images(folder: Path, recursive: bool = True) -> list[Path]:
    """Image files under ``folder`` in a stable order; symlink loops and hidden files are skipped."""
    folder = Path(folder)
    if folder.is_file():
        return [folder]
    if not folder.is_dir():
        raise BuilderError(f"{folder}: no such folder")
    found: list[Path] = []
    seen_dirs: set[tuple[int, int]] = set()

    def walk(d: Path) -> None:
        try:
            st = d.stat()
        except OSError:
            return
        if (st.st_dev, st.st_ino) in seen_dirs:
            return
        seen_dirs.add((st.st_dev, st.st_ino))
        try:
            entries = sorted(d.iterdir(), key=lambda p: p.name)
        except OSError:
            return
        for entry in entries:
            if entry.name.startswith("."):
                continue
            try:
                if entry.is_dir():
                    if recursive:
                        walk(entry)
                elif entry.suffix.lower() in IMAGE_EXTENSIONS:
                    found.append(entry)
            except OSError:
                continue

    walk(folder)
    return found


def remove_stale_temps(folder: Path) -> list[Path]:
    """Delete the temporary files a killed run left under ``folder`` (only ours, by name)."""
    removed = []
    for tmp in Path(folder).rglob(f".*{TMP_MARK}*"):
        if tmp.is_file() and not tmp.is_symlink():
            tmp.unlink(missing_ok=True)
            removed.append(tmp)
    return removed
