"""The fused pass with each ONNX swapper (random weights of the real signatures) on a real donor photo:
the photo keeps its size, pixels outside the paste mask are untouched, the face is resampled 3 times."""

from __future__ import annotations

import typing

import numpy as np
import pytest

from bench.identity_models import IdentityRestorer, fixed_source
from builder.config import SwapConfig
from builder.faces import align
from builder.faces.detect import make_detector
from builder.faces.identity import make_judge
from builder.io import load_image
from builder.swap import swappers
from builder.swap.fused import FFHQ_SIZE, FaceJob, FusedPass
from builder.swap.source import source_identity

ONNX_SWAPPERS = ("inswapper_128", "hyperswap_1a_256", "hyperswap_1b_256", "hyperswap_1c_256", "simswap_256")
PLAIN = SwapConfig(mouth=False, paste_mask="box", restorer="none")


@pytest.fixture(scope="module")
def detector(dlib_cfg):
    return make_detector(dlib_cfg)


@pytest.fixture(scope="module")
def job(dlib_cfg, detector, data_dir) -> FaceJob:
    image = load_image(data_dir / "donors" / "TaylorSwift14.jpeg")
    return FaceJob(image, detector.detect(image)[0])


def _touched(job: FaceJob, m_ffhq: np.ndarray, mask: np.ndarray) -> np.ndarray:
    crop = np.full((FFHQ_SIZE, FFHQ_SIZE), 255, np.uint8)
    return align.paste_back(np.zeros(job.image.shape[:2], np.uint8), crop, m_ffhq, mask) > 0


def test_every_onnx_swapper_is_registered_and_configurable():
    assert set(ONNX_SWAPPERS) <= set(swappers.BACKENDS)
    hint = typing.get_type_hints(SwapConfig)["swapper"]
    assert set(typing.get_args(hint)) == {*swappers.BACKENDS, swappers.BEST}


@pytest.mark.parametrize("name", ONNX_SWAPPERS)
def test_fused_pass_with_each_swapper(dlib_cfg, detector, job, source_photo, name):
    swapper = swappers.load_swapper(dlib_cfg, "cpu", name)
    source = source_identity([source_photo], detector, [swapper])
    fused = FusedPass(swapper, IdentityRestorer(), None, PLAIN)
    [res] = fused.run([job], source)
    assert FusedPass.resamplings == 3
    assert res.image.shape == job.image.shape and res.image.dtype == np.uint8
    assert res.swapper == name
    np.testing.assert_array_equal(res.m_swap, swapper.alignment(job.face.kps))
    touched = _touched(job, res.m_ffhq, res.mask)
    np.testing.assert_array_equal(res.image[~touched], job.image[~touched])
    assert np.abs(res.image[touched].astype(int) - job.image[touched].astype(int)).mean() > 1.0


def test_best_of_onnx_swappers_records_every_candidate(dlib_cfg, detector, job, source_photo):
    names = ["inswapper_128", "simswap_256"]
    loaded = [swappers.load_swapper(dlib_cfg, "cpu", n) for n in names]
    judge = make_judge(dlib_cfg)
    source = source_identity([source_photo], detector, loaded, judge)
    [res] = FusedPass(loaded, IdentityRestorer(), None, PLAIN, judge=judge).run([job], source)
    choice = res.choice_dict()["swapper"]
    assert set(choice["candidates"]) == set(names) and choice["chosen"] in names
    assert res.swapper == choice["chosen"]
    np.testing.assert_array_equal(res.m_swap, loaded[names.index(res.swapper)].alignment(job.face.kps))
    touched = _touched(job, res.m_ffhq, res.mask)
    np.testing.assert_array_equal(res.image[~touched], job.image[~touched])


class RecordingSwapper:
    """Keeps the crops it is given: what a swapper sees where its crop reaches past the photo."""

    name, crop_size = "recording", 256

    def __init__(self, alignment):
        self._alignment, self.seen = alignment, []

    def alignment(self, kps: np.ndarray) -> np.ndarray:
        return self._alignment(kps)

    def swap(self, crops: np.ndarray, identity: np.ndarray) -> np.ndarray:
        self.seen.append(crops.copy())
        return crops.copy()


@pytest.mark.parametrize(
    "alignment",
    [align.ghost_alignment, lambda kps: align.facefusion_alignment(kps, "arcface_128", 256)],
    ids=["ghost", "facefusion"],
)
def test_swap_crops_repeat_the_photo_edge_instead_of_black(job, alignment):
    """The face cut by the photo's left edge: the part of the crop past the edge repeats the edge
    column (FaceFusion's BORDER_REPLICATE), one rule for every swapper (align.SWAP_BORDER)."""
    x_cut = int(job.face.box[0] + 0.3 * (job.face.box[2] - job.face.box[0]))
    image = np.ascontiguousarray(job.image[:, x_cut:])
    face = type(job.face)(
        box=job.face.box - np.array([x_cut, 0, x_cut, 0], np.float32),
        score=job.face.score,
        kps=job.face.kps - np.array([x_cut, 0], np.float32),
    )
    swapper = RecordingSwapper(alignment)
    fused = FusedPass(swapper, IdentityRestorer(), None, PLAIN)
    fused.run([FaceJob(image, face)], fixed_source(fused, np.ones(512, np.float32)))
    crop = swapper.seen[0][0]
    m = swapper.alignment(face.kps)
    past = align.transform_points(align.invert(m), np.stack(np.meshgrid(np.arange(256.0), np.arange(256.0)), -1).reshape(-1, 2))
    outside = (past[:, 0] < -2).reshape(256, 256)  # crop pixels well left of the photo
    assert outside.mean() > 0.05
    assert not (crop[outside] == 0).all(axis=-1).any()  # no black bar
    expected = align.warp(image, m, 256, border="replicate")
    np.testing.assert_array_equal(crop, expected)
    assert align.SWAP_BORDER == "replicate"
