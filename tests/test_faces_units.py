"""Faces without real photos: score mapping, landmark reduction, selection, pose, identity maths."""

from __future__ import annotations

import math

import numpy as np
import pytest

from builder.errors import BuilderError, ConfigError
from builder.faces import align
from builder.faces.detect import make_detector
from builder.faces.detect_dlib import five_from_68, margin_from_score, score_from_margin
from builder.faces.identity import average_identity, cosine, make_judge, median_identity, normalise
from builder.faces.pose import head_pose, head_pose_from_kps
from builder.faces.select import select_donor_face
from builder.faces.types import Face
from tests.fixtures.faces import face_at, faces_config


def test_five_from_68_order_and_means():
    lm = np.zeros((68, 2), np.float32)
    lm[36:42] = [[10 + i, 20] for i in range(6)]  # image-left eye
    lm[42:48] = [[50 + i, 22] for i in range(6)]
    lm[30] = [33, 40]
    lm[48], lm[54] = [15, 60], [48, 61]
    kps = five_from_68(lm)
    assert kps.shape == (5, 2) and kps.dtype == np.float32
    assert np.allclose(kps, [[12.5, 20], [52.5, 22], [33, 40], [15, 60], [48, 61]])


def test_dlib_score_mapping():
    assert score_from_margin(0.0) == pytest.approx(0.5)
    assert score_from_margin(1.2) == pytest.approx(0.917, abs=1e-3)
    margins = [-2.0, -0.3, 0.0, 0.4, 3.0]
    scores = [score_from_margin(m) for m in margins]
    assert scores == sorted(scores) and all(0 < s < 1 for s in scores)
    for m in margins:
        assert margin_from_score(score_from_margin(m)) == pytest.approx(m)


def test_unknown_backends_are_config_errors():
    cfg = faces_config(detector="mtcnn", judge="facenet")
    with pytest.raises(ConfigError, match="mtcnn"):
        make_detector(cfg)
    with pytest.raises(ConfigError, match="facenet"):
        make_judge(cfg)


def test_select_largest_and_ambiguous():
    big, small = face_at((0, 0, 200, 200)), face_at((300, 0, 400, 100))
    assert select_donor_face([], "largest") == (None, "no face")
    face, reason = select_donor_face([small, big], "largest")
    assert face is big and "largest of 2" in reason and "25%" in reason
    assert select_donor_face([big], "largest")[0] is big
    twin = face_at((300, 0, 490, 190))  # 90% of the largest's area
    face, reason = select_donor_face([big, twin], "largest", ambiguous_ratio=0.8)
    assert face is None and reason.startswith("ambiguous") and "90%" in reason
    assert select_donor_face([big, twin], "largest", ambiguous_ratio=0.95)[0] is big


def test_select_consistent_picks_the_donor_not_the_largest():
    donor = normalise(np.array([1.0, 0.2, 0.0]))
    stranger = face_at((0, 0, 300, 300), embedding=normalise(np.array([0.0, 1.0, 0.0])))
    target = face_at((400, 0, 500, 100), embedding=normalise(np.array([0.9, 0.3, 0.1])))
    face, reason = select_donor_face([stranger, target], "consistent", reference=donor)
    assert face is target and "cosine 0.9" in reason
    with pytest.raises(BuilderError, match="reference"):
        select_donor_face([target], "consistent")
    with pytest.raises(BuilderError, match="judge"):
        select_donor_face([face_at((0, 0, 10, 10))], "consistent", reference=donor)


def test_identity_maths():
    a, b = np.array([3.0, 4.0]), np.array([4.0, 3.0])
    assert cosine(a, b) == pytest.approx(24 / 25)
    assert np.linalg.norm(average_identity([a, 10 * b])) == pytest.approx(1.0)
    # Each vector counts once whatever its norm.
    assert np.allclose(average_identity([a, 10 * b]), normalise(normalise(a) + normalise(b)))
    outlier = np.array([-1.0, 0.0])
    med = median_identity([a, a * 2, b, outlier])
    assert cosine(med, average_identity([a, b])) > 0.99
    with pytest.raises(BuilderError):
        normalise(np.zeros(4))
    with pytest.raises(BuilderError):
        average_identity([])


def _head(yaw_deg: float = 0.0, pitch_deg: float = 0.0, roll_deg: float = 0.0) -> np.ndarray:
    """5 landmarks of the pose module's generic head, rotated and projected orthographically."""
    pts = np.array(
        [[-165, -155, 135], [165, -155, 135], [0, 0, 0], [-150, 165, 135], [150, 165, 135]], float
    )
    y, p, r = (math.radians(v) for v in (yaw_deg, pitch_deg, roll_deg))
    ry = np.array([[math.cos(y), 0, -math.sin(y)], [0, 1, 0], [math.sin(y), 0, math.cos(y)]])
    rx = np.array([[1, 0, 0], [0, math.cos(p), math.sin(p)], [0, -math.sin(p), math.cos(p)]])
    rz = np.array([[math.cos(r), -math.sin(r), 0], [math.sin(r), math.cos(r), 0], [0, 0, 1]])
    return (pts @ (rz @ rx @ ry).T)[:, :2] * 0.3 + [400, 300]


def test_head_pose_symmetric_mirrored_and_known_angles():
    for template in (align.GHOST_TEMPLATES_112[2], align.arcface_template(112)):
        yaw, pitch = head_pose_from_kps(template)
        assert abs(yaw) < 1.0 and abs(pitch) < 6.0
    for yaw_in, pitch_in, roll_in in [
        (30, 0, 0),
        (-45, 0, 10),
        (0, 20, 0),
        (0, -25, -15),
        (25, 15, 20),
    ]:
        kps = _head(yaw_in, pitch_in, roll_in)
        yaw, pitch = head_pose_from_kps(kps)
        assert yaw == pytest.approx(yaw_in, abs=3.0) and pitch == pytest.approx(pitch_in, abs=3.0)
        # Mirroring the photo flips yaw and keeps pitch (mirrored points swap left and right).
        mirrored = kps.copy()
        mirrored[:, 0] = 1000 - mirrored[:, 0]
        mirrored = mirrored[[1, 0, 2, 4, 3]]
        yaw_m, pitch_m = head_pose_from_kps(mirrored)
        assert yaw_m == pytest.approx(-yaw, abs=1e-6) and pitch_m == pytest.approx(pitch, abs=1e-6)
    face = Face(box=np.zeros(4, np.float32), score=1.0, kps=_head(40).astype(np.float32))
    assert head_pose(face)[0] > 35  # nose towards the image right is positive yaw
    assert all(math.isnan(v) for v in head_pose_from_kps(np.zeros((5, 2))))
