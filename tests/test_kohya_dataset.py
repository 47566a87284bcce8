"""The kohya folder layout, repeats from the step budget, captions on disk, reg images."""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np
import pytest

from builder.errors import BuilderError
from builder.kohya.dataset import (
    choose_repeats,
    detect_caption_extension,
    finalize_dataset,
    instance_dir,
)
from tests.fixtures.kohya import add_image, make_images, tiny_config


def sd_scripts_extract_dreambooth_params(name: str) -> tuple[int, str]:
    """sd-scripts library/config_util.py, generate_dreambooth_subsets_config_by_subdirs
    -> extract_dreambooth_params (48d368fa): int before the first '_', rest is class tokens;
    a folder that does not parse counts as 0 repeats and is skipped."""
    tokens = name.split("_")
    try:
        n_repeats = int(tokens[0])
    except ValueError:
        return 0, ""
    return n_repeats, "_".join(tokens[1:])


@pytest.mark.parametrize("trigger", ["ohwx", "oh_wx", "zxq-9"])
def test_folder_names_parse_as_sd_scripts_parses_them(tmp_path: Path, trigger: str) -> None:
    cfg = tiny_config(trigger=trigger)
    make_images(tmp_path, cfg, 3)
    ds = finalize_dataset(tmp_path, cfg)
    repeats, tokens = sd_scripts_extract_dreambooth_params(ds.image_dir.name)
    assert repeats == ds.repeats >= 1
    assert tokens == f"{trigger} woman"
    assert ds.image_dir.parent == tmp_path / "img"
    assert {p.name for p in tmp_path.iterdir()} >= {"img", "model", "log"}
    assert [p.name for p in ds.images] == ["0001.png", "0002.png", "0003.png"]


@pytest.mark.parametrize("images,epochs,batch,target,reg", [
    (5, 10, 1, 1600, False), (37, 10, 2, 1600, False), (300, 10, 1, 1600, False),
    (7, 3, 4, 999, True), (1, 1, 1, 1, False), (44, 12, 3, 2500, True),
])
def test_repeats_are_the_closest_to_the_step_budget(images, epochs, batch, target, reg) -> None:
    plan = choose_repeats(images, epochs, batch, target, reg)

    def steps(r: int) -> int:  # sd-scripts: reg items fill up to the train items, batches per epoch
        return math.ceil(images * r * (2 if reg else 1) / batch) * epochs

    best = min(range(1, 2000), key=lambda r: (abs(steps(r) - target), r))
    assert plan.repeats == best
    assert plan.total_steps == steps(best)
    assert str(plan.total_steps) in plan.describe()


def test_no_images_is_a_clear_error(tmp_path: Path) -> None:
    cfg = tiny_config()
    instance_dir(tmp_path, cfg)
    with pytest.raises(BuilderError, match="no images"):
        finalize_dataset(tmp_path, cfg)


@pytest.mark.parametrize("trigger", ["a/b", "x:y", 'q"t', "end.", ""])
def test_triggers_that_break_folder_names_are_refused(tmp_path: Path, trigger: str) -> None:
    with pytest.raises(BuilderError, match=r"character\.trigger"):
        instance_dir(tmp_path, tiny_config(trigger=trigger))


def test_more_images_after_finalize_rename_the_folder(tmp_path: Path) -> None:
    cfg = tiny_config()
    make_images(tmp_path, cfg, 5)
    first = finalize_dataset(tmp_path, cfg)
    assert first.image_dir.name == "32_ohwx woman"  # 5 x 32 x 10 epochs = 1600
    # A resumed build keeps adding into the renamed folder, then finalizes again.
    path = add_image(tmp_path, cfg, np.zeros((32, 32, 3), np.uint8), caption="ohwx, woman, more")
    assert path == first.image_dir / "0006.png"
    make_images(tmp_path, cfg, 4)
    second = finalize_dataset(tmp_path, cfg)
    assert second.image_dir.name == "16_ohwx woman"
    assert not first.image_dir.exists()
    assert [p.name for p in second.images] == [f"{i:04d}.png" for i in range(1, 11)]
    assert all(p.with_suffix(".txt").is_file() for p in second.images)


def test_caption_extension_is_read_from_disk(tmp_path: Path) -> None:
    cfg = tiny_config()
    cfg.caption.extension = ".caption"
    make_images(tmp_path, cfg, 3)
    ds = finalize_dataset(tmp_path, cfg)
    assert ds.caption_extension == ".caption"
    assert ds.uncaptioned == []
    # The config says .txt, the disk says .caption: the disk wins (it is what sd-scripts reads).
    cfg.caption.extension = ".txt"
    assert finalize_dataset(tmp_path, cfg).caption_extension == ".caption"


def test_mixed_caption_extensions_are_refused(tmp_path: Path) -> None:
    cfg = tiny_config()
    images = make_images(tmp_path, cfg, 2)
    images[1].with_suffix(".txt").rename(images[1].with_suffix(".caption"))
    with pytest.raises(BuilderError, match=r"split between \.txt and \.caption"):
        detect_caption_extension(images)


def test_uncaptioned_images_are_listed(tmp_path: Path) -> None:
    cfg = tiny_config()
    make_images(tmp_path, cfg, 2)
    make_images(tmp_path, cfg, 1, caption=None)
    ds = finalize_dataset(tmp_path, cfg)
    assert ds.caption_extension == ".txt"
    assert [p.name for p in ds.uncaptioned] == ["0003.png"]


def test_reg_images_go_to_reg_repeats_class(tmp_path: Path) -> None:
    reg_src = tmp_path / "regsrc"
    reg_src.mkdir()
    for i, ext in enumerate([".jpg", ".PNG", ".tif"]):
        cv2.imwrite(str(reg_src / f"Reg Photo {i}{ext}"), np.full((40, 40, 3), i * 40, np.uint8))
    out = tmp_path / "run"
    cfg = tiny_config()
    cfg.paths.reg = str(reg_src)
    cfg.kohya.reg_repeats = 2
    make_images(out, cfg, 4)
    ds = finalize_dataset(out, cfg)
    assert ds.reg_dir == out / "reg" / "2_woman"
    assert sd_scripts_extract_dreambooth_params(ds.reg_dir.name) == (2, "woman")
    assert sorted(p.name for p in ds.reg_images) == ["0001.jpg", "0002.png", "0003.png"]
    assert ds.plan.with_reg and ds.plan.steps_per_epoch == 4 * ds.repeats * 2
    again = finalize_dataset(out, cfg)  # idempotent: nothing duplicated
    assert len(again.reg_images) == 3
