"""The verdicts that catch this method's failures: report judge, donor leakage, prompt adherence,
validation loss, and the best-epoch rule."""

from __future__ import annotations

import shutil
import struct
from pathlib import Path
from xml.etree import ElementTree

import cv2
import numpy as np
import pytest

from builder.config import Config
from builder.faces.identity import (
    JUDGE_THRESHOLDS,
    judges_sentence,
    make_report_judge,
    same_network,
)
from builder.kohya.events import VALIDATION_LOSS, crc32c, epoch_scalars, records, scalars
from builder.sample.adherence import needed_weights, strip_trigger
from builder.sample.epochs import CONTROL, Epoch
from builder.sample.plot import render_epoch_plot
from builder.sample.run import validation_losses
from builder.sample.score import EpochSummary, FaceScore, IdentityScorer, spread, summarize
from builder.sample.verdict import choose_best

FIXTURES = Path(__file__).parent / "fixtures" / "tfevents"


def _summary(label: str, identity: float | None, closer: float | None = 0.0, adherence: float | None = 0.30) -> EpochSummary:
    return EpochSummary(
        label=label, images=4, faces=4 if identity is not None else 0, mean_similarity=identity,
        share_with_face=1.0 if identity is not None else 0.0, share_above_threshold=0.5,
        share_closer_to_donor=closer, mean_adherence=adherence,
    )


BASE = _summary("base", 0.80, closer=1.0, adherence=0.30)


# --- the best-epoch rule ----------------------------------------------------------------------


def test_rule_skips_a_leaking_and_an_overfit_epoch_for_the_best_clean_one() -> None:
    epochs = [
        _summary("e1", 0.90),
        _summary("e2", 0.95, closer=0.50),  # highest identity, but half its faces are the donor's
        _summary("e3", 0.94, adherence=0.25),  # second highest, but ignores the prompts
        _summary("e4", 0.92, closer=0.25, adherence=0.28),  # exactly at the limits: qualifies
    ]
    v = choose_best(epochs, BASE, max_donor_share=0.25, adherence_margin=0.03)
    assert v.best == "e4" and v.closest is None
    assert (v.verdicts["e2"].leaking, v.verdicts["e2"].overfit, v.verdicts["e2"].qualifies) == (True, False, False)
    assert (v.verdicts["e3"].leaking, v.verdicts["e3"].overfit) == (False, True)
    assert v.verdicts["e4"].qualifies and v.verdicts["e4"].miss == 0
    assert v.sentence == "best epoch e4: identity 0.920"
    assert "25%" in v.rule and "0.03" in v.rule
    assert v.base_adherence == pytest.approx(0.30)


def test_rule_names_the_closest_when_no_epoch_qualifies() -> None:
    epochs = [
        _summary("both", 0.97, closer=0.9, adherence=0.10),  # fails twice
        _summary("far", 0.95, closer=1.0),  # fails once, by 0.75
        _summary("near", 0.91, closer=0.30),  # fails once, by 0.05: the closest
    ]
    v = choose_best(epochs, BASE, 0.25, 0.03)
    assert v.best is None and v.closest == "near"
    assert v.sentence == "no epoch qualifies; the closest is near, which leaks the donor"
    assert v.verdicts["near"].miss == pytest.approx(0.05 / 0.25)
    # Equal misses: the higher identity is the closer one.
    tie = choose_best([_summary("a", 0.90, adherence=0.2), _summary("b", 0.93, adherence=0.2)], BASE, 0.25, 0.03)
    assert tie.closest == "b" and tie.sentence.endswith("which is overfit")


def test_rule_without_faces_or_measurements() -> None:
    none = choose_best([_summary("e1", None), _summary("e2", None)], BASE, 0.25, 0.03)
    assert none.best is None and none.closest is None
    assert none.sentence == "no epoch's samples show a face: there is no best epoch"
    # No donor photos, no adherence: only identity is left, and the sentence says what was left out.
    bare = choose_best([_summary("e1", 0.9, None, None), _summary("e2", 0.93, None, None)], None, 0.25, 0.03)
    assert bare.best == "e2" and bare.verdicts["e2"].leaking is None and bare.verdicts["e2"].overfit is None
    assert "donor leakage was not measured" in bare.sentence
    assert "prompt adherence was not measured" in bare.sentence
    # A control row without adherence is no reference either.
    assert choose_best([_summary("e1", 0.9)], _summary("base", 0.8, adherence=None), 0.25, 0.03).verdicts["e1"].overfit is None


