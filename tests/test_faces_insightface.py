"""The insightface backend on random-weight ONNX models with the real SCRFD / ArcFace signatures,
run through insightface's own classes and decoding."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import onnx
import pytest
from insightface.model_zoo.arcface_onnx import ArcFaceONNX
from insightface.model_zoo.scrfd import SCRFD
from insightface.utils import face_align

from builder.errors import BuilderError, MissingWeightError
from builder.faces import random_onnx
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


def test_detector_runs_through_insightface_scrfd(photo):
    cfg = faces_config(detector="insightface", det_size=320, det_threshold=0.5)
    cfg.runtime.random_weights = True
    detector = make_detector(cfg)
    model = detector.model
    # insightface read the signature the way it reads scrfd_10g_bnkps.onnx.
    assert isinstance(model, SCRFD)
    assert (model.fmc, model._feat_stride_fpn, model._num_anchors, model.use_kps) == (
        3,
        [8, 16, 32],
        2,
        True,
    )
    assert (model.input_mean, model.input_std, model.batched) == (127.5, 128.0, False)
    faces = detector.detect(photo)
    assert 0 < len(faces) <= cfg.faces.max_faces
    areas = [f.area for f in faces]
    assert areas == sorted(areas, reverse=True)
    h, w = photo.shape[:2]
    for f in faces:
        assert f.kps.shape == (5, 2) and f.kps.dtype == np.float32
        assert 0.5 <= f.score <= 1.0
        assert f.box[2] > f.box[0] and f.box[3] > f.box[1]
        # Boxes come back in photo pixels (insightface undid its letterbox scaling).
        assert -w < f.box[0] < 2 * w and -h < f.box[1] < 2 * h
    # The wrapper returns exactly what insightface decoded, largest first.
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
    assert (
        isinstance(judge.model, ArcFaceONNX)
        and Path(judge.model.model_file) == folder / "glintr100.onnx"
    )
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
