"""The insightface backend on random-weight ONNX models with the real SCRFD / ArcFace signatures:
our runner (faces/ort_models.py) against insightface's own model_zoo classes, which stay a
test-only dependency."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from insightface.model_zoo.arcface_onnx import ArcFaceONNX
from insightface.model_zoo.scrfd import SCRFD
from insightface.utils import face_align

from builder.errors import BuilderError, MissingWeightError
from builder.faces import ort_models, random_onnx
from builder.faces.detect import make_detector
from builder.faces.identity import make_judge
from builder.io import load_image
from tests.fixtures.faces import face_at, faces_config, write_fake_pack


@pytest.fixture(scope="module")
def photo(source_photo: Path) -> np.ndarray:
    image = load_image(source_photo)
    return cv2.resize(
        image, (image.shape[1] // 2, image.shape[0] // 2), interpolation=cv2.INTER_AREA
    )


def test_random_scrfd_has_the_real_signature():
    model = random_onnx.scrfd_model(0)
    assert [i.name for i in model.graph.input] == ["input.1"]
    dims = model.graph.input[0].type.tensor_type.shape.dim
    assert (
        dims[0].dim_value == 1
        and dims[1].dim_value == 3
        and dims[2].dim_param
        and dims[3].dim_param
    )
    outputs = model.graph.output
    assert len(outputs) == 9
    widths = [o.type.tensor_type.shape.dim[1].dim_value for o in outputs]
    assert widths == [1, 1, 1, 4, 4, 4, 10, 10, 10]


def _upstream(path: Path, kind: str) -> SCRFD | ArcFaceONNX:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return SCRFD(model_file=str(path), session=session) if kind == "detection" else ArcFaceONNX(model_file=str(path), session=session)


def test_detector_reads_the_scrfd_signature_as_insightface_does(tmp_path):
    path = random_onnx.save(random_onnx.scrfd_model(0), tmp_path / "det.onnx")
    ours, theirs = ort_models.load(path, "cpu", "detection", 320, 0.5), _upstream(path, "detection")
    assert (len(ours.strides), list(ours.strides), ours.anchors, ours.use_kps, ours.batched) == (
        theirs.fmc, theirs._feat_stride_fpn, theirs._num_anchors, theirs.use_kps, theirs.batched)
    assert (theirs.input_mean, theirs.input_std) == (127.5, 128.0)  # what Scrfd.forward applies


@pytest.mark.parametrize("det_size, threshold", [(320, 0.5), (640, 0.3), (256, 0.9)])
def test_scrfd_equals_insightface_on_the_shared_photos(tmp_path, donor_photos, source_photo, det_size, threshold):
    """Same boxes, scores and points as insightface's SCRFD.detect, photo by photo."""
    path = random_onnx.save(random_onnx.scrfd_model(det_size), tmp_path / "det.onnx")
    ours = ort_models.load(path, "cpu", "detection", det_size, threshold)
    theirs = _upstream(path, "detection")
    theirs.prepare(-1, input_size=(det_size, det_size), det_thresh=threshold)
    found = 0
    for photo in [source_photo, *donor_photos[::4]]:
        image = load_image(photo)
        dets, kpss = ours.detect(image)
        ref_dets, ref_kpss = theirs.detect(image)
        assert dets.shape == ref_dets.shape and kpss.shape == ref_kpss.shape, photo.name
        np.testing.assert_allclose(dets, ref_dets, rtol=1e-5, atol=1e-3, err_msg=photo.name)
        np.testing.assert_allclose(kpss, ref_kpss, rtol=1e-5, atol=1e-3, err_msg=photo.name)
        found += len(dets)
    assert found > 10  # the random net fires, so decoding and NMS were compared on real work


def test_scrfd_at_a_fixed_graph_size_runs_at_that_size(tmp_path, photo):
    model = random_onnx.scrfd_model(1)
    for i, d in enumerate(model.graph.input[0].type.tensor_type.shape.dim[2:]):
        d.ClearField("dim_param")
        d.dim_value = (256, 192)[i]
    path = tmp_path / "det.onnx"
    onnx.save(model, str(path))
    ours = ort_models.load(path, "cpu", "detection", 640, 0.5)
    assert ours.input_size == (192, 256)
    theirs = _upstream(path, "detection")
    np.testing.assert_allclose(ours.detect(photo)[0], theirs.detect(photo)[0], rtol=1e-5, atol=1e-3)


def test_arcface_equals_insightface_on_the_shared_photos(tmp_path, donor_photos):
    path = random_onnx.save(random_onnx.arcface_model(5), tmp_path / "rec.onnx")
    ours, theirs = ort_models.load(path, "cpu", "recognition"), _upstream(path, "recognition")
    assert ours.input_size == theirs.input_size == (112, 112)
    assert (ours.input_mean, ours.input_std) == (theirs.input_mean, theirs.input_std)
    crops = [cv2.resize(load_image(p), (112, 112), interpolation=cv2.INTER_AREA) for p in donor_photos[:6]]
    feats = ours.get_feat(crops)
    np.testing.assert_allclose(feats, theirs.get_feat(crops), rtol=1e-5, atol=1e-5)
    assert np.abs(feats[0] - feats[1]).max() > 1e-3  # a net that tells photos apart


