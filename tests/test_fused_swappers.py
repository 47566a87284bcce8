"""The fused pass with each ONNX swapper (random weights of the real signatures) on a real donor photo:
the photo keeps its size, pixels outside the paste mask are untouched, the face is resampled 3 times."""

from __future__ import annotations

import typing

import numpy as np
import pytest

from bench.identity_models import IdentityRestorer
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
