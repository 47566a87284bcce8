"""Geometry of builder.faces.align: templates, estimation, composition, warps, paste-back."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
from skimage.transform import SimilarityTransform

from builder.faces import align

TOL_PX = 0.01


def random_similarity(rng: np.random.Generator, scale_range=(0.2, 5.0)) -> np.ndarray:
    angle = rng.uniform(-math.pi / 3, math.pi / 3)
    scale = math.exp(rng.uniform(math.log(scale_range[0]), math.log(scale_range[1])))
    c, s = scale * math.cos(angle), scale * math.sin(angle)
    return np.array([[c, -s, rng.uniform(-300, 900)], [s, c, rng.uniform(-300, 900)]])


def skimage_similarity(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """skimage's estimate (what insightface calls), through whichever API this skimage has."""
    if hasattr(SimilarityTransform, "from_estimate"):
        return SimilarityTransform.from_estimate(src, dst).params[:2]
    tform = SimilarityTransform()
    tform.estimate(src, dst)
    return tform.params[:2]


def smooth_image(h: int, w: int, seed: int = 0) -> np.ndarray:
    """Low-frequency colour image: bilinear resampling of it is accurate to well under a grey level."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    channels = []
    for _ in range(3):
        fx, fy, px, py = (
            rng.uniform(0.004, 0.012),
            rng.uniform(0.004, 0.012),
            rng.uniform(0, 6),
            rng.uniform(0, 6),
        )
        channels.append(128 + 60 * np.sin(fx * xx + px) + 50 * np.cos(fy * yy + py))
    return np.clip(np.rint(np.stack(channels, axis=-1)), 0, 255).astype(np.uint8)


def test_arcface_template_matches_insightface_rules():
    assert np.allclose(align.arcface_template(112), align.ARCFACE_112)
    assert np.allclose(align.arcface_template(224), align.ARCFACE_112 * 2)
    t128 = align.arcface_template(128)
    assert np.allclose(t128[:, 0], align.ARCFACE_112[:, 0] + 8.0)
    assert np.allclose(t128[:, 1], align.ARCFACE_112[:, 1])
    t256 = align.arcface_template(256)
    assert np.allclose(t256, align.ARCFACE_112 * 2 + [16.0, 0.0])
    with pytest.raises(ValueError, match="multiple of 112 or 128"):
        align.arcface_template(100)


@pytest.mark.filterwarnings("ignore::FutureWarning")
def test_arcface_template_equals_installed_insightface():
    face_align = pytest.importorskip("insightface.utils.face_align")
    kps = align.ARCFACE_112 * 1.7 + [40.0, 25.0]
    for size in (112, 128, 224, 256, 512):
        theirs = face_align.estimate_norm(kps.astype(np.float32), size)
        ours = align.estimate_similarity(kps, align.arcface_template(size))
        assert np.allclose(ours, theirs, atol=1e-4), size


def test_ffhq_template_scales():
    assert np.allclose(align.ffhq_template(512), align.FFHQ_512)
    assert np.allclose(align.ffhq_template(1024), align.FFHQ_512 * 2)


# yangxy/GPEN 2c73670 align_faces.get_reference_facial_points((512, 512), 0.25, (0, 0), True), as
# face_enhancement.py calls it, printed by upstream's own code (float64, 10 decimals).
GPEN_UPSTREAM_512 = np.array(
    [
        [202.0406842819, 242.8839634590],
        [309.4302455467, 242.2899809219],
        [256.0767996648, 303.9591703771],
        [211.9597749333, 366.8281947429],
        [300.8911249067, 366.3363095162],
    ]
)


def test_gpen_template_is_upstreams():
    np.testing.assert_allclose(align.gpen_template(512), GPEN_UPSTREAM_512, atol=1e-4)
    np.testing.assert_allclose(align.gpen_template(256), GPEN_UPSTREAM_512 / 2, atol=1e-4)


def test_gpen_template_is_ffhq_shrunk_and_holds_the_ffhq_crop():
    m = align.estimate_similarity(align.FFHQ_512, align.gpen_template(512))  # FFHQ crop -> GPEN crop
    assert align.scale_of(m) == pytest.approx(0.8902, abs=1e-4)
    np.testing.assert_allclose(m[:, 2], [27.64, 30.90], atol=0.01)
    apart = np.linalg.norm(align.FFHQ_512 - align.gpen_template(512), axis=1)
    assert apart.min() > 9.5 and apart.max() < 13.2  # not the FFHQ crop: GPEN needs its own
    corners = align.transform_points(m, np.array([[-0.5, -0.5], [511.5, 511.5]]))
    assert corners.min() > 0 and corners.max() < 511  # masks made in the FFHQ crop fit in GPEN's


@pytest.mark.parametrize("size", [256, 512])
def test_restorer_alignment_lands_on_each_template(size):
    rng = np.random.default_rng(7)
    m_true = random_similarity(rng)
    for name, template in (("ffhq", align.ffhq_template(size)), ("gpen", align.gpen_template(size))):
        kps = align.transform_points(align.invert(m_true), template)
        np.testing.assert_allclose(
            align.transform_points(align.restorer_alignment(kps, name, size), kps), template, atol=TOL_PX
        )
    with pytest.raises(ValueError, match="restorer template"):
        align.restorer_alignment(kps, "arcface", size)


def test_estimate_similarity_matches_skimage_on_noisy_points():
    rng = np.random.default_rng(1)
    for _ in range(20):
        src = rng.uniform(0, 500, size=(5, 2))
        dst = align.transform_points(random_similarity(rng), src) + rng.normal(0, 3, size=(5, 2))
        assert np.allclose(
            align.estimate_similarity(src, dst), skimage_similarity(src, dst), atol=1e-8
        )


def test_estimate_similarity_rejects_degenerate_input():
    with pytest.raises(ValueError, match="coincide"):
        align.estimate_similarity(np.ones((5, 2)), align.ARCFACE_112)
    with pytest.raises(ValueError, match="same number"):
        align.estimate_similarity(np.zeros((4, 2)), align.ARCFACE_112)
    with pytest.raises(ValueError, match="NaN"):
        align.estimate_similarity(np.full((5, 2), np.nan), align.ARCFACE_112)


def _kps_from_template(rng: np.random.Generator, template: np.ndarray) -> np.ndarray:
    """Landmarks that are an exact similarity image of the template (a 'perfect' detection)."""
    return align.transform_points(random_similarity(rng), template)


@pytest.mark.parametrize("size", [112, 128, 224, 256, 512])
def test_arcface_alignment_lands_on_template(size):
    rng = np.random.default_rng(size)
    template = align.arcface_template(size)
    for _ in range(10):
        kps = _kps_from_template(rng, template)
        m = align.estimate_similarity(kps, template)
        assert np.abs(align.transform_points(m, kps) - template).max() < TOL_PX


@pytest.mark.parametrize("method", ["lstsq", "lmeds"])
@pytest.mark.parametrize("size", [512, 1024])
def test_ffhq_alignment_lands_on_template(method, size):
    rng = np.random.default_rng(size + len(method))
    template = align.ffhq_template(size)
    for _ in range(10):
        kps = _kps_from_template(rng, template)
        m = align.estimate_ffhq(kps, size, method=method)
        assert np.abs(align.transform_points(m, kps) - template).max() < TOL_PX


@pytest.mark.parametrize("pose", range(5))
@pytest.mark.parametrize("size", [224, 256])
def test_ghost_alignment_picks_pose_and_lands_on_template(pose, size):
    rng = np.random.default_rng(10 * pose + size)
    template = align.GHOST_TEMPLATES_112[pose] * (size / 112.0)
    for _ in range(10):
        kps = _kps_from_template(rng, template)
        m, index = align.ghost_choice(kps, size)
        assert index == pose
        assert np.abs(align.transform_points(m, kps) - template).max() < TOL_PX
        assert np.allclose(align.ghost_alignment(kps, size), m)


def _insightface_021_estimate_norm_224(lmk: np.ndarray) -> tuple[np.ndarray, int]:
    """insightface 0.2.1 estimate_norm(lmk, 224, mode='None'), restated with skimage for comparison."""
    best, best_index, best_err = None, -1, float("inf")
    lmk_h = np.hstack([lmk, np.ones((5, 1))])
    for index, template in enumerate(align.GHOST_TEMPLATES_112.astype(np.float32) * 2):
        m = skimage_similarity(lmk, template)
        err = np.sum(np.sqrt(np.sum((lmk_h @ m.T - template) ** 2, axis=1)))
        if err < best_err:
            best, best_index, best_err = m, index, err
    return best, best_index


def test_ghost_alignment_is_insightface_021_224_crop_scaled_to_256():
    rng = np.random.default_rng(7)
    picked = set()
    # Landmarks between two pose templates: here the summed-distance criterion of 0.2.1 and a
    # summed-squares one disagree for a few percent of faces, so the criterion is checked too.
    for _ in range(150):
        a, b = rng.integers(0, 5, size=2)
        t = rng.uniform()
        blend = (1 - t) * align.GHOST_TEMPLATES_112[a] + t * align.GHOST_TEMPLATES_112[b]
        kps = _kps_from_template(rng, blend) + rng.normal(0, 2.0, size=(5, 2))
        ref224, ref_index = _insightface_021_estimate_norm_224(kps)
        ours, index = align.ghost_choice(kps, 256)
        assert index == ref_index
        # Warping straight to 256 == warping to 224, then resizing by 256/224.
        # (0.2.1 keeps its templates in float32: agreement to 1e-3 px is that rounding.)
        assert np.allclose(ours, ref224 * (256 / 224), atol=1e-3)
        picked.add(index)
    assert picked == {0, 1, 2, 3, 4}


def test_compose_invert_identities():
    rng = np.random.default_rng(3)
    identity = np.hstack([np.eye(2), np.zeros((2, 1))])
    for _ in range(10):
        a, b = random_similarity(rng), random_similarity(rng)
        assert np.allclose(align.compose(align.invert(a), a), identity, atol=1e-9)
        assert np.allclose(align.compose(a, align.invert(a)), identity, atol=1e-9)
        assert np.allclose(align.invert(align.invert(a)), a, atol=1e-9)
        assert np.allclose(
            align.invert(align.compose(a, b)),
            align.compose(align.invert(b), align.invert(a)),
            atol=1e-9,
        )
        pts = rng.uniform(-100, 100, size=(7, 2))
        assert np.allclose(
            align.transform_points(align.compose(a, b), pts),
            align.transform_points(a, align.transform_points(b, pts)),
        )
        assert np.allclose(
            align.transform_points(align.invert(a), align.transform_points(a, pts)), pts
        )
    with pytest.raises(ValueError, match="singular"):
        align.invert(np.zeros((2, 3)))


def test_composed_warp_equals_two_warps():
    image = smooth_image(480, 640)
    kps = align.arcface_template(112) * 2.2 + [200.0, 120.0]
    m_swap = align.ghost_alignment(kps, 256)
    m_ffhq = align.estimate_ffhq(kps, 512)
    swap_crop = align.warp(image, m_swap, 256)
    # The pipeline's step: carry the swapper's crop into the FFHQ crop with one resampling.
    carried = align.warp(swap_crop, align.compose(m_ffhq, align.invert(m_swap)), 512)
    direct = align.warp(image, m_ffhq, 512)
    # Interior: FFHQ pixels whose source lies well inside the 256 crop (its border is black fill).
    inner = align.transform_points(
        align.compose(m_swap, align.invert(m_ffhq)),
        np.argwhere(np.ones((512, 512)))[:, ::-1].astype(float),
    )
    ok = ((inner > 4) & (inner < 251)).all(axis=1).reshape(512, 512)
    assert ok.mean() > 0.3
    diff = np.abs(carried.astype(int) - direct.astype(int))[ok]
    assert diff.max() <= 2 and diff.mean() < 0.5


def test_downscaling_warp_is_antialiased_and_positioned_exactly():
    # A linear ramp survives box averaging and bilinear sampling exactly, so any error is geometry.
    yy, xx = np.mgrid[0:1600, 0:1500].astype(np.float32)
    ramp = np.dstack([0.1 * xx, 0.1 * yy, 0.05 * (xx + yy)]).astype(np.float32)
    m = align.estimate_similarity(
        align.ARCFACE_112 * 9 + [300, 200], align.arcface_template(112)
    )  # scale 1/9
    assert align.scale_of(m) < 0.5
    crop = align.warp(ramp, m, 112)
    src = align.transform_points(
        align.invert(m), np.argwhere(np.ones((112, 112)))[:, ::-1].astype(float)
    )
    expected = np.stack([0.1 * src[:, 0], 0.1 * src[:, 1], 0.05 * src.sum(axis=1)], axis=1).reshape(
        112, 112, 3
    )
    assert np.abs(crop - expected).max() < 0.05
    # A one-pixel checkerboard averages to grey instead of aliasing into a pattern.
    checker = (((xx.astype(int) + yy.astype(int)) % 2) * 255).astype(np.uint8)
    assert align.warp(checker, m, 112).std() < 3.0
    assert cv2.warpAffine(checker, m, (112, 112)).std() > 50.0


def test_warp_border_modes():
    image = np.full((100, 100, 3), 200, np.uint8)
    m = np.array([[1.0, 0.0, 50.0], [0.0, 1.0, 50.0]])  # the photo starts at crop pixel 50
    assert (align.warp(image, m, 128)[10, 10] == 0).all()
    assert (align.warp(image, m, 128, border_value=(1, 2, 3))[10, 10] == (1, 2, 3)).all()
    assert (align.warp(image, m, 128, border="replicate")[10, 10] == 200).all()
    assert (align.warp(image, m, 128, border="reflect")[10, 10] == 200).all()
    with pytest.raises(ValueError, match="border"):
        align.warp(image, m, 128, border="wrap")


def test_box_mask_shape_and_edges():
    mask = align.box_mask(512, erode=16, feather=32)
    assert mask.dtype == np.float32 and mask.shape == (512, 512)
    assert (mask[:16] == 0).all() and (mask[:, -16:] == 0).all()
    assert (mask[48:-48, 48:-48] == 1).all()
    row = mask[256]
    assert (np.diff(row[:256]) >= 0).all() and np.allclose(row, row[::-1])
    hard = align.box_mask(64, erode=4, feather=0)
    assert set(np.unique(hard)) == {0.0, 1.0} and hard[4:-4, 4:-4].all() and not hard[:4].any()
    with pytest.raises(ValueError):
        align.box_mask(64, erode=20, feather=20)


def _zero_region(m: np.ndarray, shape: tuple[int, int], size: int, erode: int) -> np.ndarray:
    """Image pixels whose crop position samples only exactly-zero mask pixels (bilinear, 4 neighbours)."""
    h, w = shape
    pts = np.argwhere(np.ones((h, w)))[:, ::-1].astype(float)
    c = align.transform_points(m, pts)
    lo, hi = erode - 1 - 0.1, size - erode + 0.1  # mask pixels 0..erode-1 and size-erode.. are 0
    return ((c < lo) | (c > hi)).any(axis=1).reshape(h, w)


def test_paste_back_of_unchanged_crop_is_identity():
    image = smooth_image(700, 900, seed=4)
    kps = align.transform_points(
        random_similarity(np.random.default_rng(5), (0.3, 0.35)), align.ffhq_template(512)
    )
    kps += [450.0, 350.0] - kps.mean(axis=0)
    m = align.estimate_ffhq(kps, 512)
    crop = align.warp(image, m, 512)
    mask = align.box_mask(512, erode=16, feather=40)
    out = align.paste_back(image, crop, m, mask)
    assert out.shape == image.shape and out.dtype == image.dtype
    zero = _zero_region(m, image.shape[:2], 512, 16)
    assert (~zero).sum() > 10_000  # the face region is real
    assert np.array_equal(out[zero], image[zero])  # bit-identical where the mask is 0
    assert np.abs(out.astype(int) - image.astype(int)).max() <= 1  # within one grey level inside
    # A changed crop does change the face and only the face.
    out2 = align.paste_back(image, np.zeros_like(crop), m, mask)
    assert np.array_equal(out2[zero], image[zero])
    assert (out2[~zero].astype(int) < image[~zero].astype(int)).mean() > 0.9


def test_paste_back_face_at_corner_and_outside():
    image = smooth_image(300, 400, seed=6)
    kps = align.ffhq_template(512) * 0.4 - [60.0, 70.0]  # face centre near (40, 50): half outside
    m = align.estimate_ffhq(kps, 512)
    crop = align.warp(image, m, 512, border="reflect")
    white = np.full_like(crop, 255)
    out = align.paste_back(image, white, m, align.box_mask(512, 8, 24))
    changed = np.argwhere((out != image).any(axis=2))
    assert len(changed) > 1000
    assert changed[:, 0].max() < 160 and changed[:, 1].max() < 160
    far = align.compose(np.array([[1.0, 0, 5000.0], [0, 1.0, 5000.0]]), np.eye(2, 3))
    assert np.array_equal(align.paste_back(image, white, far, align.box_mask(512, 8, 24)), image)


def test_paste_back_zero_mask_and_greyscale():
    image = smooth_image(200, 200)[:, :, 0]
    m = np.array([[2.0, 0.0, -100.0], [0.0, 2.0, -100.0]])
    crop = np.full((256, 256), 255, np.uint8)
    assert np.array_equal(align.paste_back(image, crop, m, np.zeros((256, 256), np.float32)), image)
    out = align.paste_back(image, crop, m, np.ones((256, 256), np.float32))
    assert out[100, 100] == 255 and out[0, 0] == image[0, 0]
