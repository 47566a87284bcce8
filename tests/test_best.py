"""The per-face best-of loop (swap.swapper / swap.restorer = "best"), judged by a real identity net.

The cases are built so the answer is known: one candidate really is the source's face (the
source photo itself, warped into the crop), the others are the donor's face or a blurred copy,
and the real dlib judge must find the source's.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from bench.identity_models import IdentityRestorer, IdentitySwapper
from builder.config import Config, SwapConfig
from builder.errors import ConfigError
from builder.faces import align
from builder.faces.detect import make_detector
from builder.faces.identity import make_judge
from builder.io import load_image
from builder.swap import restorers, swappers
from builder.swap.best import CandidateScore, pick
from builder.swap.fused import FFHQ_SIZE, FaceJob, FusedPass
from builder.swap.source import SourceIdentity

DONOR = "TaylorSwift1.jpeg"


def score(source: float, donor: float = 0.5, sharp: float = 100.0) -> CandidateScore:
    return CandidateScore(source_similarity=source, donor_similarity=donor, sharpness=sharp)


def test_pick_highest_source_similarity_among_swaps_that_took() -> None:
    scores = {"a": score(0.95, donor=0.97), "b": score(0.93), "c": score(0.91)}
    assert pick(scores, max_donor_similarity=0.93) == "b"  # "a" still looks like the donor
    assert pick(scores, max_donor_similarity=None) == "a"
    # none took: the closest to the source still wins rather than nothing
    assert pick({"a": score(0.9, donor=0.99), "b": score(0.8, donor=0.98)}, 0.93) == "a"


def test_pick_breaks_ties_by_sharpness() -> None:
    scores = {"soft": score(0.9200, sharp=50.0), "sharp": score(0.9195, sharp=400.0), "far": score(0.80, sharp=900.0)}
    assert pick(scores, None) == "sharp"
    assert pick({"soft": score(0.93, sharp=50.0), "sharp": score(0.92, sharp=400.0)}, None) == "soft"
    with pytest.raises(ValueError):
        pick({}, None)


@pytest.fixture(scope="module")
def scene(dlib_cfg, data_dir, source_photo):
    """The donor photo and its face, the source photo and its face, the judge and the source identity."""
    detector, judge = make_detector(dlib_cfg), make_judge(dlib_cfg)
    donor = load_image(data_dir / "donors" / DONOR)
    source = load_image(source_photo)
    donor_face, source_face = detector.detect(donor)[0], detector.detect(source)[0]
    identity = SourceIdentity(
        {"identity": np.ones(512, np.float32), "source": np.ones(512, np.float32)},
        judge.embed(source, source_face),
    )
    return donor, donor_face, source, source_face, judge, identity


class SourceSwapper(IdentitySwapper):
    """"Swaps" in the source photo's own face, warped into the same crop: a swap that took perfectly."""

    name = "source"

    def __init__(self, source: np.ndarray, kps: np.ndarray):
        self.source, self.kps = source, kps

    def swap(self, crops: np.ndarray, identity: np.ndarray) -> np.ndarray:
        face = align.warp(self.source, self.alignment(self.kps), self.crop_size, border="reflect")
        return np.stack([face] * len(crops))


class SourceRestorer:
    """"Restores" to the source photo's FFHQ crop."""

    name = "source"

    def __init__(self, source: np.ndarray, kps: np.ndarray):
        self.crop = align.warp(source, align.estimate_ffhq(kps, FFHQ_SIZE), FFHQ_SIZE, border="reflect")

    def restore(self, crops: np.ndarray) -> np.ndarray:
        return np.stack([self.crop] * len(crops))


class BlurRestorer:
    name = "blur"

    def restore(self, crops: np.ndarray) -> np.ndarray:
        return np.stack([cv2.GaussianBlur(c, (0, 0), 6) for c in crops])


PLAIN = SwapConfig(mouth=False, paste_mask="box")


def test_swapper_best_keeps_the_swap_that_carries_the_source(scene) -> None:
    donor, donor_face, source, source_face, judge, identity = scene
    candidates = [IdentitySwapper(), SourceSwapper(source, source_face.kps)]
    fused = FusedPass(candidates, IdentityRestorer(), None, PLAIN, judge, max_donor_similarity=0.93)
    res = fused.run([FaceJob(donor, donor_face)], identity)[0]
    assert res.swapper == "source"
    choice = res.choice_dict()["swapper"]
    assert choice["chosen"] == "source" and set(choice["candidates"]) == {"identity", "source"}
    by = choice["candidates"]
    # the pass-through "swap" is the donor, so it scores ~1 to the donor and did not take
    assert by["identity"]["donor_similarity"] > 0.97
    assert by["source"]["source_similarity"] > by["identity"]["source_similarity"] + 0.05
    # the winner's own alignment is what the record carries
    np.testing.assert_allclose(res.m_swap, candidates[1].alignment(donor_face.kps))
    assert res.image.shape == donor.shape
    assert "restorer" not in res.choices  # one restorer: nothing to choose


