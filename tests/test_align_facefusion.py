"""FaceFusion's swapper templates in builder.faces.align, against the upstream facts and insightface."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from insightface.utils import face_align

from builder.faces import align
from tests.test_align import random_similarity

# facefusion/face_helper.py WARP_TEMPLATE_SET at 33cc6b4, the digits as published.
FACTS = {
    "arcface_112_v1": [
        (0.35473214, 0.45658929), (0.64526786, 0.45658929), (0.50000000, 0.61154464),
        (0.37913393, 0.77687500), (0.62086607, 0.77687500),
    ],
    "arcface_112_v2": [
        (0.34191607, 0.46157411), (0.65653393, 0.45983393), (0.50022500, 0.64050536),
        (0.37097589, 0.82469196), (0.63151696, 0.82325089),
    ],
    "arcface_128": [
        (0.36167656, 0.40387734), (0.63696719, 0.40235469), (0.50019687, 0.56044219),
        (0.38710391, 0.72160547), (0.61507734, 0.72034453),
    ],
}
HALF_LAST_DIGIT = 5e-9  # the facts have 8 decimals


def test_templates_are_the_facts():
    assert set(align.FACEFUSION_TEMPLATES) == set(FACTS)
    for name, points in FACTS.items():
        np.testing.assert_array_equal(align.FACEFUSION_TEMPLATES[name], np.array(points))


@pytest.mark.filterwarnings("ignore:`estimate` is deprecated:FutureWarning")  # insightface's own call
def test_arcface_128_is_insightface_norm_crop2_template_at_128():
    # INSwapper crops with norm_crop2(img, kps, 128): landmarks already on FaceFusion's template
    # need no move at all (insightface keeps arcface_dst in float32: 4e-6 px of rounding)...
    m = face_align.estimate_norm(align.facefusion_template("arcface_128", 128), 128)
    np.testing.assert_allclose(m, np.eye(2, 3), atol=1e-5)
    # ...and the decimal literals insightface writes it with agree to the last digit given.
    assert np.abs(align.FACEFUSION_TEMPLATES["arcface_128"] - align.arcface_template(128) / 128).max() <= HALF_LAST_DIGIT
    # ...and at 256 FaceFusion's scaling and insightface's 128-multiple rule agree too.
    assert np.abs(align.facefusion_template("arcface_128", 256) - align.arcface_template(256)).max() < 3e-6


def test_arcface_112_templates_are_insightface_ones_normalised():
    assert np.abs(align.FACEFUSION_TEMPLATES["arcface_112_v2"] - align.ARCFACE_112 / 112).max() <= HALF_LAST_DIGIT
    frontal_021 = align.GHOST_TEMPLATES_112[2] / 112  # insightface 0.2.1 src3, SimSwap's alignment
    assert np.abs(align.FACEFUSION_TEMPLATES["arcface_112_v1"] - frontal_021).max() <= HALF_LAST_DIGIT


def test_unknown_template_is_refused():
    with pytest.raises(ValueError, match="unknown template 'ffhq'"):
        align.facefusion_template("ffhq", 256)


@pytest.mark.parametrize(("name", "size"), [("arcface_128", 128), ("arcface_128", 256), ("arcface_112_v1", 256),
                                            ("arcface_112_v2", 112)])
def test_alignment_maps_template_landmarks_exactly(name, size):
    rng = np.random.default_rng(size)
    template = align.facefusion_template(name, size)
    for _ in range(20):
        m = random_similarity(rng)
        kps = align.transform_points(m, template)  # a face that is exactly the template, moved
        got = align.transform_points(align.facefusion_alignment(kps, name, size), kps)
        assert np.abs(got - template).max() < 1e-6


def test_alignment_equals_facefusion_ransac_fit_on_noisy_landmarks():
    # FaceFusion: estimateAffinePartial2D(RANSAC, threshold 100) then its inlier refit.
    rng = np.random.default_rng(7)
    template = align.facefusion_template("arcface_128", 256)
    worst = 0.0
    for _ in range(30):
        m = random_similarity(rng, (0.3, 4.0))
        kps = align.transform_points(m, template) + rng.normal(0.0, 2.0, (5, 2)) * align.scale_of(m)
        ours = align.facefusion_alignment(kps, "arcface_128", 256)
        theirs = cv2.estimateAffinePartial2D(
            kps.astype(np.float32), template.astype(np.float32), method=cv2.RANSAC, ransacReprojThreshold=100
        )[0]
        worst = max(worst, float(np.abs(align.transform_points(ours, kps) - align.transform_points(theirs, kps)).max()))
    assert worst < 1e-3  # px in the 256 crop: float32 rounding of cv2's fit
