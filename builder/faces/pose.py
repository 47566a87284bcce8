"""Head yaw and pitch from the 5 landmarks, for the quality filter's pose thresholds.

A weak-perspective model of a generic head (the proportions of the 3D face model in OpenCV's
head-pose samples, in its units): eye centres at x = +/-165 and 135 behind the nose tip,
mouth corners about as far behind; eyes to mouth 320 high, split 155 above the nose and
165 below it so that the frontal head matches the frontal template (nose at 0.484 of the
way from the eye line to the mouth line). Rotating that head by a
yaw theta moves the nose tip sideways from the midpoint of the other four points by
d * sin(theta) while the half eye distance shrinks to e * cos(theta), so

    yaw = atan(offset / half_eye_distance * e / d),         e / d = 165 / 135

and pitching it by phi moves the nose along the eye-to-mouth line, from its frontal
fraction t0 (the frontal GHOST/insightface 0.2.1 template) by about (d / h) * tan(phi):

    pitch = atan((t0 - t) * h / d),                          h / d = 320 / 135

Roll is removed first (the eye line is made horizontal). Signs, in image terms: yaw > 0
when the nose tip points to the image right; pitch > 0 when the face tilts up (the nose
moves towards the eyes). Good to a few degrees up to about 45; a profile is past its reach
(the far eye is not visible), and quality filtering only needs to tell those apart.
"""

from __future__ import annotations

import math

import numpy as np

from builder.faces.types import Face

EYE_HALF_TO_DEPTH = 165.0 / 135.0
EYE_MOUTH_TO_DEPTH = 320.0 / 135.0
_FRONTAL = np.array(
    [[39.730, 51.138], [72.270, 51.138], [56.000, 68.493], [42.463, 87.010], [69.537, 87.010]]
)
FRONTAL_NOSE_FRACTION = float(
    (_FRONTAL[2, 1] - _FRONTAL[:2, 1].mean()) / (_FRONTAL[3:, 1].mean() - _FRONTAL[:2, 1].mean())
)


def head_pose_from_kps(kps: np.ndarray) -> tuple[float, float]:
    p = np.asarray(kps, dtype=np.float64)
    eye_l, eye_r, nose, mouth_l, mouth_r = p
    roll = math.atan2(eye_r[1] - eye_l[1], eye_r[0] - eye_l[0])
    c, s = math.cos(-roll), math.sin(-roll)
    q = (p - p.mean(axis=0)) @ np.array([[c, s], [-s, c]])  # rows rotated by -roll
    eye_l, eye_r, nose, mouth_l, mouth_r = q
    half_eye = (eye_r[0] - eye_l[0]) / 2.0
    if half_eye <= 1e-6:
        return float("nan"), float("nan")
    mid_x = (eye_l[0] + eye_r[0] + mouth_l[0] + mouth_r[0]) / 4.0
    yaw = math.atan((nose[0] - mid_x) / half_eye * EYE_HALF_TO_DEPTH)
    eye_y = (eye_l[1] + eye_r[1]) / 2.0
    mouth_y = (mouth_l[1] + mouth_r[1]) / 2.0
    if mouth_y - eye_y <= 1e-6:
        return math.degrees(yaw), float("nan")
    t = (nose[1] - eye_y) / (mouth_y - eye_y)
    pitch = math.atan((FRONTAL_NOSE_FRACTION - t) * EYE_MOUTH_TO_DEPTH)
    return math.degrees(yaw), math.degrees(pitch)


def head_pose(face: Face) -> tuple[float, float]:
    """(yaw, pitch) in degrees; NaN where the landmarks are degenerate (quality rejects NaN).

    dlib faces' 5 points are already derived from their 68 landmarks, so both backends go
    through the same 5-point geometry and their angles are comparable.
    """
    return head_pose_from_kps(face.kps)
