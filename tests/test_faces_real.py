"""The dlib backend on the real photos: detection rate, identity separation, the faces command."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

import launch
from builder.faces.detect import make_detector
from builder.faces.identity import make_judge
from builder.faces.pose import head_pose
from builder.faces.types import Face
from builder.io import load_image
from tests.fixtures.faces import faces_config


@pytest.fixture(scope="session")
def dlib_cfg():
    return faces_config(detector="dlib", judge="dlib")


@pytest.fixture(scope="session")
def dlib_donors(dlib_cfg, donor_photos) -> dict[Path, tuple[list[Face], np.ndarray | None]]:
    """Every donor photo's faces and the largest face's dlib embedding, computed once."""
    detector, judge = make_detector(dlib_cfg), make_judge(dlib_cfg)
    results = {}
    for path in donor_photos:
        image = load_image(path)
        faces = detector.detect(image)
        results[path] = (faces, judge.embed(image, faces[0]) if faces else None)
    return results


def test_dlib_finds_a_face_in_most_donor_photos(dlib_donors):
    found = sum(1 for faces, _ in dlib_donors.values() if faces)
    rate = found / len(dlib_donors)
    print(f"dlib detection rate: {found}/{len(dlib_donors)} = {rate:.1%}")
    assert rate >= 0.90


def test_dlib_landmarks_are_plausible(dlib_donors):
    for path, (faces, _) in dlib_donors.items():
        for f in faces:
            x1, y1, x2, y2 = f.box
            eye_l, eye_r, nose, mouth_l, mouth_r = f.kps
            assert eye_l[0] < eye_r[0] and mouth_l[0] < mouth_r[0], path
            # Along the face's own vertical (perpendicular to the eye line, so tilted heads
            # count) the mouth is below the eyes and the nose tip above the mouth; a face
            # looking up (TaylorSwift55) has its nose tip level with its eyes.
            across = eye_r - eye_l
            down = np.array([-across[1], across[0]]) / np.linalg.norm(across)
            eye_mid, mouth_mid = (eye_l + eye_r) / 2, (mouth_l + mouth_r) / 2
            height = (mouth_mid - eye_mid) @ down
            assert height > 0 and -0.3 * height < (nose - eye_mid) @ down < height, path
            assert f.landmarks is not None and f.landmarks.shape == (68, 2)
            # The landmarks sit around the box (the jaw may spill over it a little).
            size = x2 - x1
            assert (
                x1 - size / 2 < nose[0] < x2 + size / 2 and y1 - size / 2 < nose[1] < y2 + size / 2
            ), path
            assert 0.5 <= f.score < 1.0


def test_pose_signs_on_real_faces(dlib_donors, data_dir):
    donors = data_dir / "donors"
    up = dlib_donors[donors / "TaylorSwift55.jpeg"][0][0]  # chin up, looking above the camera
    turned = dlib_donors[donors / "TaylorSwift104.jpeg"][0][0]  # turned towards the image left
    assert head_pose(up)[1] > 30
    assert head_pose(turned)[0] < -20 and abs(head_pose(turned)[1]) < 15


def test_donors_are_more_like_each_other_than_like_the_source(dlib_donors, dlib_cfg, source_photo):
    embeddings = np.stack([e for _, e in dlib_donors.values() if e is not None])
    image = load_image(source_photo)
    faces = make_detector(dlib_cfg).detect(image)
    assert faces, "no face found in the source photo"
    source = make_judge(dlib_cfg).embed(image, faces[0])
    gram = embeddings @ embeddings.T
    pairs = gram[np.triu_indices(len(embeddings), 1)]
    donor_donor, donor_source = float(pairs.mean()), float((embeddings @ source).mean())
    print(f"dlib judge: donor-donor {donor_donor:.3f}, donor-source {donor_source:.3f}")
    assert np.allclose(np.linalg.norm(embeddings, axis=1), 1.0, atol=1e-5)
    assert donor_donor > donor_source + 0.05


def test_faces_command_writes_one_crop_pair_per_face(tmp_path, donor_photos, dlib_donors):
    photos = tmp_path / "photos"
    photos.mkdir()
    chosen = donor_photos[:3]
    for p in chosen:
        shutil.copy(p, photos / p.name)
    (photos / "broken.jpg").write_bytes(b"this is not a jpeg")
    out = tmp_path / "out"
    rc = launch.main(["faces", str(photos), "--out", str(out), "--detector", "dlib"])
    assert rc == 0
    records = [json.loads(line) for line in (out / "faces.jsonl").read_text().splitlines()]
    by_name = {Path(r["path"]).name: r for r in records}
    assert "not a readable image" in by_name["broken.jpg"]["error"]
    crops = sorted(out.glob("*.png"))
    expected = sum(len(dlib_donors[p][0]) for p in chosen)
    assert len(crops) == expected > 0
    for p in chosen:
        record = by_name[p.name]
        assert len(record["faces"]) == len(dlib_donors[p][0])
        if record["faces"]:
            assert record["chosen"] == 0 and record["reason"].startswith("largest")
            f = record["faces"][0]
            assert np.allclose(f["box"], dlib_donors[p][0][0].box, atol=0.01)
            assert len(f["kps"]) == 5 and "yaw" in f
            pair = cv2.imread(str(out / f["crop"]))
            assert pair.shape == (512, 1024, 3)
            # Both halves hold the same face: the eyes are dark-ish detail, not the black border.
            assert pair[:, :512].std() > 10 and pair[:, 512:].std() > 10
    # A rerun skips what is done and leaves the records as they were.
    before = (out / "faces.jsonl").read_text()
    assert launch.main(["faces", str(photos), "--out", str(out), "--detector", "dlib"]) == 0
    assert (out / "faces.jsonl").read_text() == before
