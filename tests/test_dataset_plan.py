"""Pose balance, the validation split and the dataset plan, without any model: known answers."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import numpy as np
import pytest

from builder.build import settle
from builder.config import DatasetConfig
from builder.dataset.plan import POSE_CAPPED, TRAIN, VALIDATION, WITH_PARENT, plan_dataset
from builder.dataset.pose_balance import UNKNOWN, PosedPhoto, balance, bin_of, cap_for
from builder.dataset.validation import check_before_work, choose_held_out, split_size
from builder.errors import BuilderError, ConfigError
from builder.io import write_image
from builder.kohya.files import write_kohya_files
from builder.manifest import KEPT, Manifest, Record, result_name
from builder.quality.decide import assess
from builder.quality.scores import Scores
from tests.fixtures.dataset_runs import COMBINATIONS, write_run
from tests.fixtures.kohya import fake_base_model, tiny_config

YAW, PITCH = [-35.0, -12.0, 12.0, 35.0], [-15.0, 15.0]
FRONTAL = "yaw -12..12 / pitch -15..15"
GOOD = {"det_score": 0.9, "face_px": 200.0, "blur_ratio": 1.0, "source_similarity": 0.9, "donor_similarity": 0.1, "judge": "dlib"}


def skewed() -> list[PosedPhoto]:
    """12 frontal photos (scores 0.0 .. 1.1), 3 turned left, 3 turned right, 2 looking up."""
    photos = [PosedPhoto(f"front{i:02d}", 0.0, 0.0, score=i / 10) for i in range(12)]
    photos += [PosedPhoto(f"left{i}", -25.0, 0.0) for i in range(3)]
    photos += [PosedPhoto(f"right{i}", 25.0, 3.0) for i in range(3)]
    photos += [PosedPhoto(f"up{i}", 0.0, 25.0) for i in range(2)]
    return photos


def test_bins_follow_the_edges_and_nan_is_unknown() -> None:
    assert bin_of(0.0, 0.0, YAW, PITCH) == FRONTAL
    assert bin_of(-40.0, 20.0, YAW, PITCH) == "yaw <-35 / pitch >=15"
    assert bin_of(12.0, -15.0, YAW, PITCH) == "yaw 12..35 / pitch -15..15"  # an edge belongs to the bin above it
    assert bin_of(float("nan"), 0.0, YAW, PITCH) == UNKNOWN and bin_of(None, None, YAW, PITCH) == UNKNOWN


def test_pose_skewed_folder_comes_out_balanced() -> None:
    # 12 of 20 frontal (60%). The largest cap k with min(12, k) <= 0.5 * (min(12, k) + 8) is 8.
    result = balance(skewed(), YAW, PITCH, max_share=0.5, floor=8, mode="cap")
    assert result.cap == 8
    assert result.before[FRONTAL] == 12 and result.after[FRONTAL] == 8
    assert result.after[FRONTAL] / sum(result.after.values()) <= 0.5
    # the four lowest scored frontal photos leave; every other pose stays
    assert sorted(result.dropped) == ["front00", "front01", "front02", "front03"]
    assert {k for k in result.kept if not k.startswith("front")} == {p.key for p in skewed() if not p.key.startswith("front")}


def test_cap_respects_the_floor_and_needs_two_bins() -> None:
    assert cap_for([10, 1], 0.5, floor=0) == 1
    assert cap_for([10, 1], 0.5, floor=8) == 7  # 7 + 1 = 8 training photos
    assert cap_for([10, 1], 0.5, floor=11) is None  # no cap leaves 11
    assert cap_for([10], 0.5, floor=0) is None
    assert cap_for([3, 3, 3], 0.5, floor=0) is None  # balanced already


def test_a_person_kept_photo_stays_in_a_capped_bin() -> None:
    photos = [PosedPhoto(p.key, p.yaw, p.pitch, p.score, pinned=p.key == "front00") for p in skewed()]
    result = balance(photos, YAW, PITCH, max_share=0.5, floor=8, mode="cap")
    assert "front00" in result.kept and sorted(result.dropped) == ["front01", "front02", "front03", "front04"]
    off = balance(photos, YAW, PITCH, max_share=0.5, floor=8, mode="off")
    assert off.dropped == {} and off.cap is None


@pytest.mark.parametrize(("photos", "held"), [(9, 0), (10, 2), (30, 3), (40, 4)])
def test_validation_is_on_from_ten_photos(photos: int, held: int) -> None:
    size = split_size(photos, DatasetConfig())
    assert size.held == held
    assert ("off" in size.note) == (held == 0)


def test_default_share_shrinks_but_a_set_share_is_an_error() -> None:
    dc = DatasetConfig(min_train_images=9)
    assert split_size(10, dc).held == 0  # 10 - 2 < 9: the default gives way
    dc = DatasetConfig(validation_share=0.5)
    with pytest.raises(ConfigError, match=re.escape("validation_share = 0.5 holds out 6 of 12 photos and leaves 6")):
        split_size(12, dc)
    with pytest.raises(ConfigError, match=re.escape("validation_share = 0.5")):
        check_before_work(12, dc)  # before any photo is processed
    check_before_work(5, dc)  # under validation_min_photos there is no split to fail
    with pytest.raises(ConfigError, match="must be above 0 and below 1"):
        check_before_work(50, DatasetConfig(validation_share=1.0))
    assert split_size(40, DatasetConfig(validation=False)).note.startswith("off")


def test_held_out_photos_come_from_the_fullest_bin_and_are_stable() -> None:
    bins = {p.key: bin_of(p.yaw, p.pitch, YAW, PITCH) for p in skewed()}
    held = choose_held_out(bins, 3, seed=0)
    assert all(k.startswith("front") for k in held)
    assert choose_held_out(bins, 3, seed=0) == held
    bins["front99"] = FRONTAL
    assert len(set(choose_held_out(bins, 3, seed=0)) & set(held)) >= 2  # one more photo moves one at most


def _records(n: int) -> list[Record]:
    out = []
    for i in range(n):
        yaw = 0.0 if i < n - 3 else 25.0
        q = assess(f"p{i:02d}.png", Scores(**GOOD, yaw=yaw, pitch=0.0), tiny_config().quality)
        out.append(Record(key=f"p{i:02d}.jpg", input="", status=KEPT, quality=q.to_dict()))
    return out


def test_plan_keeps_close_ups_out_of_validation_and_with_their_parent() -> None:
    cfg = tiny_config()
    records = _records(12)
    plan = plan_dataset(records, cfg)
    held = plan.keys(VALIDATION)
    assert len(held) == 2
    crops = []
    for parent in (held[0], plan.keys(TRAIN)[0]):
        crop = Record(key=f"{parent}#closeup", input="", status=KEPT, quality=records[0].quality)
        crop.parent = parent  # dataset-a's close-up records name their parent
        crops.append(crop)
    plan = plan_dataset(records + crops, cfg)
    assert plan.keys(VALIDATION) == held  # close-ups never change the split
    assert plan.roles[crops[0].key] == WITH_PARENT and plan.roles[crops[1].key] == TRAIN
    assert crops[0].key not in plan.bins  # close-ups are not counted in the pose histogram


def make_run(out: Path, n: int, frontal: int) -> Manifest:
    cfg = tiny_config()
    manifest = Manifest(out / "manifest.jsonl")
    rng = np.random.default_rng(0)
    for i in range(n):
        key = f"photo{i:02d}.jpg"
        name = result_name(key)
        write_image(out / "results" / name, rng.integers(0, 255, (40, 40, 3), dtype=np.uint8))
        yaw = 0.0 if i < frontal else (25.0 if i % 2 else -25.0)
        q = assess(name, Scores(**GOOD, yaw=yaw, pitch=0.0, phash=f"{rng.integers(0, 2**63):016x}"), cfg.quality)
        manifest.add(Record(key=key, input=key, status=KEPT, output=f"results/{name}", quality=q.to_dict()))
    return manifest


def test_settle_writes_validation_folder_and_pose_balance_into_the_manifest(tmp_path: Path) -> None:
    cfg = tiny_config()
    manifest = make_run(tmp_path, 20, frontal=14)
    image_dir, plan = settle(tmp_path, cfg, manifest)
    val = tmp_path / "val" / "1_ohwx woman"
    held = sorted(p.name for p in val.iterdir())
    assert len(held) == 2
    trained = sorted(p.name for p in image_dir.iterdir())
    assert not set(held) & set(trained)
    recs = Manifest(tmp_path / "manifest.jsonl").records
    roles = {k: r.dataset["role"] for k, r in recs.items()}
    assert sum(r == VALIDATION for r in roles.values()) == 2
    # 12 frontal left after the split against 6 turned: capped at 6 (6 <= 0.5 * 12)
    assert plan.pose_cap == 6 and sum(r == POSE_CAPPED for r in roles.values()) == 6
    assert len(trained) == 12 and all("pose balance" in recs[k].dataset["reason"] for k, r in roles.items() if r == POSE_CAPPED)
    assert (tmp_path / "dataset_plan.json").is_file()

    # a caption written for a validation photo moves with it when it trains again
    moving = val / held[0]
    moving.with_suffix(".txt").write_text("ohwx, woman, by hand")
    cfg.dataset.validation = False
    cfg.dataset.pose_balance = "off"
    image_dir, _ = settle(tmp_path, cfg, Manifest(tmp_path / "manifest.jsonl"))
    assert not list(val.iterdir()) and len(list(image_dir.glob("*.png"))) == 20
    assert (image_dir / held[0]).with_suffix(".txt").read_text() == "ohwx, woman, by hand"


def test_kohya_files_hold_the_validation_dataset_and_dop(tmp_path: Path) -> None:
    cfg = tiny_config()
    cfg.paths.base_model = str(fake_base_model(tmp_path))
    settle(tmp_path, cfg, make_run(tmp_path, 12, frontal=6))
    files = write_kohya_files(tmp_path, cfg)
    doc = tomllib.loads(files.dataset_config.read_text())
    assert len(doc["datasets"]) == 2
    train_ds, val_ds = doc["datasets"]
    assert val_ds["validation_split"] == 1.0 and "validation_split" not in train_ds
    assert Path(val_ds["subsets"][0]["image_dir"]).parent.name == "val" and val_ds["subsets"][0]["num_repeats"] == 1
    train = tomllib.loads(files.config.read_text())
    assert train["training"]["validate_every_n_epochs"] == 1

    cfg.dataset.diff_output_preservation = True
    with pytest.raises(BuilderError, match="needs regularisation images"):
        write_kohya_files(tmp_path, cfg)
    reg = tmp_path / "given_reg"
    reg.mkdir()
    write_image(reg / "r.png", np.zeros((32, 32, 3), np.uint8))
    cfg.paths.reg = str(reg)
    doc = tomllib.loads(write_kohya_files(tmp_path, cfg).dataset_config.read_text())
    (reg_subset,) = [s for s in doc["datasets"][0]["subsets"] if s.get("is_reg")]
    assert reg_subset["custom_attributes"] == {"diff_output_preservation": True}
    cfg.kohya.batch_size = 2
    with pytest.raises(ConfigError, match=re.escape("kohya.batch_size = 1")):
        write_kohya_files(tmp_path, cfg)


@pytest.mark.parametrize("name", sorted(COMBINATIONS))
def test_every_dataset_combination_writes_files_the_schema_accepts(tmp_path: Path, name: str) -> None:
    validation, reg, dop, family, masks = COMBINATIONS[name]
    files = write_run(tmp_path, validation, reg, dop, family, masks)  # write_kohya_files checks every key
    doc = tomllib.loads(files.dataset_config.read_text())
    subsets = [s for d in doc["datasets"] for s in d["subsets"]]
    assert [("conditioning_data_dir" in s) for s in subsets] == [masks] + [False] * (len(subsets) - 1)
    assert len(doc["datasets"]) == (2 if validation else 1)
    regs = [s for s in doc["datasets"][0]["subsets"] if s.get("is_reg")]
    assert len(regs) == int(reg)
    assert any("custom_attributes" in s for s in regs) == dop
    training = tomllib.loads(files.config.read_text())["training"]
    assert ("validate_every_n_epochs" in training) == validation and training.get("masked_loss", False) == masks


def test_summary_shows_the_pose_histogram_before_and_after(tmp_path: Path) -> None:
    from builder.console import console
    from builder.dataset.summary import print_dataset_summary

    _, plan = settle(tmp_path, tiny_config(), make_run(tmp_path, 20, frontal=14))
    with console.capture() as cap:
        print_dataset_summary(plan)
    raw = cap.get()
    text = " ".join(raw.split())  # rich wraps at the terminal width
    assert "capped at 6 photos per bin" in text
    row = next(line for line in raw.splitlines() if FRONTAL in line)
    assert [c for c in row.split() if c.isdigit()][-3:] == ["14", "2", "6"]  # kept, held out for validation, training
    assert "12 training image(s), 2 validation" in text and "2 of 20 photos held out" in text
