"""Thumbnails and face close-ups for the review page, made once and cached in the run folder.

A donor photo lives outside the run folder; the page never gets its path, only the pictures
the server made of it under ``review_cache/``. A cached file is made again when its picture is
newer than it. ``ThumbMaker`` makes them all ahead, on one background thread, from an index
read once when the server starts, so a page request never reads the manifest and never waits
behind (or holds a worker thread from) a keep or reject.
"""

from __future__ import annotations

import itertools
import queue
import threading
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from builder.faces.align import closeup_box
from builder.io import load_image, write_image

CACHE = "review_cache"
KINDS = ("donor", "result", "donor_face", "result_face")
FULL_KINDS = ("donor_full", "result_full")  # the zoom view: the whole picture, as a browser can show it
SIZES = {"donor": 640, "result": 640, "donor_face": 256, "result_face": 256}  # longest side, pixels
BROWSER_IMAGES = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".webp": "image/webp"}


def _shrink(image: np.ndarray, longest: int) -> np.ndarray:
    h, w = image.shape[:2]
    scale = longest / max(h, w)
    if scale >= 1:
        return image
    return cv2.resize(image, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)


def cached_path(run_dir: Path, card_id: str, kind: str) -> Path:
    return Path(run_dir) / CACHE / f"{card_id}_{kind}.{'png' if kind.endswith('_full') else 'jpg'}"


def thumbnail(run_dir: Path, card_id: str, kind: str, picture: Path, face_box: list[float] | None, max_pixels: int) -> Path:
    """The cached JPEG of ``picture`` (a close-up of ``face_box`` for the *_face kinds; for the
    *_full kinds the whole picture, as PNG, when a browser cannot show the file itself)."""
    if kind not in KINDS + FULL_KINDS:
        raise ValueError(f"unknown thumbnail kind {kind!r}")
    if kind.endswith("_full") and picture.suffix.lower() in BROWSER_IMAGES:
        return picture
    cached = cached_path(run_dir, card_id, kind)
    if cached.is_file() and cached.stat().st_mtime_ns >= picture.stat().st_mtime_ns:
        return cached
    image = load_image(picture, max_pixels)
    if kind.endswith("_face"):
        if face_box is None:
            raise ValueError("no face box for a close-up")
        x0, y0, x1, y1 = closeup_box(np.asarray(face_box), image.shape)
        image = image[y0:y1, x0:x1]
    write_image(cached, image if kind.endswith("_full") else _shrink(image, SIZES[kind]))
    return cached


@dataclass(frozen=True)
class Source:
    """What one picture of one card is made from."""

    picture: Path
    box: list[float] | None
    key: str


def sources(run_dir: Path, record: dict[str, Any]) -> dict[str, Source]:
    """kind -> Source for one manifest record (only the kinds it has pictures for)."""
    box = (record.get("face") or {}).get("box")
    found: dict[str, Source] = {}
    pictures = {"donor": Path(record["input"]) if record.get("input") else None,
                "result": Path(run_dir) / record["output"] if record.get("output") else None}  # fmt: skip
    for kind in KINDS + FULL_KINDS:
        picture = pictures[kind.split("_")[0]]
        if picture is None or (kind.endswith("_face") and not box):
            continue
        found[kind] = Source(picture, box, record["key"])
    return found


class ThumbMaker:
    """One background thread making every card's thumbnails, the ones a page asks for first.

    ``request`` answers a Future at once; the caller awaits it without holding a thread.
    """

    def __init__(self, run_dir: Path, index: dict[str, dict[str, Source]], max_pixels: int):
        self.run_dir = Path(run_dir)
        self.index = index
        self.max_pixels = max_pixels
        self._futures: dict[tuple[str, str], Future[Path]] = {}
        self._queue: queue.PriorityQueue[tuple[int, int, str, str]] = queue.PriorityQueue()
        self._order = itertools.count()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Queue every thumbnail (not the full-size views, made when asked), in card order."""
        for cid, kinds in self.index.items():
            for kind in kinds:
                if kind in KINDS:
                    self._enqueue(cid, kind, priority=1)
        self._thread = threading.Thread(target=self._work, name="review-thumbnails", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop after the thumbnail in hand, and wait for it: a daemon thread still inside OpenCV
        when the interpreter exits aborts the process ("terminate called without an active
        exception"), which turned a clean Ctrl-C into exit code -6."""
        self._queue.put((-1, -1, "", ""))
        if self._thread is not None:
            self._thread.join(timeout=30)

    def _enqueue(self, cid: str, kind: str, priority: int) -> Future[Path]:
        with self._lock:
            future = self._futures.setdefault((cid, kind), Future())
        if not future.done():
            self._queue.put((priority, next(self._order), cid, kind))
        return future

    def request(self, cid: str, kind: str) -> Future[Path]:
        """The Future of one picture, moved to the front of the queue; KeyError if there is none."""
        if kind not in self.index.get(cid, {}):
            raise KeyError((cid, kind))
        future = self._enqueue(cid, kind, priority=0)
        if self._thread is None:  # not started (a test calling the app directly): make it here
            self._make(cid, kind)
        return future

    def _make(self, cid: str, kind: str) -> None:
        future = self._futures[(cid, kind)]
        if future.done() or not future.set_running_or_notify_cancel():
            return
        src = self.index[cid][kind]
        try:
            future.set_result(thumbnail(self.run_dir, cid, kind, src.picture, src.box, self.max_pixels))
        except Exception as exc:  # handed to the request that waits for it
            future.set_exception(exc)

    def _work(self) -> None:
        while True:
            priority, _, cid, kind = self._queue.get()
            if priority < 0:
                return
            self._make(cid, kind)