def test_summaries_count_faces_closer_to_the_donor_over_faces_only() -> None:
    scores = [
        FaceScore(True, 0.9, 0.8, 0.3),
        FaceScore(True, 0.8, 0.85, 0.2),  # closer to the donor
        FaceScore(False, None, None, 0.1),  # no face: adherence still counts, leakage cannot
    ]
    s = summarize("e", scores, threshold=0.85, validation_loss=0.12)
    assert s.share_closer_to_donor == pytest.approx(0.5)
    assert s.mean_donor_similarity == pytest.approx(0.825)
    assert s.mean_adherence == pytest.approx(0.2)
    assert (s.validation_loss, s.faces, s.share_above_threshold) == (0.12, 2, pytest.approx(1 / 3))
    assert summarize("e", [FaceScore(True, 0.9)], 0.85).share_closer_to_donor is None


# --- report judge -----------------------------------------------------------------------------


def test_report_judge_is_not_arcface_and_shares_the_selection_judge_when_the_same() -> None:
    cfg = Config()
    assert cfg.faces.judge == "insightface" and cfg.faces.report_judge == "dlib"
    assert cfg.faces.report_judge in JUDGE_THRESHOLDS  # calibrated in the same table
    assert not same_network(cfg) and "(independent)" in judges_sentence(cfg)
    cfg.faces.judge = "dlib"
    assert same_network(cfg) and "same network" in judges_sentence(cfg)
    selection = object()
    assert make_report_judge(cfg, selection) is selection  # one network is loaded and run once
    with pytest.raises(Exception, match="report_judge"):
        from builder.config import apply_overrides

        apply_overrides(Config(), {"faces.report_judge": "insightface"})


# --- donor leakage and identity on real photos (the real dlib judge) --------------------------


@pytest.fixture(scope="module")
def scorer(data_dir: Path, source_photo: Path) -> IdentityScorer:
    cfg = Config()
    cfg.faces.detector = cfg.faces.judge = "dlib"
    cfg.paths.source = [str(source_photo)]
    cfg.paths.donors = str(data_dir / "donors")
    return IdentityScorer(cfg)


def test_samples_that_are_the_donor_photos_leak_and_the_source_photo_does_not(
    scorer: IdentityScorer, source_photo: Path, donor_photos: list[Path]
) -> None:
    from builder.io import load_image

    assert scorer.donor is not None and scorer.donor_used >= 20
    source = load_image(source_photo)
    lora_of_the_donor = [scorer.score(load_image(p)) for p in donor_photos[:4]]
    lora_of_the_source = [scorer.score(im) for im in (source, cv2.flip(source, 1))]
    thr = JUDGE_THRESHOLDS["dlib"].same_person
    donor, clean = summarize("donor", lora_of_the_donor, thr), summarize("source", lora_of_the_source, thr)
    assert donor.share_closer_to_donor == 1.0 and clean.share_closer_to_donor == 0.0
    assert clean.mean_similarity > 0.97 and clean.mean_donor_similarity < 0.9
    assert donor.mean_donor_similarity > 0.9 > donor.mean_similarity
    v = choose_best([donor, clean], None, max_donor_share=0.25, adherence_margin=0.03)
    assert v.verdicts["donor"].leaking and not v.verdicts["source"].leaking and v.best == "source"


def test_donor_photos_are_spread_over_the_folder() -> None:
    paths = [Path(f"{i:03d}.jpg") for i in range(100)]
    picked = spread(paths, 5)
    assert picked == [Path("000.jpg"), Path("025.jpg"), Path("050.jpg"), Path("074.jpg"), Path("099.jpg")]
    assert spread(paths[:3], 5) == paths[:3]


# --- adherence text and weights --------------------------------------------------------------


def test_prompt_loses_only_the_trigger() -> None:
    assert strip_trigger("photo of ohwx woman, close-up portrait", "ohwx") == "photo of woman, close-up portrait"
    assert strip_trigger("OHWX, smiling", "ohwx") == "smiling"
    assert strip_trigger("ohwxx woman", "ohwx") == "ohwxx woman"  # a longer word stays
    assert strip_trigger("woman ,  ohwx", "ohwx") == "woman"


def test_adherence_weights_are_fetched_only_when_used() -> None:
    cfg = Config()
    assert needed_weights(cfg) == ["clip_vit_b32"]
    cfg.sample.adherence = False
    assert needed_weights(cfg) == []
    cfg.sample.adherence, cfg.runtime.random_weights = True, True
    assert needed_weights(cfg) == []
    from builder.weights import REGISTRY

    spec = REGISTRY["clip_vit_b32"]
    # OpenAI's URL names the file's sha256; the registry checks the same one.
    assert spec.sha256 and spec.sha256 in spec.url and spec.url.endswith("/ViT-B-32.pt")


