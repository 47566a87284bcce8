"""Image scores, decisions, duplicates, --keep and the summary, without any face model."""

from __future__ import annotations

import cv2
import imagehash
import numpy as np
import pytest
from PIL import Image
from rich.console import Console

from builder.config import QualityConfig
from builder.errors import ConfigError
from builder.quality import (
    Assessment,
    Decision,
    Scores,
    assess,
    combined_score,
    decide,
    finalize,
    summarize,
)
from builder.quality.decide import DUPLICATE, NOT_IN_BEST
from builder.quality.scores import box_iou, hamming, laplacian_variance, phash


@pytest.fixture(scope="module")
def photo(donor_photos) -> np.ndarray:
    return cv2.imread(str(donor_photos[0]))


def test_blur_drops_with_blur_and_is_scale_invariant(photo) -> None:
    h, w = photo.shape[:2]
    box = np.array([w * 0.3, h * 0.2, w * 0.6, h * 0.6])
    sharp = laplacian_variance(photo, box)
    # A blur of 2 px at the 128 px scoring size, whatever the face's size in the photo.
    sigma = 2 * (box[2] - box[0]) / 128
    assert laplacian_variance(cv2.GaussianBlur(photo, (0, 0), sigma), box) < 0.1 * sharp
    big = cv2.resize(photo, None, fx=2, fy=2, interpolation=cv2.INTER_CUBIC)
    assert laplacian_variance(big, box * 2) == pytest.approx(sharp, rel=0.15)


def test_phash_matches_imagehash_and_survives_resize_and_jpeg(donor_photos) -> None:
    hashes = []
    for p in donor_photos[:12]:
        image = cv2.imread(str(p))
        h = phash(image)
        hashes.append(h)
        assert len(h) == 16
        assert hamming(h, str(imagehash.phash(Image.open(p).convert("RGB")))) <= 6
        small = cv2.resize(image, None, fx=0.9, fy=0.9, interpolation=cv2.INTER_AREA)
        _, buf = cv2.imencode(".jpg", small, [cv2.IMWRITE_JPEG_QUALITY, 80])
        assert hamming(h, phash(cv2.imdecode(buf, cv2.IMREAD_COLOR))) <= 3
    distinct = [hamming(a, b) for i, a in enumerate(hashes) for b in hashes[i + 1 :]]
    assert min(distinct) > QualityConfig().dedup_hamming


def test_box_iou() -> None:
    a = np.array([0, 0, 10, 10])
    assert box_iou(a, a) == 1.0
    assert box_iou(a, np.array([5, 0, 15, 10])) == pytest.approx(50 / 150)
    assert box_iou(a, np.array([20, 20, 30, 30])) == 0.0


def good_scores(**kw) -> Scores:
    base = dict(
        det_score=0.95, face_px=200.0, blur_donor=300.0, blur_result=280.0, blur_ratio=280 / 300,
        source_similarity=0.6, donor_similarity=0.3, yaw=10.0, pitch=-5.0,
        redetect_faces=1, redetect_score=0.9, redetect_iou=0.8, phash="0f0f0f0f0f0f0f0f", judge="insightface",
    )
    base.update(kw)
    return Scores(**base)


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"det_score": 0.3}, "low detection score"),
        ({"face_px": 40.0}, "face too small"),
        ({"blur_ratio": 0.1}, "blurry"),
        ({"source_similarity": 0.1, "donor_similarity": 0.05}, "identity too far from source"),
        ({"donor_similarity": 0.95}, "swap did not take (still looks like donor)"),
        ({"donor_similarity": 0.5, "source_similarity": 0.45}, "swap did not take (still looks like donor)"),
        ({"yaw": -75.0}, "extreme pose"),
        ({"pitch": 50.0}, "extreme pose"),
        ({"yaw": float("nan")}, "extreme pose"),
        ({"redetect_faces": 0, "redetect_score": None}, "broken face (re-detection)"),
        ({"redetect_faces": 2}, "broken face (re-detection)"),
    ],
)
def test_each_check_names_its_reason(change, reason) -> None:
    q = QualityConfig()
    assert decide(good_scores(), q) == Decision(kept=True, reasons=[])
    d = decide(good_scores(**change), q)
    assert not d.kept and d.reasons == [reason]