def test_arcface_reads_an_mxnet_export_as_raw_pixels(tmp_path):
    """insightface's rule: Sub and Mul among the first nodes mean the graph normalises itself."""
    model = random_onnx.arcface_model(2)
    model.graph.node[0].name, model.graph.node[1].name = "Sub_0", "Mul_1"
    path = tmp_path / "rec.onnx"
    onnx.save(model, str(path))
    ours, theirs = ort_models.load(path, "cpu", "recognition"), _upstream(path, "recognition")
    assert (ours.input_mean, ours.input_std) == (theirs.input_mean, theirs.input_std) == (0.0, 1.0)


def test_a_graph_of_the_wrong_kind_is_refused_with_its_path(tmp_path):
    path = random_onnx.save(random_onnx.arcface_model(0), tmp_path / "rec.onnx")
    with pytest.raises(BuilderError, match=r"rec\.onnx: not a detection model"):
        ort_models.load(path, "cpu", "detection")


def test_detector_wrapper_returns_the_decoded_faces_largest_first(photo):
    cfg = faces_config(detector="insightface", det_size=320, det_threshold=0.5)
    cfg.runtime.random_weights = True
    detector = make_detector(cfg)
    model = detector.model
    faces = detector.detect(photo)
    assert 0 < len(faces) <= cfg.faces.max_faces
    areas = [f.area for f in faces]
    assert areas == sorted(areas, reverse=True)
    h, w = photo.shape[:2]
    for f in faces:
        assert f.kps.shape == (5, 2) and f.kps.dtype == np.float32
        assert 0.5 <= f.score <= 1.0
        assert f.box[2] > f.box[0] and f.box[3] > f.box[1]
        # Boxes come back in photo pixels (the letterbox scaling undone).
        assert -w < f.box[0] < 2 * w and -h < f.box[1] < 2 * h
    dets, kpss = model.detect(photo)
    order = np.argsort(-(dets[:, 2] - dets[:, 0]) * (dets[:, 3] - dets[:, 1]), kind="stable")[
        : len(faces)
    ]
    assert np.allclose([f.box for f in faces], dets[order, :4])
    assert np.allclose([f.kps for f in faces], kpss[order])
    # A stricter threshold keeps fewer candidates.
    cfg.faces.det_threshold = 0.95
    assert len(model.detect(photo)[0]) > len(make_detector(cfg).model.detect(photo)[0])


def test_pack_files_load_under_their_official_names(tmp_path, photo):
    cfg = faces_config(detector="insightface", judge="insightface", det_size=256)
    cfg.runtime.weights_dir = str(tmp_path)
    with pytest.raises(MissingWeightError, match="antelopev2"):
        make_detector(cfg)
    folder = write_fake_pack(tmp_path, "antelopev2", seed=1)
    detector = make_detector(cfg)
    assert Path(detector.model.model_file) == folder / "scrfd_10g_bnkps.onnx"
    judge = make_judge(cfg)
    assert judge.model.taskname == "recognition" and Path(judge.model.model_file) == folder / "glintr100.onnx"
    (folder / "glintr100.onnx").write_bytes(b"not an onnx file")
    with pytest.raises(BuilderError, match="glintr100"):
        make_judge(cfg)


@pytest.mark.filterwarnings("ignore::FutureWarning")  # skimage API used inside insightface
def test_insightface_judge_matches_norm_crop_and_normalises(photo):
    cfg = faces_config(judge="insightface")
    cfg.runtime.random_weights = True
    judge = make_judge(cfg)
    face = face_at((150.0, 120.0, 330.0, 300.0))
    emb = judge.embed(photo, face)
    assert emb.shape == (512,) and np.linalg.norm(emb) == pytest.approx(1.0, abs=1e-5)
    # Same crop as insightface's own norm_crop (the scale here is above 1/2: no box filter).
    theirs = face_align.norm_crop(photo, face.kps, 112)
    assert np.abs(judge.crop(photo, face).astype(int) - theirs.astype(int)).max() <= 1
    raw = judge.model.get_feat(theirs)[0]
    assert np.dot(emb, raw / np.linalg.norm(raw)) > 0.999
    # A different face gives a different embedding (the net is not constant).
    other = judge.embed(photo, face_at((10.0, 10.0, 120.0, 120.0)))
    assert np.dot(emb, other) < 0.9999


def test_model_file_is_valid_onnx(tmp_path):
    path = random_onnx.save(random_onnx.arcface_model(3), tmp_path / "a" / "glintr100.onnx")
    onnx.checker.check_model(str(path))
