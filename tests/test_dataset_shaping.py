"""Close-ups and loss masks with known answers: geometry to sub-pixel, a colour "segmenter"."""

from __future__ import annotations

import cv2
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from builder.config import Config, DatasetConfig
from builder.dataset import closeups, loss_masks, segmenter
from builder.errors import ConfigError
from builder.faces import align
from builder.faces.types import Face

# ---- geometry ----

def test_head_shoulders_box_is_shifted_inside_not_squashed():
    box = align.head_shoulders_box(np.array([1000, 600, 1200, 800]), (2400, 1600, 3), 0.4)
    np.testing.assert_allclose(box, [850, 500, 1350, 1000])  # side 200 / 0.4, face centre at 0.4 height
    box = align.head_shoulders_box(np.array([100, 600, 300, 800]), (2400, 1600, 3), 0.4)
    np.testing.assert_allclose(box, [0, 500, 500, 1000])  # pushed right to the photo's edge
    box = align.head_shoulders_box(np.array([100, 100, 400, 400]), (600, 900, 3), 0.4)
    np.testing.assert_allclose(box, [0, 0, 600, 600])  # capped at the shorter side


def test_scale_one_crop_is_the_slice():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (300, 400, 3), dtype=np.uint8)
    m = align.box_to_square_crop(np.array([37, 21, 237, 221]), 200)
    np.testing.assert_array_equal(align.warp(image, m, 200), image[21:221, 37:237])


def _measured_box(crop: np.ndarray) -> np.ndarray:
    """Edge-coordinate box of a uniform bright square from its mass and centroid, sub-pixel."""
    mass = crop.astype(np.float64) / 255.0
    ys, xs = np.mgrid[: crop.shape[0], : crop.shape[1]] + 0.5  # pixel centres in edge coordinates
    total = mass.sum()
    cx, cy = (mass * xs).sum() / total, (mass * ys).sum() / total
    w = mass.sum(axis=1).max()  # a full row through the square: its width
    h = mass.sum(axis=0).max()
    return np.array([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2])


@pytest.mark.parametrize(
    ("shape", "face"),
    [
        ((2400, 1600), (100, 600, 300, 800)),  # shifted box, enlarged 1.024x
        ((4000, 3000), (1150, 1710, 2050, 2610)),  # shrunk 0.228x: the box-filter path of warp
    ],
)
def test_closeup_puts_the_face_where_the_geometry_says(shape, face):
    photo = np.zeros((*shape, 3), np.uint8)
    x0, y0, x1, y1 = face
    photo[y0:y1, x0:x1] = 255
    d = DatasetConfig(closeup_below=0.5)
    plan = closeups.plan_closeup(np.array(face, float), photo.shape, 512, d)
    assert plan.made, plan.reason
    crop = closeups.cut(photo, plan)
    assert crop.shape == (512, 512, 3)
    predicted = align.edge_box_in_crop(np.array(face, float), plan.box, 512)
    measured = _measured_box(crop[..., 0])
    # The centre to a twentieth of a pixel; the sides to where sampling a 1-px edge ramp at a
    # spacing of over one input pixel (the shrunk case) lets a row's sum move.
    np.testing.assert_allclose((measured[:2] + measured[2:]) / 2, (predicted[:2] + predicted[2:]) / 2, atol=0.05)
    np.testing.assert_allclose(measured[2:] - measured[:2], predicted[2:] - predicted[:2], atol=0.3)


def test_closeup_plan_says_why_there_is_none():
    d = DatasetConfig()
    big = closeups.plan_closeup(np.array([100, 100, 500, 500]), (800, 800, 3), 512, d)
    assert not big.made and "already large" in big.reason
    small = closeups.plan_closeup(np.array([100, 100, 140, 140]), (2000, 2000, 3), 512, d)
    assert not small.made and "too small" in small.reason and "closeup_max_upscale" in small.reason
    off = closeups.plan_closeup(np.array([100, 100, 140, 140]), (2000, 2000, 3), 512, DatasetConfig(closeups=False))
    assert not off.made and "off" in off.reason


