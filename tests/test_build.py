"""`launch.py build` end to end on real photos, real-architecture random-weight models, dlib faces."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

import launch
from builder import build as build_module
from builder.faces import align
from builder.io import load_image
from builder.manifest import FAILED, KEPT, read_jsonl
from builder.swap.fused import FFHQ_SIZE
from tests.fixtures.clip import write_clip_tokenizer

DONORS = ("TaylorSwift14.jpeg", "TaylorSwift111.jpeg", "TaylorSwift255.png")


def build_args(donors: Path, out: Path, source: Path, clip: Path) -> list[str]:
    return [
        "build", "--source", str(source), "--donors", str(donors), "--out", str(out),
        "--random-weights", "--detector", "dlib", "--judge", "dlib", "--batch-size", "2",
        "--device", "cpu", "--caption-backend", "none", "--set", f"caption.clip_tokenizer={clip}",
    ]  # fmt: skip


@pytest.fixture(scope="module")
def built(tmp_path_factory, data_dir, source_photo):
    """One build over 3 photos with a face, one without, one corrupt file, in a nested folder."""
    donors = tmp_path_factory.mktemp("donors")
    for name in DONORS:
        shutil.copy(data_dir / "donors" / name, donors / name)
    (donors / "sub").mkdir()
    shutil.copy(data_dir / "donors" / DONORS[0], donors / "sub" / DONORS[0])  # same name, other folder
    wall = load_image(data_dir / "donors" / DONORS[0])[:120, :120]  # a corner with no face
    import cv2

    cv2.imwrite(str(donors / "no_face.png"), cv2.resize(wall, (400, 400)))
    (donors / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    out = tmp_path_factory.mktemp("run")
    clip = write_clip_tokenizer(tmp_path_factory.mktemp("clip"))
    rc = launch.main(build_args(donors, out, source_photo, clip))
    return donors, out, rc, clip


def test_build_writes_one_full_size_result_per_face(built):
    _, out, rc, _ = built
    assert rc == 0
    records = {r["key"]: r for r in read_jsonl(out / "manifest.jsonl") if not r["parent"]}
    assert set(records) == {*DONORS, f"sub/{DONORS[0]}", "no_face.png", "broken.jpg"}
    with_face = [r for r in records.values() if r["output"]]
    assert len(with_face) == 4
    names = {Path(r["output"]).name for r in with_face}
    assert len(names) == 4  # the two TaylorSwift14.jpeg get different result names
    for r in with_face:
        original = load_image(Path(r["input"]))
        result = load_image(out / r["output"])
        assert result.shape == original.shape
        # Outside the FFHQ crop's footprint nothing may change, to the bit.
        m = np.array(r["transforms"]["ffhq"])
        footprint = align.paste_back(
            np.zeros(original.shape[:2], np.uint8), np.full((FFHQ_SIZE, FFHQ_SIZE), 255, np.uint8), m,
            np.ones((FFHQ_SIZE, FFHQ_SIZE), np.float32),
        ) > 0
        np.testing.assert_array_equal(result[~footprint], original[~footprint])
        assert set(r["timings"]) >= {"decode", "detect", "swap", "restore", "paste", "score"}
        assert r["quality"]["scores"]["face_found"] is True
        assert r["choice"] == {"swapper": {"chosen": "ghost"}, "restorer": {"chosen": "codeformer"}}


def test_unusable_photos_are_recorded_with_their_reason(built):
    _, out, _, _ = built
    records = {r["key"]: r for r in read_jsonl(out / "manifest.jsonl")}
    assert records["no_face.png"]["status"] == FAILED
    assert records["no_face.png"]["reasons"] == ["no face"]
    assert records["broken.jpg"]["status"] == FAILED
    assert "broken.jpg" in records["broken.jpg"]["reasons"][0]
    assert "not a readable image" in records["broken.jpg"]["reasons"][0]


def test_inputs_are_never_modified(built, data_dir):
    donors, _, _, _ = built
    for name in DONORS:
        assert (donors / name).read_bytes() == (data_dir / "donors" / name).read_bytes()


def test_kept_results_fill_the_kohya_folder_and_sheets(built):
    _, out, _, _ = built
    records = [r for r in read_jsonl(out / "manifest.jsonl") if r["status"] == KEPT]
    assert records  # --random-weights keeps every scored result
    folders = list((out / "img").iterdir())
    assert len(folders) == 1 and folders[0].name.endswith("_ohwx woman")
    assert sorted(p.name for p in folders[0].glob("*.png")) == sorted(Path(r["output"]).name for r in records)
    for image in folders[0].glob("*.png"):
        assert image.with_suffix(".txt").read_text(encoding="utf-8").strip() == "ohwx, woman"
    toml = (out / "dataset_config.toml").read_text(encoding="utf-8")
    assert 'caption_extension = ".txt"' in toml and "ohwx woman" in toml
    assert (out / "contact_sheet.png").is_file()
    report = json.loads((out / "source_identity.json").read_text())
    assert len(report["used"]) == 1 and report["failed"] == []


def test_rerun_does_no_work_twice(built, source_photo, monkeypatch):
    donors, out, _, clip = built
    before = {p: p.stat().st_mtime_ns for p in (out / "results").iterdir()}
    manifest_lines = len((out / "manifest.jsonl").read_text().splitlines())

    def no_models(cfg):
        raise AssertionError("a finished build must not load any model")

    monkeypatch.setattr(build_module, "load_models", no_models)
    assert launch.main(build_args(donors, out, source_photo, clip)) == 0
    assert {p: p.stat().st_mtime_ns for p in (out / "results").iterdir()} == before
    assert len((out / "manifest.jsonl").read_text().splitlines()) == manifest_lines


def test_consistent_donor_face_detects_each_photo_once(built, tmp_path, source_photo, monkeypatch):
    """--donor-face consistent: a reference pass, then the main pass reuses its detections."""
    donors, _, _, clip = built
    from builder.faces import detect_dlib

    calls = []
    original = detect_dlib.DlibDetector.detect
    monkeypatch.setattr(detect_dlib.DlibDetector, "detect", lambda self, image: calls.append(1) or original(self, image))
    out = tmp_path / "consistent"
    assert launch.main([*build_args(donors, out, source_photo, clip), "--donor-face", "consistent"]) == 0
    records = {r["key"]: r for r in read_jsonl(out / "manifest.jsonl") if not r["parent"]}
    crops = sum(1 for r in read_jsonl(out / "manifest.jsonl") if r["parent"])
    assert sum(1 for r in records.values() if r["output"]) == 4
    readable = len(records) - 1  # broken.jpg never reaches the detector
    # one detection per readable donor photo, plus the source photo and one re-detection per
    # result and per close-up
    assert len(calls) == readable + 1 + 4 + crops


def test_small_faces_get_closeups_and_every_training_image_a_mask(built):
    """Close-ups: own records naming parent and crop box, at the training resolution, with the
    face where the geometry puts it; masks: one per training image, in the TOML's folder."""
    import tomllib

    from builder.dataset.closeups import closeup_key

    _, out, _, _ = built
    records = {r["key"]: r for r in read_jsonl(out / "manifest.jsonl")}
    crops = [r for r in records.values() if r["parent"]]
    assert crops  # TaylorSwift111 is a small face in a large photo
    for crop in crops:
        parent = records[crop["parent"]]
        assert parent["closeup"] == closeup_key(parent["key"]) == crop["key"]
        image = load_image(out / crop["output"])
        assert image.shape == (512, 512, 3)  # SD 1.5's training resolution
        predicted = align.edge_box_in_crop(np.array(parent["face"]["box"]), np.array(crop["crop_box"]), 512)
        np.testing.assert_allclose(crop["face"]["box"], predicted, atol=0.01)
        assert crop["quality"]["scores"]["face_found"] is True  # scored like any result
    for r in records.values():
        if not r["parent"] and r["output"] and r["key"] not in {c["parent"] for c in crops}:
            assert r["closeup"]  # why there is none
    folder = next((out / "img").iterdir())
    dataset = tomllib.loads((out / "dataset_config.toml").read_text(encoding="utf-8"))
    (subset,) = dataset["datasets"][0]["subsets"]
    masks = Path(subset["conditioning_data_dir"])
    assert tomllib.loads((out / "config.toml").read_text(encoding="utf-8"))["training"]["masked_loss"] is True
    assert json.loads((out / "kohya_gui_lora.json").read_text())["masked_loss"] is True
    images = sorted(p.name for p in folder.glob("*.png"))
    assert sorted(p.name for p in masks.iterdir()) == images  # sd-scripts refuses a missing or extra mask
    lows = []
    for name in images:
        mask = load_image(masks / name)
        assert mask.shape == load_image(folder / name).shape  # sd-scripts checks the sizes match
        assert mask.max() == 255  # the character at full weight
        lows.append(mask.min())
    # the random-weight MODNet may call a whole close-up "person", but not every photo
    assert min(lows) < 255
    assert (out / "contact_sheet_masks.png").is_file()


def test_a_rejected_parent_takes_its_closeup_with_it(built, source_photo, tmp_path):
    from builder.overrides import set_override

    donors, out, _, clip = built
    run = tmp_path / "rerun"
    shutil.copytree(out, run)
    crop = next(r for r in read_jsonl(run / "manifest.jsonl") if r["parent"])
    set_override(run, crop["parent"], "status", "rejected", by="test")
    assert launch.main(build_args(donors, run, source_photo, clip)) == 0
    records = {r["key"]: r for r in read_jsonl(run / "manifest.jsonl")}
    assert records[crop["key"]]["status"] == "rejected" and records[crop["key"]]["decided_by"] == "parent"
    names = {p.name for p in next((run / "img").iterdir()).glob("*.png")}
    assert Path(crop["output"]).name not in names and Path(records[crop["parent"]]["output"]).name not in names
