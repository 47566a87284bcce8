"""WD14 tagger through the real code: an ONNX graph with the v3 taggers' I/O and a
selected_tags.csv in the real layout (tests/fixtures/captioners.py)."""

from __future__ import annotations

import re
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from builder import fetch as F
from builder import weights as W
from builder.caption import wd14
from builder.caption.base import load_captioner
from builder.config import Config
from builder.errors import CheckpointError, MissingWeightError
from builder.needs import needed_for
from tests.fixtures.captioners import GENERAL, RATINGS, write_tags_csv, write_wd14

# SCORES in the fixture, most confident first, thresholds 0.35 / 0.85, ratings dropped,
# underscores replaced except in the three-character kaomoji.
EXPECTED = ["1girl", "solo", "blue eyes", "^_^", "long hair", "freckles", "smile", "hatsune miku"]


@pytest.fixture(scope="module")
def fixed_tagger(tmp_path_factory) -> Path:
    return write_wd14(tmp_path_factory.mktemp("wd14_fixed"))


@pytest.fixture(scope="module")
def image_tagger(tmp_path_factory) -> Path:
    return write_wd14(tmp_path_factory.mktemp("wd14_random"), fixed=False)


@pytest.fixture(scope="module")
def photos(donor_photos) -> list[np.ndarray]:
    return [cv2.imread(str(p)) for p in donor_photos[:3]]


def _cfg(folder: Path, **caption) -> Config:
    cfg = Config()
    cfg.caption.wd14_model = str(folder)
    for key, value in caption.items():
        setattr(cfg.caption, key, value)
    return cfg


def test_real_io_thresholds_categories_and_ratings_dropped(fixed_tagger, photos) -> None:
    tagger = wd14.load_wd14(_cfg(fixed_tagger), torch.device("cpu"))
    inp, out = tagger.session.get_inputs()[0], tagger.session.get_outputs()[0]
    assert (inp.shape[1:], inp.type, out.type) == ([448, 448, 3], "tensor(float)", "tensor(float)")
    assert isinstance(inp.shape[0], str) and out.shape[1] == len(RATINGS) + len(GENERAL) + 2  # dynamic batch
    assert tagger.tag(photos) == [EXPECTED] * 3
    assert not set(RATINGS) & {t for tags in tagger.tag(photos) for t in tags}
    assert tagger.tag([]) == []


def test_thresholds_and_underscores_follow_the_config(fixed_tagger, photos) -> None:
    strict = wd14.load_wd14(_cfg(fixed_tagger, wd14_general_threshold=0.55, wd14_character_threshold=0.9),
                            torch.device("cpu"))
    assert strict.tag(photos[:1]) == [["1girl", "solo", "blue eyes", "^_^"]]
    loose = wd14.load_wd14(_cfg(fixed_tagger, wd14_character_threshold=0.8, wd14_remove_underscore=False),
                           torch.device("cpu"))
    assert loose.tag(photos[:1]) == [["1girl", "solo", "blue_eyes", "^_^", "long_hair", "freckles", "smile",
                                      "hatsune_miku", "kagamine_rin"]]


def test_image_dependent_scores_are_batched_like_one_at_a_time(image_tagger, photos) -> None:
    tagger = wd14.load_wd14(_cfg(image_tagger), torch.device("cpu"))
    probs = tagger.probabilities(photos)
    assert probs.shape == (3, 15) and probs.dtype == np.float32
    assert ((probs > 0) & (probs < 1)).all()
    assert np.allclose(probs[1:2], tagger.probabilities(photos[1:2]), atol=1e-6)
    assert np.abs(probs[0] - probs[1]).max() > 1e-4  # the scores read the image
    for p, tags in zip(probs, tagger.tag(photos), strict=True):
        general = [i for i in range(4, 13) if p[i] >= 0.35]
        character = [i for i in range(13, 15) if p[i] >= 0.85]
        assert len(tags) == len(general) + len(character)
        scores = [p[tagger.names.index(t)] for t in tags[: len(general)]]
        assert scores == sorted(scores, reverse=True)  # most confident first


def test_preprocess_is_kohyas_white_padded_bgr_square() -> None:
    tall = np.zeros((600, 300, 3), np.uint8)
    tall[..., 0] = 200  # blue in BGR
    x = wd14.preprocess(tall)
    assert x.shape == (448, 448, 3) and x.dtype == np.float32
    assert (x[:, :100] == 255).all() and (x[:, -100:] == 255).all()  # centred, white padding
    assert np.allclose(x[:, 150:298, 0], 200) and np.allclose(x[:, 150:298, 1:], 0)  # channels not swapped
    small = wd14.preprocess(np.full((40, 40, 3), 17, np.uint8))  # upscaled with LANCZOS: flat stays flat
    assert np.allclose(small, 17)