def test_restorer_best_prefers_the_source_face_and_breaks_ties_by_sharpness(scene) -> None:
    donor, donor_face, source, source_face, judge, identity = scene
    restorers_ = [IdentityRestorer(), BlurRestorer(), SourceRestorer(source, source_face.kps)]
    fused = FusedPass(IdentitySwapper(), restorers_, None, PLAIN, judge)
    res = fused.run([FaceJob(donor, donor_face)], identity)[0]
    assert res.restorer == "source"
    np.testing.assert_array_equal(res.restored_crop, restorers_[2].crop)
    scores = res.choices["restorer"].candidates
    assert scores["blur"].sharpness < scores["identity"].sharpness / 5
    # without the source candidate the two donor crops are judged; the record names the winner
    fused = FusedPass(IdentitySwapper(), restorers_[:2], None, PLAIN, judge)
    res = fused.run([FaceJob(donor, donor_face)], identity)[0]
    c = res.choices["restorer"]
    assert res.restorer == c.chosen == max(c.candidates, key=lambda k: c.candidates[k].source_similarity)


def test_best_needs_a_judge() -> None:
    with pytest.raises(ValueError, match="judge"):
        FusedPass([IdentitySwapper(), IdentitySwapper()], IdentityRestorer(), None, PLAIN)


def test_candidate_specs_and_shared_codeformer(dlib_cfg) -> None:
    cfg = Config()
    cfg.runtime = dlib_cfg.runtime
    cfg.swap.restorer = "best"
    cfg.swap.restorer_candidates = ["codeformer:w=0.5", "codeformer:w=1.0", "none"]
    loaded = restorers.load_restorers(cfg, "cpu")
    assert [r.name for r in loaded] == ["codeformer:w=0.5", "codeformer:w=1", "none"]
    assert loaded[0].net is loaded[1].net and (loaded[0].w, loaded[1].w) == (0.5, 1.0)
    assert restorers.weights(cfg) == ["codeformer"]
    assert restorers.parse_spec("codeformer: w = 0.3 ") == ("codeformer", {"w": "0.3"})
    for bad, msg in (("codeformer:w=2", r"\[0, 1\]"), ("codeformer:x=1", "only the option w"),
                     ("gfpgan:w=1", "takes no options"), ("codeformer:w", "key=value")):
        cfg.swap.restorer_candidates = [bad]
        with pytest.raises(ConfigError, match=msg):
            restorers.load_restorers(cfg, "cpu")
    cfg.swap.restorer_candidates = []
    with pytest.raises(ConfigError, match="restorer_candidates"):
        restorers.specs(cfg)
    cfg.swap.swapper, cfg.swap.swapper_candidates = "best", ["ghost", "nope"]
    with pytest.raises(ConfigError, match="'nope' is not one of"):
        swappers.weights(cfg)


def test_report_pick_and_agreement_over_a_build() -> None:
    """The report judge's own cosines, by the same rule, say which candidate it would have kept;
    the build counts the faces where both judges kept the same one."""
    from builder.pipeline import chosen_label
    from builder.quality.summary import agreement_sentence, judge_agreement
    from builder.swap.best import Choice, report_pick

    def both(src: float, rep: float, rep_donor: float = 0.8) -> CandidateScore:
        return CandidateScore(src, 0.5, 100.0, report_source_similarity=rep, report_donor_similarity=rep_donor)

    agree = {"ghost": both(0.6, 0.95), "inswapper_128": both(0.5, 0.90)}
    differ = {"ghost": both(0.6, 0.91), "inswapper_128": both(0.5, 0.94)}
    took = {"ghost": both(0.6, 0.91), "inswapper_128": both(0.5, 0.97, rep_donor=0.99)}  # the report judge's donor
    assert report_pick(agree, 0.93) == "ghost" and report_pick(differ, 0.93) == "inswapper_128"
    assert report_pick(took, 0.93) == "ghost"  # by the report judge's own "did not take" threshold
    assert report_pick({"a": score(0.9)}, 0.93) is None  # scored by one judge only
    choices = [
        {"swapper": Choice(pick(s, None), s, report_pick(s, 0.93)).to_dict(), "restorer": {"chosen": "gfpgan"}}
        for s in (agree, differ, took)
    ]
    assert choices[1]["swapper"]["report_chosen"] == "inswapper_128"
    assert choices[1]["swapper"]["candidates"]["ghost"]["report_source_similarity"] == 0.91
    assert judge_agreement([*choices, None]) == {"swapper": (2, 3)}
    assert agreement_sentence({"swapper": (2, 3)}, "dlib", same_network=False) == (
        "best-of: the report judge (dlib) would have kept the same swapper on 2 of 3 faces"
    )
    assert "by construction" in agreement_sentence({"swapper": (3, 3)}, "dlib", same_network=True)
    assert agreement_sentence({}, "dlib", False) is None
    assert chosen_label(choices[1]) == "ghost (report: inswapper_128)" and chosen_label(choices[0]) == "ghost"


def test_swapper_best_records_what_a_second_judge_would_have_kept(scene, dlib_cfg) -> None:
    """A second judge instance (the report judge) scores every candidate again in the FFHQ crop."""
    donor, donor_face, source, source_face, judge, identity = scene
    report_judge = make_judge(dlib_cfg)
    assert report_judge is not judge
    identity = SourceIdentity(identity.vectors, identity.judge, report=identity.judge)
    candidates = [IdentitySwapper(), SourceSwapper(source, source_face.kps)]
    fused = FusedPass(candidates, IdentityRestorer(), None, PLAIN, judge, 0.93, report_judge, 0.93)
    choice = fused.run([FaceJob(donor, donor_face)], identity)[0].choices["swapper"]
    # The same network on the same crops: the same cosines and the same winner.
    assert choice.report_chosen == choice.chosen == "source"
    for s in choice.candidates.values():
        assert s.report_source_similarity == pytest.approx(s.source_similarity, abs=1e-6)
        assert s.report_donor_similarity == pytest.approx(s.donor_similarity, abs=1e-6)
