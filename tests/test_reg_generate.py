"""--reg-generate on tiny random-weight SD 1.5 and SDXL pipelines: files, captions, resume."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from builder.io import write_image
from builder.kohya.files import write_kohya_files
from builder.sources.reg import RECORD, SHEET, generate_reg
from tests.fixtures.dataset_runs import kept_results
from tests.fixtures.kohya import tiny_config
from tests.fixtures.threads import torch_threads
from tests.fixtures.tiny_sd import save_tiny_pipeline
from tests.fixtures.tiny_sdxl import save_tiny_sdxl_pipeline


@pytest.fixture(autouse=True, scope="module")
def one_thread() -> Iterator[None]:
    with torch_threads(1):
        yield


@pytest.mark.slow
@pytest.mark.parametrize("family", ["sd15", "sdxl"])
def test_reg_images_are_rendered_captioned_and_resumed(tmp_path: Path, family: str) -> None:
    base = (save_tiny_pipeline if family == "sd15" else save_tiny_sdxl_pipeline)(tmp_path / "base")
    cfg = tiny_config()
    cfg.paths.base_model = str(base)
    cfg.runtime.device = "cpu"
    cfg.kohya.resolution = 64
    cfg.kohya.reg_repeats = 2
    cfg.sample.steps = 1
    cfg.dataset.reg_generate = 3
    cfg.dataset.reg_prompts = ["photo of a {class_word}", "portrait of a {class_word}"]
    out = tmp_path / "run"
    first = generate_reg(cfg, out)
    folder = out / "reg" / "2_woman"
    assert first.folder == folder and first.rendered == 3
    images = sorted(folder.glob("gen_*.png"))
    assert len(images) == 3
    captions = [p.with_suffix(".txt").read_text() for p in images]
    assert captions == ["photo of a woman", "portrait of a woman", "photo of a woman"]  # never the trigger
    record = json.loads((out / RECORD).read_text())
    assert [im["seed"] for im in record["images"]] == [1000, 1001, 1002] and (out / SHEET).is_file()

    stamps = {p.name: p.stat().st_mtime_ns for p in images}
    again = generate_reg(cfg, out)
    assert again.rendered == 0 and {p.name: p.stat().st_mtime_ns for p in folder.glob("gen_*.png")} == stamps

    write_image(folder / "mine.png", np.zeros((8, 8, 3), np.uint8))
    cfg.dataset.reg_generate = 2
    cfg.sample.steps = 2  # a changed setting renders new files; the old generated ones go
    third = generate_reg(cfg, out)
    assert third.rendered == 2 and len(list(folder.glob("gen_*.png"))) == 2
    assert not set(stamps) & {p.name for p in folder.glob("gen_*.png")}
    assert (folder / "mine.png").is_file()  # a person's image is not ours to remove

    if family == "sd15":  # the generated images are the reg subset sd-scripts reads
        import tomllib

        from builder.build import settle

        settle(out, cfg, kept_results(out, cfg, n=4))
        doc = tomllib.loads(write_kohya_files(out, cfg).dataset_config.read_text())
        (reg,) = [s for s in doc["datasets"][0]["subsets"] if s.get("is_reg")]
        assert Path(reg["image_dir"]) == folder.resolve() and reg["num_repeats"] == 2
