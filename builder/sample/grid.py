"""The sample grid: one row per epoch (the base-model control first), one column per prompt and seed.

Every tile carries its identity score, every row its label and summary, so the picture
alone tells which epoch learned the face.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFont

TILE = 256  # px; big enough to judge a face, small enough for 10 epochs x 8 columns
LABEL_W = 230
HEADER_H = 44
PAD = 4
BG = (24, 24, 24)
TEXT = (235, 235, 235)
GOOD = (90, 200, 90)
WEAK = (230, 160, 60)
BEST = (80, 220, 120)


@dataclass(frozen=True)
class Tile:
    image_bgr: np.ndarray
    caption: str  # e.g. "0.43" or "no face"
    good: bool  # at or above the identity threshold


@dataclass(frozen=True)
class Row:
    label: str
    summary: list[str]  # short lines under the label
    tiles: list[Tile]
    best: bool = False


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    return ImageFont.load_default(size=size)


def _fit(image_bgr: np.ndarray) -> Image.Image:
    im = Image.fromarray(np.ascontiguousarray(image_bgr[:, :, ::-1]))
    scale = TILE / max(im.size)
    size = (max(1, round(im.width * scale)), max(1, round(im.height * scale)))
    # Small test renders are enlarged with NEAREST so their pixels stay honest.
    return im.resize(size, Image.Resampling.NEAREST if scale > 1 else Image.Resampling.LANCZOS)


def draw_grid(rows: list[Row], columns: list[str]) -> np.ndarray:
    """Render the grid as uint8 BGR (for builder.io.write_image)."""
    n_cols = max((len(r.tiles) for r in rows), default=0)
    width = LABEL_W + n_cols * (TILE + PAD) + PAD
    height = HEADER_H + len(rows) * (TILE + PAD) + PAD
    canvas = Image.new("RGB", (width, height), BG)
    draw = ImageDraw.Draw(canvas)
    small, big = _font(13), _font(17)
    for c, title in enumerate(columns):
        x = LABEL_W + PAD + c * (TILE + PAD)
        draw.text((x + 4, 6), _clip(draw, title, small, TILE - 8), fill=TEXT, font=small)
    for r, row in enumerate(rows):
        y = HEADER_H + r * (TILE + PAD)
        if row.best:
            draw.rectangle((0, y - 2, width - 1, y + TILE + 1), outline=BEST, width=3)
        label = row.label + ("  BEST" if row.best else "")
        draw.text((8, y + 8), _clip(draw, label, big, LABEL_W - 12), fill=BEST if row.best else TEXT, font=big)
        for i, line in enumerate(row.summary):
            draw.text((8, y + 36 + 20 * i), _clip(draw, line, small, LABEL_W - 12), fill=TEXT, font=small)
        for c, tile in enumerate(row.tiles):
            x = LABEL_W + PAD + c * (TILE + PAD)
            im = _fit(tile.image_bgr)
            canvas.paste(im, (x + (TILE - im.width) // 2, y + (TILE - im.height) // 2))
            box = draw.textbbox((0, 0), tile.caption, font=big)
            bw, bh = box[2] - box[0] + 10, box[3] - box[1] + 8
            draw.rectangle((x, y + TILE - bh, x + bw, y + TILE), fill=(0, 0, 0))
            draw.text((x + 5, y + TILE - bh + 2), tile.caption, fill=GOOD if tile.good else WEAK, font=big)
    return np.ascontiguousarray(np.asarray(canvas)[:, :, ::-1])


def _clip(draw: ImageDraw.ImageDraw, text: str, font: ImageFont.ImageFont | ImageFont.FreeTypeFont, width: int) -> str:
    """Shorten ``text`` with an ellipsis until it fits ``width`` pixels."""
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength(text + "…", font=font) > width:
        text = text[:-1]
    return text + "…"