# --- validation loss from TensorBoard events --------------------------------------------------


def test_validation_loss_matches_tensorboards_reader() -> None:
    # The fixture was written by accelerate's TensorBoard tracker as sd-scripts logs (steps 1-12
    # "loss/current", epochs 1-3 the validation loss); tensorboard's EventAccumulator read
    # these exact float32 values from it.
    assert epoch_scalars(FIXTURES) == {
        1: struct.unpack("<f", struct.pack("<f", 0.31))[0],
        2: struct.unpack("<f", struct.pack("<f", 0.27))[0],
        3: struct.unpack("<f", struct.pack("<f", 0.29))[0],
    }
    (events,) = FIXTURES.rglob("events.out.tfevents.*")
    assert [s for s, _ in scalars(events, "loss/current")] == list(range(1, 13))
    assert crc32c(b"123456789") == 0xE3069283  # the CRC-32C check value


def test_a_torn_event_file_keeps_its_whole_records(tmp_path: Path) -> None:
    (events,) = FIXTURES.rglob("events.out.tfevents.*")
    data = events.read_bytes()
    whole = records(events)
    run = tmp_path / "log" / "20260101000000" / "network_train"
    run.mkdir(parents=True)
    (run / events.name).write_bytes(data[:-7])  # the last record cut short, as by a crash
    assert len(records(run / events.name)) == len(whole) - 1
    assert epoch_scalars(tmp_path / "log")[2] == pytest.approx(0.27)
    epochs = [CONTROL, Epoch("ohwx-000001", Path("a"), "epoch", 1), Epoch("ohwx-000009", Path("b"), "epoch", 9),
              Epoch("ohwx", Path("c"), "final")]
    losses = validation_losses(tmp_path, epochs)
    # Epoch 9 was never logged; the final file takes the last logged epoch's (3).
    assert losses == {"ohwx-000001": pytest.approx(0.31), "ohwx": pytest.approx(0.29)}
    assert validation_losses(tmp_path / "nowhere", epochs) == {}
    assert VALIDATION_LOSS == "loss/validation/epoch_average"


def test_a_resumed_training_log_overrides_earlier_epochs(tmp_path: Path) -> None:
    (events,) = FIXTURES.rglob("events.out.tfevents.*")
    for stamp in ("20260101000000", "20260102000000"):
        (tmp_path / stamp).mkdir()
        shutil.copy(events, tmp_path / stamp / events.name)
    (tmp_path / "20260102000000" / "events.out.tfevents.broken").write_bytes(b"\x00" * 5)
    assert epoch_scalars(tmp_path) == epoch_scalars(FIXTURES)


# --- the epoch plot ---------------------------------------------------------------------------


def test_epoch_plot_draws_three_curves_and_marks_the_best() -> None:
    epochs = [CONTROL, *(Epoch(f"ohwx-00000{i}", Path(f"{i}"), "epoch", i) for i in (1, 2, 3))]
    summaries = {
        "base": BASE,
        "ohwx-000001": _summary("ohwx-000001", 0.9),
        "ohwx-000002": _summary("ohwx-000002", 0.95, closer=0.6),
        "ohwx-000003": EpochSummary("ohwx-000003", 4, 4, 0.93, 1.0, 0.5, 0.8, 0.0, 0.31, 0.2),
    }
    verdict = choose_best([summaries[e.label] for e in epochs[1:]], BASE, 0.25, 0.03)
    svg = render_epoch_plot(epochs, summaries, verdict)
    root = ElementTree.fromstring(svg)
    ns = "{http://www.w3.org/2000/svg}"
    titles = [t.text for t in root.iter(f"{ns}text")]
    assert {"identity to the source (report judge)", "share of faces closer to the donor", "prompt adherence (CLIP)",
            "validation loss"} <= set(titles)
    assert len(list(root.iter(f"{ns}polyline"))) == 3  # the loss has one point: dots, no line
    assert verdict.best == "ohwx-000003" and verdict.sentence in titles
    marks = [line for line in root.iter(f"{ns}line") if line.get("stroke") == "#2f855a"]
    assert len(marks) == 4 and len({m.get("x1") for m in marks}) == 1  # one green line through every panel
    assert float(marks[0].get("x1")) == pytest.approx(620.0)  # the last of three epochs: the right edge