def test_bad_tag_lists_and_mismatched_files_are_named(tmp_path: Path, fixed_tagger, photos) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("id,tag\n1,a\n", encoding="utf-8")
    with pytest.raises(CheckpointError, match=r"bad\.csv: not a WD14 selected_tags\.csv"):
        wd14.read_tags(bad)
    folder = tmp_path / "short"
    folder.mkdir()
    (folder / wd14.MODEL_FILE).write_bytes((fixed_tagger / wd14.MODEL_FILE).read_bytes())
    write_tags_csv(folder / wd14.TAGS_FILE, general=GENERAL[:3])
    tagger = wd14.load_wd14(_cfg(folder), torch.device("cpu"))
    with pytest.raises(CheckpointError, match="lists 9 tags; the two files are not from the same tagger"):
        tagger.tag(photos[:1])
    (folder / wd14.MODEL_FILE).unlink()
    with pytest.raises(MissingWeightError, match=re.escape(f"{folder}: the WD14 tagger needs model.onnx")):
        wd14.load_wd14(_cfg(folder), torch.device("cpu"))


def test_registry_entry_is_the_hub_snapshot_with_both_files(monkeypatch, tmp_path: Path) -> None:
    import huggingface_hub
    from huggingface_hub import constants

    monkeypatch.setattr(W, "hf_cache_dir", lambda: tmp_path / "hub")
    cfg = Config()
    with pytest.raises(MissingWeightError, match=r"launch\.py weights --fetch wd14_swinv2"):
        wd14.load_wd14(cfg, torch.device("cpu"))
    calls = []
    repo = tmp_path / "hub" / "models--SmilingWolf--wd-swinv2-tagger-v3"

    def snapshot_download(repo_id: str, allow_patterns: list[str]) -> str:
        calls.append((repo_id, allow_patterns))
        write_wd14(repo / "snapshots" / "abc")
        (repo / "refs").mkdir(exist_ok=True)
        (repo / "refs" / "main").write_text("abc")
        return str(repo / "snapshots" / "abc")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot_download)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(F.HostProbe, "error", lambda self, url: None)
    assert F.fetch(["wd14_swinv2"], str(tmp_path)) == [repo / "snapshots" / "abc"]
    assert calls == [("SmilingWolf/wd-swinv2-tagger-v3", ["model.onnx", "selected_tags.csv"])]  # not the timm weights
    assert wd14.load_wd14(cfg, torch.device("cpu")).source == str(repo / "snapshots" / "abc")


def test_random_weights_tag_with_placeholders_repeatably(monkeypatch, tmp_path: Path, photos) -> None:
    monkeypatch.setattr(W, "hf_cache_dir", lambda: tmp_path / "empty-hub")
    cfg = Config()
    cfg.runtime.random_weights = True
    cfg.caption.wd14_general_threshold = 0.2
    a, b = (wd14.load_wd14(cfg, torch.device("cpu")) for _ in range(2))
    tags = a.tag(photos)
    assert tags == b.tag(photos) and any(tags)
    assert all(t.startswith(("tag ", "character ")) for ts in tags for t in ts)  # never a rating


def test_needed_for_lists_each_part_of_a_combined_backend() -> None:
    cfg = Config()
    cfg.caption.backend = "blip+wd14"
    assert {"blip_large", "wd14_swinv2"} <= set(needed_for(cfg))
    cfg.caption.backend, cfg.caption.florence2_model = "florence2+wd14", "florence2_base"
    cfg.caption.wd14_model = "SmilingWolf/wd-eva02-large-tagger-v3"
    needed = set(needed_for(cfg))
    assert {"florence2_base", "wd14_eva02_large"} <= needed and "blip_large" not in needed
    cfg.caption.backend, cfg.caption.wd14_model = "wd14", "/my/tagger"  # a local folder: nothing to fetch
    assert not {n for n in needed_for(cfg) if n.startswith(("wd14", "florence2", "blip"))}


def test_backend_names_pick_sentence_and_tagger(fixed_tagger, photos, monkeypatch) -> None:
    from builder.caption import base

    monkeypatch.setitem(base.CAPTIONERS, "blip", lambda cfg, device: _Sentence())
    cfg = _cfg(fixed_tagger, backend="blip+wd14")
    backend = load_captioner(cfg, torch.device("cpu"))
    assert backend.name == "blip+wd14"
    [c] = backend.caption(photos[:1])
    assert (c.sentence, c.tags) == ("a woman on a beach", tuple(EXPECTED))
    cfg.caption.backend = "wd14"
    assert load_captioner(cfg, torch.device("cpu")).caption(photos[:1])[0].sentence == ""


class _Sentence:
    name = "blip"

    def caption(self, images):
        return ["a woman on a beach" for _ in images]


def test_the_config_offers_exactly_the_registered_backends() -> None:
    import typing

    from builder.caption import base
    from builder.config import CaptionConfig

    # "auto" is not a backend: base.backend_name turns it into one per model family
    assert set(typing.get_args(typing.get_type_hints(CaptionConfig)["backend"])) == {*base.BACKENDS, "auto"}
