"""Contact sheets: grid size from the count, cells in order, labels drawn, atomic write."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from builder.config import QualityConfig
from builder.contact_sheet import (
    BACKGROUND,
    FONT,
    LABEL_LINES,
    _font_scale,
    _wrap,
    grid_shape,
    line_height,
    write_contact_sheet,
    write_quality_sheets,
)
from builder.quality import Scores, assess


@pytest.mark.parametrize(
    ("n", "cols", "rows"), [(1, 1, 1), (2, 2, 1), (5, 3, 2), (9, 3, 3), (10, 4, 3), (43, 7, 7), (70, 8, 9)]
)
def test_grid_shape(n: int, cols: int, rows: int) -> None:
    assert grid_shape(n) == (cols, rows)


def test_sheet_of_real_photos_has_the_documented_size(donor_photos, tmp_path) -> None:
    items = [(p, p.name) for p in donor_photos[:5]]
    out = write_contact_sheet(items, tmp_path / "contact_sheet.png", thumb=128)
    sheet = cv2.imread(str(out))
    assert sheet is not None
    cols, rows = grid_shape(5)
    assert sheet.shape == (rows * (128 + LABEL_LINES * line_height(128)), cols * 128, 3)
    # The one empty cell (5 pictures in a 3x2 grid) is plain background.
    cell_h = 128 + LABEL_LINES * line_height(128)
    assert (sheet[cell_h:, 2 * 128 :] == BACKGROUND).all()
    assert [p.name for p in tmp_path.iterdir()] == ["contact_sheet.png"]  # no temp file left


def test_cells_follow_item_order_and_labels_are_drawn(tmp_path) -> None:
    colours = [(0, 0, 255), (0, 255, 0), (255, 0, 0), (0, 255, 255)]
    items = [(np.full((40, 60, 3), c, np.uint8), f"reject {i}: blurry") for i, c in enumerate(colours)]
    items[3] = (items[3][0], "")
    out = write_contact_sheet(items, tmp_path / "rejects.png", thumb=64)
    sheet = cv2.imread(str(out))
    cell_h = 64 + LABEL_LINES * line_height(64)
    for i, colour in enumerate(colours):
        y0, x0 = (i // 2) * cell_h, (i % 2) * 64
        assert tuple(int(v) for v in sheet[y0 + 32, x0 + 32]) == colour
        # 60x40 letterboxed into 64x64: the top rows are background.
        assert tuple(int(v) for v in sheet[y0 + 2, x0 + 32]) == BACKGROUND
        strip = sheet[y0 + 64 : y0 + cell_h, x0 : x0 + 64]
        has_text = bool((strip != BACKGROUND).any())
        assert has_text == (i != 3)


def test_long_labels_wrap_into_two_lines_that_fit() -> None:
    scale = _font_scale(128)
    label = "TaylorSwift104_with_a_very_long_name.jpeg near-duplicate of TaylorSwift105.jpeg and more words"
    lines = _wrap(label, 122, scale)
    assert len(lines) == LABEL_LINES
    assert lines[-1].endswith("...")
    assert all(cv2.getTextSize(t, FONT, scale, 1)[0][0] <= 122 for t in lines)
    assert _wrap("kept", 122, scale) == ["kept"]


def test_empty_sheet_writes_nothing(tmp_path) -> None:
    assert write_contact_sheet([], tmp_path / "none.png") is None
    assert not (tmp_path / "none.png").exists()


def test_quality_sheets_split_kept_and_rejected(tmp_path) -> None:
    q = QualityConfig()
    pictures = []
    for i in range(7):
        scores = Scores(det_score=0.9, face_px=200.0 if i < 5 else 20.0, blur_ratio=1.0)
        pictures.append((np.full((50, 50, 3), 40 * i, np.uint8), assess(f"{i:04d}.png", scores, q)))
    kept, rejects = write_quality_sheets(pictures, tmp_path, thumb=48)
    cell_h = 48 + LABEL_LINES * line_height(48)
    assert cv2.imread(str(kept)).shape == (2 * cell_h, 3 * 48, 3)  # 5 kept: 3 x 2
    assert cv2.imread(str(rejects)).shape == (cell_h, 2 * 48, 3)  # 2 rejected: 2 x 1
    assert (kept.name, rejects.name) == ("contact_sheet.png", "contact_sheet_rejects.png")
    only_kept = tmp_path / "only_kept"
    assert write_quality_sheets(pictures[:5], only_kept, thumb=48)[1] is None
    assert not (only_kept / "contact_sheet_rejects.png").exists()


def test_thumbnails_shrink_so_a_huge_sheet_stays_within_its_budget():
    from builder.contact_sheet import MIN_THUMB, SHEET_BUDGET, fitted_thumb

    assert fitted_thumb(40, 256) == 256
    for n in (500, 2000):
        side = fitted_thumb(n, 256)
        assert MIN_THUMB <= side < 256
        assert n * side * side * 1.3 <= SHEET_BUDGET
