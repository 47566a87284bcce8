"""What `run`/`build` fetch before starting, and that an offline first run fails fast and clean."""

from __future__ import annotations

import time

import launch
from builder.config import Config
from builder.pipeline import missing_weights


def test_a_random_weight_run_needs_nothing_from_the_network(tmp_path):
    cfg = Config()
    cfg.runtime.random_weights = True
    cfg.runtime.weights_dir = str(tmp_path)
    cfg.paths.base_model = str(tmp_path / "model.safetensors")
    assert missing_weights(cfg, ("build", "caption", "train", "sample")) == []
    cfg.paths.base_model = ""  # the generated random SD 1.5: nothing to download either
    assert missing_weights(cfg, ("build", "caption", "train", "sample")) == []


def test_a_real_run_lists_every_missing_file_and_the_base_model(tmp_path):
    cfg = Config()
    cfg.runtime.weights_dir = str(tmp_path)
    needed = missing_weights(cfg, ("build", "caption", "train", "sample"))
    assert {"ghost_unet_2blocks", "ghost_arcface", "antelopev2", "codeformer", "parsing_bisenet", "blip_large", "epicrealism"} <= set(needed)
    assert "epicrealism" not in missing_weights(cfg, ("build", "caption"))
    assert "clip_vit_b32" in needed and "clip_vit_b32" not in missing_weights(cfg, ("build", "caption", "train"))
    cfg.paths.base_model = "sd15"  # vanilla SD 1.5, one name away
    assert "sd15" in missing_weights(cfg, ("train",)) and "epicrealism" not in missing_weights(cfg, ("train",))
    cfg.swap.restorer, cfg.faces.detector, cfg.faces.judge = "gfpgan", "dlib", "dlib"
    needed = missing_weights(cfg, ("build",))
    assert "gfpgan_v1.4" in needed and "codeformer" not in needed and "antelopev2" not in needed


def test_offline_first_run_fails_fast_naming_files_before_any_work(tmp_path, source_photo, data_dir, capsys):
    out = tmp_path / "run"
    start = time.monotonic()
    rc = launch.main([
        "build", "--source", str(source_photo), "--donors", str(data_dir / "donors"), "--out", str(out),
        "--weights-dir", str(tmp_path / "weights"),
    ])  # fmt: skip
    assert rc != 0
    assert time.monotonic() - start < 60
    err = " ".join(capsys.readouterr().err.split())
    for name in ("G_unet_2blocks.pth", "codeformer.pth", "antelopev2.zip"):
        assert name in err
    assert "https://github.com/sczhou/CodeFormer/releases/download/v0.1.0/codeformer.pth" in err
    assert str(tmp_path / "weights") in err
    assert not (out / "manifest.jsonl").exists()


def test_until_build_still_writes_the_kohya_files(tmp_path, monkeypatch):
    """Without the caption stage the TOMLs come from the build's images; with it, only once after."""
    from builder import pipeline
    from tests.fixtures.kohya import make_images, tiny_config

    cfg = tiny_config()
    cfg.paths.out = str(tmp_path)
    cfg.runtime.random_weights = True
    cfg.paths.base_model = str(tmp_path / "model.safetensors")
    make_images(tmp_path, cfg, 2)
    monkeypatch.setitem(pipeline.RUNNERS, "build", lambda cfg, run: run.stages.update(build="stub"))
    run = pipeline.run_stages(cfg, until="build")
    assert run.kohya is not None and (tmp_path / "config.toml").is_file() and (tmp_path / "dataset_config.toml").is_file()
