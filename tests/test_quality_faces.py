"""Quality filters on real photos, with the dlib detector and judge (CPU, no download).

The "results" here are donor photos altered the way a bad result would be (blurred, shrunk,
duplicated, face destroyed), the source photo itself, and the brief's own GHOST swap.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from builder.config import Config, QualityConfig
from builder.faces.detect import make_detector
from builder.faces.identity import JUDGE_THRESHOLDS, cosine, make_judge
from builder.io import load_image
from builder.quality import assess, finalize, score_result
from builder.quality.decide import (
    BLURRY,
    BROKEN,
    DID_NOT_TAKE,
    DUPLICATE,
    FAR_FROM_SOURCE,
    NO_FACE,
    TOO_SMALL,
)

Q = QualityConfig()


@pytest.fixture(scope="module")
def cfg() -> Config:
    cfg = Config()
    cfg.runtime.device = "cpu"
    cfg.faces.detector = cfg.faces.judge = "dlib"
    return cfg


@pytest.fixture(scope="module")
def detector(cfg):
    return make_detector(cfg)


@pytest.fixture(scope="module")
def judge(cfg):
    return make_judge(cfg)


@pytest.fixture(scope="module")
def donor(data_dir: Path, detector):
    """A large, frontal donor face (about 490 px)."""
    image = load_image(data_dir / "donors" / "TaylorSwift1.jpeg")
    (face,) = detector.detect(image)
    return image, face


@pytest.fixture(scope="module")
def source(source_photo: Path, detector, judge):
    image = load_image(source_photo)
    face = detector.detect(image)[0]
    return image, face, judge.embed(image, face)


def test_unchanged_donor_passes_image_checks_but_the_swap_did_not_take(donor, source, judge, detector) -> None:
    image, face = donor
    s = score_result(image, image.copy(), face, source[2], judge, detector)
    assert s.blur_ratio == pytest.approx(1.0)
    assert s.redetect_faces == 1 and s.redetect_iou > 0.8
    assert s.donor_similarity == pytest.approx(1.0, abs=1e-5)
    assert abs(s.yaw) < 15 and abs(s.pitch) < 15
    assert assess("same.png", s, Q).decision.reasons == [FAR_FROM_SOURCE, DID_NOT_TAKE]


def test_blurred_copy_is_rejected_for_blur(donor, detector) -> None:
    image, face = donor
    # 1.5 px of blur at the 128 px scoring size, scaled to the face's size in this photo.
    blurred = cv2.GaussianBlur(image, (0, 0), 1.5 * face.size / 128)
    s = score_result(image, blurred, face)
    assert s.blur_ratio < 0.5 * Q.max_blur_drop
    assert assess("blurred.png", s, Q).decision.reasons == [BLURRY]
    mild = score_result(image, cv2.GaussianBlur(image, (0, 0), 0.3 * face.size / 128), face)
    assert assess("mild.png", mild, Q).decision.kept


def test_downscaled_copy_with_a_40px_face_is_too_small(donor, detector) -> None:
    image, face = donor
    scale = 44 / face.size
    small = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    faces = detector.detect(small)
    assert len(faces) == 1 and 30 < faces[0].size < 60
    s = score_result(small, small, faces[0])
    assert s.face_px < Q.min_face_px
    assert TOO_SMALL in assess("small.png", s, Q).decision.reasons


def test_photos_without_a_face_are_rejected_as_no_face(donor, detector) -> None:
    image, face = donor
    below = image[int(face.box[3]) + 40 :, :]  # shoulders and background under the face
    flat = np.full((480, 640, 3), 127, np.uint8)
    for picture in (below, flat):
        assert picture.shape[0] > 100
        assert detector.detect(picture) == []
        s = score_result(picture, None, None)
        a = assess("none.png", s, Q)
        assert a.decision.reasons == [NO_FACE] and a.to_dict()["scores"]["face_found"] is False


def test_exact_and_resized_copies_are_duplicates(donor_photos, detector) -> None:
    original = load_image(donor_photos[0])
    resized = cv2.resize(original, None, fx=0.85, fy=0.85, interpolation=cv2.INTER_AREA)
    pictures = {
        "a_original.png": original,
        "b_exact_copy.png": original.copy(),
        "c_resized_copy.png": resized,
        "d_other.png": load_image(donor_photos[5]),
        "e_other.png": load_image(donor_photos[10]),
    }
    items = []
    for name, picture in pictures.items():
        s = score_result(picture, picture, detector.detect(picture)[0])
        items.append(assess(name, s, Q))
    finalize(items, Q.dedup_hamming, keep=0)
    by = {a.name: a for a in items}
    twins = [by[n] for n in ("a_original.png", "b_exact_copy.png", "c_resized_copy.png")]
    kept = [a for a in twins if a.decision.kept]
    assert len(kept) == 1  # the best of the three, by combined score
    for a in twins:
        if a is not kept[0]:
            assert a.decision.reasons == [f"{DUPLICATE} {kept[0].name}"]
    assert by["d_other.png"].decision.kept and by["e_other.png"].decision.kept


def test_a_different_person_scores_lower_identity_than_the_source(source, donor, judge) -> None:
    s_image, s_face, s_identity = source
    d_image, d_face = donor
    itself = score_result(s_image, s_image, s_face, s_identity, judge)
    other = score_result(d_image, d_image, d_face, s_identity, judge)
    assert itself.source_similarity == pytest.approx(1.0, abs=1e-5)
    assert other.source_similarity < itself.source_similarity - 0.05
    assert FAR_FROM_SOURCE in assess("donor_as_result.png", other, Q).decision.reasons


def test_dlib_thresholds_pass_the_brief_swap_and_other_source_photos(data_dir, source, detector, judge) -> None:
    """The calibration behind JUDGE_THRESHOLDS['dlib'], on the brief's reference pictures:
    a real GHOST swap (right half of swapped.jpg) and another picture of the source pass,
    the swap's own donor (left half) does not."""
    min_source, max_donor = JUDGE_THRESHOLDS["dlib"]
    sid = source[2]
    pair = load_image(data_dir / "reference" / "swapped.jpg")
    donor_face, swap_face = sorted(detector.detect(pair), key=lambda f: f.box[0])
    donor_emb, swap_emb = judge.embed(pair, donor_face), judge.embed(pair, swap_face)
    assert cosine(donor_emb, sid) < min_source < cosine(swap_emb, sid)
    assert cosine(swap_emb, donor_emb) < max_donor
    other = load_image(data_dir / "reference" / "5-10-3.png")
    assert cosine(judge.embed(other, detector.detect(other)[0]), sid) > min_source


def test_destroyed_face_fails_re_detection(donor, detector) -> None:
    image, face = donor
    broken = image.copy()
    x1, y1, x2, y2 = face.box.astype(int)
    broken[y1:y2, x1:x2] = broken[y1:y2, x1:x2].mean(axis=(0, 1)).astype(np.uint8)
    s = score_result(image, broken, face, detector=detector)
    assert s.redetect_faces == 0
    reasons = assess("broken.png", s, Q).decision.reasons
    assert BROKEN in reasons and BLURRY in reasons