def test_identity_thresholds_follow_the_judge_unless_configured() -> None:
    q = QualityConfig()
    dlib_swap = good_scores(judge="dlib", source_similarity=0.85, donor_similarity=0.80)
    assert decide(dlib_swap, q).reasons == ["identity too far from source"]
    assert decide(good_scores(source_similarity=0.85, donor_similarity=0.60), q).kept  # insightface scale
    assert decide(dlib_swap, QualityConfig(min_source_similarity=0.8)).kept
    assert decide(good_scores(judge="dlib", source_similarity=0.96, donor_similarity=0.94), q).reasons == [
        "swap did not take (still looks like donor)"
    ]
    with pytest.raises(ConfigError, match=r"judge 'other'.*quality\.min_source_similarity"):
        decide(good_scores(judge="other"), q)
    assert decide(good_scores(judge="other"), QualityConfig(min_source_similarity=0.3, max_donor_similarity=0.7)).kept


def test_all_failures_are_listed_and_unmeasured_scores_are_not_judged() -> None:
    d = decide(good_scores(face_px=10.0, blur_ratio=0.01, source_similarity=0.0, donor_similarity=-0.1), QualityConfig())
    assert d.reasons == ["face too small", "blurry", "identity too far from source"]
    assert decide(Scores(det_score=0.9, face_px=300.0), QualityConfig()).kept
    assert decide(Scores(face_found=False), QualityConfig()).reasons == ["no face"]


def test_combined_score_formula() -> None:
    s = good_scores(source_similarity=0.6, blur_result=10**3.5, face_px=256.0, det_score=0.9, yaw=45.0, pitch=0.0)
    assert combined_score(s) == pytest.approx(0.45 * 0.6 + 0.20 * 1.0 + 0.10 * 0.5 + 0.10 * 0.9 + 0.15 * 0.5)
    assert combined_score(Scores(face_found=False)) == 0.0
    assert combined_score(good_scores(source_similarity=0.7)) > combined_score(good_scores())


def test_duplicates_keep_the_better_then_keep_best_n() -> None:
    q = QualityConfig()
    near = f"{int('0f0f0f0f0f0f0f0f', 16) ^ 0b111:016x}"  # 3 bits away
    items = [
        assess("a.png", good_scores(source_similarity=0.5), q),
        assess("b.png", good_scores(source_similarity=0.7, phash=near), q),
        assess("c.png", good_scores(source_similarity=0.6, phash="ffffffff00000000"), q),
        assess("d.png", good_scores(source_similarity=0.55, phash="00000000ffffffff"), q),
        assess("e.png", good_scores(face_px=10.0, phash="0f0f0f0f0f0f0f0f"), q),  # rejected already
    ]
    finalize(items, max_hamming=q.dedup_hamming, keep=2)
    by = {a.name: a for a in items}
    assert by["a.png"].decision.reasons == [f"{DUPLICATE} b.png"]
    assert by["b.png"].decision.kept and by["c.png"].decision.kept
    assert by["d.png"].decision.reasons == [NOT_IN_BEST]
    assert by["e.png"].decision.reasons == ["face too small"]
    # keep=0 keeps everything that passes
    again = [Assessment.from_dict(a.to_dict()) for a in items[1:4]]
    for a in again:
        a.decision = Decision(kept=True)
    assert all(a.decision.kept for a in finalize(again, q.dedup_hamming, 0))


def test_assessment_round_trips_through_json() -> None:
    import json

    a = assess("x.png", good_scores(blur_ratio=0.1), QualityConfig())
    back = Assessment.from_dict(json.loads(json.dumps(a.to_dict(), allow_nan=False)))
    assert back.to_dict() == a.to_dict()
    assert back.scores == a.scores
    # A pose the landmarks could not give is rejected, and written as null, not NaN.
    degenerate = assess("y.png", good_scores(pitch=float("nan")), QualityConfig())
    assert degenerate.decision.reasons == ["extreme pose"]
    assert json.loads(json.dumps(degenerate.to_dict(), allow_nan=False))["scores"]["pitch"] is None


def test_summary_counts_reasons_and_shows_distributions() -> None:
    q = QualityConfig()
    items = [assess(f"{i}.png", good_scores(face_px=float(100 + i)), q) for i in range(3)]
    items.append(assess("blurry.png", good_scores(blur_ratio=0.1), q))
    items.append(assess("none.png", Scores(face_found=False), q))
    records = [a.to_dict() for a in items[:2]] + items[2:]  # manifest dicts and Assessments mix
    console = Console(record=True, width=120)
    console.print(summarize(records))
    text = console.export_text()
    assert "kept 3 of 5" in text
    assert "blurry" in text and "no face" in text
    rows = [line.replace("│", " ").split() for line in text.splitlines()]
    assert next(r for r in rows if r[:1] == ["face_px"])[1:5] == ["4", "100", "102", "200"]