def test_report_judge_scores_results_beside_the_selection_judge(source_photo: Path, donor_photos: list[Path]) -> None:
    """score_result keeps both judges' cosines; with one network, the second set is a copy."""
    from builder.faces.detect_dlib import DlibDetector
    from builder.faces.identity import DlibJudge, average_identity
    from builder.io import load_image
    from builder.quality.scores import score_result

    cfg = Config()
    detector, judge = DlibDetector(cfg), DlibJudge(cfg)
    src = load_image(source_photo)
    identity = average_identity([judge.embed(src, detector.detect(src)[0])])
    donor = load_image(donor_photos[0])
    face = detector.detect(donor)[0]

    class Other:  # a second instance: the same net, computed again rather than copied
        name = "dlib"
        embed = staticmethod(DlibJudge(cfg).embed)

    same = score_result(donor, donor, face, identity, judge, None, report_judge=judge, report_source_identity=identity)
    other = score_result(donor, donor, face, identity, judge, None, report_judge=Other(), report_source_identity=identity)
    assert same.report_source_similarity == same.source_similarity
    assert other.report_source_similarity == pytest.approx(same.source_similarity, abs=1e-6)
    assert other.report_donor_similarity == pytest.approx(1.0, abs=1e-6)  # the "result" is the donor photo
    assert np.isfinite(other.report_source_similarity) and other.report_judge == "dlib"


# --- the open_clip loading and scoring path (random weights of the real architecture) ---------


@pytest.mark.slow
def test_clip_adherence_loads_the_registry_file_and_scores_deterministically(tmp_path: Path) -> None:
    """A random ViT-B/32 saved under OpenAI's file name loads through the same open_clip call as
    the real archive (load_openai_model also takes a state dict) and scores as the model does."""
    import open_clip
    import torch

    from builder.errors import BuilderError
    from builder.sample.adherence import ClipAdherence
    from builder.weights import weight_path

    cfg = Config()
    cfg.runtime.weights_dir = str(tmp_path)
    torch.manual_seed(3)
    model = open_clip.create_model("ViT-B-32-quickgelu").half()  # OpenAI's file holds fp16 weights
    path = weight_path("clip_vit_b32", cfg.runtime.weights_dir)
    path.parent.mkdir(parents=True)
    torch.save(model.state_dict(), path)
    loaded = ClipAdherence.load(cfg, "cpu")
    reference = ClipAdherence(model.float(), "cpu")
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (96, 128, 3), dtype=np.uint8) for _ in range(2)]
    texts = ["photo of woman, close-up portrait", "photo of woman, standing outdoors in a city street"]
    got = np.array([[loaded.score(im, t) for t in texts] for im in images])
    want = np.array([[reference.score(im, t) for t in texts] for im in images])
    assert np.abs(got - want).max() < 1e-5
    assert np.all(np.abs(got) <= 1.0) and len(set(np.round(got.ravel(), 6))) == 4
    assert loaded.score(images[0], texts[0]) == got[0, 0] and set(loaded._texts) == set(texts)  # cached text
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(BuilderError, match=r"ViT-B-32\.pt is not a CLIP ViT-B/32 checkpoint"):
        ClipAdherence.load(cfg, "cpu")


def test_review_samples_tab_gets_the_epoch_plot_and_the_verdict(tmp_path: Path) -> None:
    import json

    from builder.review.cards import samples_view

    samples = tmp_path / "samples"
    samples.mkdir()
    verdict = choose_best([_summary("ohwx-000001", 0.9, closer=0.5)], BASE, 0.25, 0.03)
    report = {"epochs": [{"label": "ohwx-000001", "share_closer_to_donor": 0.5, "verdict": {"leaking": True}}],
              "best_epoch": None, "best_epoch_rule": verdict.to_dict()}
    (samples / "report.json").write_text(json.dumps(report), encoding="utf-8")
    view = samples_view(tmp_path)
    assert view["epoch_plot"] is None  # the report without its plot: nothing to show
    assert view["verdict"] == "no epoch qualifies; the closest is ohwx-000001, which leaks the donor"
    assert view["epochs"][0]["share_closer_to_donor"] == 0.5 and view["epochs"][0]["verdict"] == {"leaking": True}
    (samples / "epochs.svg").write_text("<svg/>", encoding="utf-8")
    assert samples_view(tmp_path)["epoch_plot"] == "/files/samples/epochs.svg"