def test_face_in_crop_follows_the_box():
    face = Face(np.array([100, 600, 300, 800], np.float32), 0.9, np.array([[150, 650], [250, 650], [200, 700], [160, 760], [240, 760]], np.float32))
    plan = closeups.plan_closeup(face.box, (2400, 1600, 3), 512, DatasetConfig())
    moved = closeups.face_in_crop(face, plan)
    np.testing.assert_allclose(moved.box, [102.4, 102.4, 307.2, 307.2], atol=1e-4)
    # the nose (pixel centre 200, 700) -> 1.024 * (200.5 - 0, 700.5 - 500) - 0.5
    np.testing.assert_allclose(moved.kps[2], [1.024 * 200.5 - 0.5, 1.024 * 200.5 - 0.5], atol=1e-4)


def test_allowed_closeups_caps_their_share():
    assert closeups.allowed_closeups(10, 0.5) == 10
    assert closeups.allowed_closeups(10, 0.25) == 3  # 3 of 13 <= 25%, 4 of 14 is not
    assert closeups.allowed_closeups(10, 0.0) == 0


def test_bad_dataset_settings_are_refused():
    with pytest.raises(ConfigError, match="mask_dilate"):
        closeups.check_config(DatasetConfig(mask_dilate=4))
    with pytest.raises(ConfigError, match="closeup_share"):
        closeups.check_config(DatasetConfig(closeup_share=1.5))


# ---- segmenter and masks ----

def red_person_graph(path) -> None:
    """A "segmenter" with MODNet's signature whose answer is known: the matte is 1 where the
    pixel is red and 0 where it is green (a 1x1 convolution on the normalised RGB, then a sigmoid)."""
    w = np.zeros((1, 3, 1, 1), np.float32)
    w[0, 0], w[0, 1] = 20.0, -20.0  # RGB order: R - G
    nodes = [
        helper.make_node("Conv", ["input", "w"], ["logit"], kernel_shape=[1, 1]),
        helper.make_node("Sigmoid", ["logit"], ["output"]),
    ]
    graph = helper.make_graph(
        nodes, "red_person",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 512, 512])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 1, 512, 512])],
        initializer=[numpy_helper.from_array(w, "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))


@pytest.fixture
def red_segmenter(tmp_path):
    path = tmp_path / "modnet.onnx"
    red_person_graph(path)
    return segmenter.OnnxSegmenter("modnet", ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]), path)


