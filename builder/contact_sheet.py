"""Contact sheets: every kept (or rejected) picture as a labelled thumbnail on one image.

The grid is fixed by the count alone: ``cols = min(8, ceil(sqrt(n)))``,
``rows = ceil(n / cols)``; each cell is ``thumb`` x ``thumb`` (the picture letterboxed,
aspect kept) above a label strip of two text lines, ``LABEL_LINES * line_height(thumb)``
pixels high. So the sheet is ``cols * thumb`` wide and ``rows * (thumb + strip)`` high.
"""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np

from builder.io import load_image, write_image
from builder.quality.decide import Assessment

LABEL_LINES = 2
BACKGROUND = (32, 32, 32)
TEXT = (235, 235, 235)
FONT = cv2.FONT_HERSHEY_SIMPLEX


def grid_shape(n: int) -> tuple[int, int]:
    """(cols, rows) for ``n`` pictures."""
    if n <= 0:
        return 0, 0
    cols = min(8, math.ceil(math.sqrt(n)))
    return cols, math.ceil(n / cols)


def _font_scale(thumb: int) -> float:
    return max(0.3, thumb / 640)


def line_height(thumb: int) -> int:
    (_, h), base = cv2.getTextSize("Ag", FONT, _font_scale(thumb), 1)
    return h + base + 4


def _wrap(label: str, width: int, scale: float) -> list[str]:
    """Greedy wrap into at most LABEL_LINES lines; words wider than a line are split,
    and the last line ends in '...' when text is left over."""

    def fits(text: str) -> bool:
        return cv2.getTextSize(text, FONT, scale, 1)[0][0] <= width

    tokens: list[str] = []
    for word in label.split():
        while len(word) > 1 and not fits(word):
            cut = len(word) - 1
            while cut > 1 and not fits(word[:cut]):
                cut -= 1
            tokens.append(word[:cut])
            word = word[cut:]
        tokens.append(word)
    lines: list[str] = []
    while tokens and len(lines) < LABEL_LINES:
        line = tokens.pop(0)
        while tokens and fits(f"{line} {tokens[0]}"):
            line = f"{line} {tokens.pop(0)}"
        lines.append(line)
    if tokens:
        last = lines[-1]
        while last and not fits(last + "..."):
            last = last[:-1]
        lines[-1] = last + "..."
    return lines


def _thumbnail(image: np.ndarray, thumb: int) -> np.ndarray:
    h, w = image.shape[:2]
    scale = thumb / max(h, w)
    nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
    small = cv2.resize(image, (nw, nh), interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC)
    cell = np.full((thumb, thumb, 3), BACKGROUND, dtype=np.uint8)
    y, x = (thumb - nh) // 2, (thumb - nw) // 2
    cell[y : y + nh, x : x + nw] = small
    return cell


# A sheet holds at most about this many pixels (48 MB): with thousands of results the
# thumbnails shrink instead of the sheet's memory growing with the donor folder.
SHEET_BUDGET = 16_000_000
MIN_THUMB = 64


def fitted_thumb(n: int, thumb: int) -> int:
    """``thumb``, or a smaller side that keeps ``n`` cells (with their labels) within SHEET_BUDGET."""
    fit = int((SHEET_BUDGET / (max(n, 1) * 1.3)) ** 0.5)  # 1.3: the label strip under each thumbnail
    return min(thumb, max(MIN_THUMB, fit))


def render_contact_sheet(
    items: list[tuple[Path | np.ndarray, str]], thumb: int = 256, max_pixels: int = 60_000_000
) -> np.ndarray:
    """The sheet as a BGR array; items are (image path or BGR array, label)."""
    cols, rows = grid_shape(len(items))
    if not items:
        raise ValueError("a contact sheet needs at least one picture")
    lh = line_height(thumb)
    cell_h = thumb + LABEL_LINES * lh
    sheet = np.full((rows * cell_h, cols * thumb, 3), BACKGROUND, dtype=np.uint8)
    scale = _font_scale(thumb)
    for i, (src, label) in enumerate(items):
        image = load_image(Path(src), max_pixels) if not isinstance(src, np.ndarray) else src
        y0, x0 = (i // cols) * cell_h, (i % cols) * thumb
        sheet[y0 : y0 + thumb, x0 : x0 + thumb] = _thumbnail(image, thumb)
        for k, text in enumerate(_wrap(label, thumb - 6, scale)):
            baseline = y0 + thumb + (k + 1) * lh - 6
            cv2.putText(sheet, text, (x0 + 3, baseline), FONT, scale, TEXT, 1, cv2.LINE_AA)
    return sheet


def write_contact_sheet(
    items: list[tuple[Path | np.ndarray, str]], out_path: Path, thumb: int = 256, max_pixels: int = 60_000_000
) -> Path | None:
    """Write the sheet atomically; with no pictures nothing is written and None returned."""
    if not items:
        return None
    write_image(Path(out_path), render_contact_sheet(items, fitted_thumb(len(items), thumb), max_pixels))
    return Path(out_path)


KEPT_SHEET = "contact_sheet.png"
REJECTS_SHEET = "contact_sheet_rejects.png"


def write_quality_sheets(
    pictures: list[tuple[Path, Assessment]],
    out_dir: Path,
    thumb: int = 256,
    max_pixels: int = 60_000_000,
    made_by: dict[str, str] | None = None,
) -> tuple[Path | None, Path | None]:
    """``contact_sheet.png`` of the kept pictures (labelled with name and combined score)
    and ``contact_sheet_rejects.png`` of the rest (labelled with name and reasons). A kept
    label also carries the report judge's cosine to the source, e.g. ``dlib 0.94``.

    ``pictures`` pairs each assessment with the file to show: the result, or the donor
    photo where no result was made. ``made_by`` (by assessment name) adds the swapper and
    restorer a "best" mode chose to the label. A sheet with nothing on it is not written.
    """
    made_by = made_by or {}

    def tag(a: Assessment) -> str:
        return f" [{made_by[a.name]}]" if a.name in made_by else ""

    def report(a: Assessment) -> str:
        # How the report judge (faces.report_judge) saw the result the selection judge let through.
        s = a.scores
        return "" if s.report_source_similarity is None else f" {s.report_judge} {s.report_source_similarity:.2f}"

    kept = [(p, f"{a.name} {a.combined:.2f}{report(a)}{tag(a)}") for p, a in pictures if a.decision.kept]
    rejected = [
        (p, f"{a.name}{tag(a)}: {'; '.join(a.decision.reasons)}") for p, a in pictures if not a.decision.kept
    ]
    return (
        write_contact_sheet(kept, Path(out_dir) / KEPT_SHEET, thumb, max_pixels),
        write_contact_sheet(rejected, Path(out_dir) / REJECTS_SHEET, thumb, max_pixels),
    )