def two_people_photo() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Green background; the character (head + body, red) left, another person (red) right."""
    photo = np.zeros((600, 800, 3), np.uint8)
    photo[:] = (0, 255, 0)
    me = np.zeros((600, 800), np.uint8)
    cv2.circle(me, (250, 150), 60, 1, -1)
    cv2.rectangle(me, (170, 200), (330, 599), 1, -1)
    other = np.zeros((600, 800), np.uint8)
    cv2.circle(other, (620, 200), 50, 1, -1)
    cv2.rectangle(other, (560, 240), (680, 599), 1, -1)
    photo[(me | other) > 0] = (0, 0, 255)
    return photo, me > 0, other > 0


def _ring(region: np.ndarray, inner: int, outer: int) -> np.ndarray:
    k = lambda r: cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))  # noqa: E731
    grow = lambda r: cv2.dilate(region.astype(np.uint8), k(r)) > 0  # noqa: E731
    return grow(outer) & ~grow(inner)


def test_mask_of_a_known_photo_matches_the_person(red_segmenter):
    photo, me, other = two_people_photo()
    matte = red_segmenter.segment(photo)
    assert matte.shape == photo.shape[:2] and matte.dtype == np.float32
    face = np.zeros(photo.shape[:2], np.float32)
    cv2.circle(face, (250, 150), 40, 1.0, -1)
    d = DatasetConfig()
    mask = loss_masks.compose_mask(matte, face, np.array([200, 100, 300, 200]), [np.array([580, 160, 660, 240])], d)
    bg = round(d.mask_background * 255)
    eroded = cv2.erode(me.astype(np.uint8), np.ones((5, 5), np.uint8)) > 0
    assert (mask[eroded] == 255).all()
    assert (mask[_ring(me, 2, d.mask_dilate - 2)] == 255).all()  # grown by mask_dilate px
    far = ~(cv2.dilate((me | other).astype(np.uint8), np.ones((31, 31), np.uint8)) > 0)
    assert (mask[far] == bg).all()
    other_core = cv2.erode(other.astype(np.uint8), np.ones((5, 5), np.uint8)) > 0
    assert (mask[other_core] == 0).all()  # the other person is told apart: weight 0
    # the share of full-weight pixels is the character's, grown by about 8 px
    assert abs((mask == 255).mean() - (cv2.dilate(me.astype(np.uint8), np.ones((17, 17), np.uint8)) > 0).mean()) < 0.01


def test_an_all_background_mask_is_refused(red_segmenter):
    photo = np.zeros((300, 300, 3), np.uint8)
    photo[:] = (0, 255, 0)
    matte = red_segmenter.segment(photo)
    with pytest.raises(loss_masks.MaskRefused, match="all background"):
        loss_masks.compose_mask(matte, np.zeros((300, 300), np.float32), np.array([100, 100, 150, 150]), [], DatasetConfig())


def test_the_face_region_counts_even_where_the_segmenter_misses(red_segmenter):
    photo = np.zeros((300, 300, 3), np.uint8)
    photo[:] = (0, 255, 0)
    face = np.zeros((300, 300), np.float32)
    face[100:200, 100:200] = 1.0
    mask = loss_masks.compose_mask(red_segmenter.segment(photo), face, np.array([100, 100, 200, 200]), [], DatasetConfig())
    assert (mask[100:200, 100:200] == 255).all() and mask[0, 0] == round(0.1 * 255)


def test_random_modnet_stand_in_has_the_real_signature():
    cfg = Config()
    cfg.runtime.random_weights = True
    cfg.runtime.device = "cpu"
    seg = segmenter.load_segmenter(cfg)
    ins, outs = seg.session.get_inputs(), seg.session.get_outputs()
    assert [(i.name, i.shape) for i in ins] == [("input", [1, 3, 512, 512])]
    assert outs[0].shape == [1, 1, 512, 512]
    matte = seg.segment(np.full((100, 150, 3), 128, np.uint8))
    assert matte.shape == (100, 150) and 0.0 <= matte.min() <= matte.max() <= 1.0


def test_a_wrong_graph_is_refused(tmp_path):
    from builder.errors import BuilderError
    from builder.faces.random_onnx import arcface_model, save
    from builder.swap.swappers.onnx_common import Port, open_session

    path = save(arcface_model(0), tmp_path / "modnet.onnx")
    import torch

    with pytest.raises(BuilderError, match="not the MODNet"):
        open_session(path, torch.device("cpu"), "MODNet segmenter", [Port("input", (None, 3, None, None))], (None, 1, None, None))


def test_a_full_body_photo_gives_a_closeup_with_the_face_where_the_geometry_says(data_dir, dlib_cfg):
    """A real photo (dlib faces): the face detected again in the close-up sits at the box the
    geometry predicts from the photo's detection."""
    from builder.faces.detect import make_detector
    from builder.io import load_image

    photo = load_image(data_dir / "donors" / "TaylorSwift330.jpeg")
    detector = make_detector(dlib_cfg)
    (face,) = detector.detect(photo)
    plan = closeups.plan_closeup(face.box, photo.shape, 512, DatasetConfig())
    assert plan.made, plan.reason
    assert closeups.face_fraction(face.box, photo.shape) < 0.1  # a small face in the frame
    crop = closeups.cut(photo, plan)
    found = detector.detect(crop)
    assert len(found) == 1
    predicted = align.edge_box_in_crop(face.box, plan.box, 512)
    side = predicted[2] - predicted[0]
    assert side / 512 == pytest.approx(DatasetConfig().closeup_face_share, rel=0.02)
    # dlib's HOG boxes come in scale steps (about 10% apart), so its box of the same face in two
    # framings differs in size; its centre stays put
    got = found[0].box
    np.testing.assert_allclose((got[:2] + got[2:]) / 2, (predicted[:2] + predicted[2:]) / 2, atol=0.03 * side)
    assert (got[2] - got[0]) / side == pytest.approx(1.0, abs=0.15)


def test_a_masked_subset_takes_only_what_sd_scripts_masked_subsets_take():
    from builder.errors import BuilderError
    from builder.kohya.toml import check_dataset_config

    ok = {"general": {}, "datasets": [{"subsets": [{"image_dir": "a", "conditioning_data_dir": "m", "num_repeats": 2}]}]}
    check_dataset_config(ok)
    for bad in ({"is_reg": True}, {"class_tokens": "ohwx woman"}):
        doc = {"general": {}, "datasets": [{"subsets": [{"image_dir": "a", "conditioning_data_dir": "m", **bad}]}]}
        with pytest.raises(BuilderError, match="masked subset"):
            check_dataset_config(doc)
