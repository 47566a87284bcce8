"""BLIP captioner: a random-weight BlipForConditionalGeneration with BLIP's real tokenizer
(bert-base-uncased vocabulary + [DEC]/[ENC]), loaded from a folder like a hub checkpoint."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from builder import weights
from builder.caption import blip
from builder.caption.base import Caption, GenerationSettings, load_captioner
from builder.config import Config
from builder.errors import BuilderError, ConfigError, MissingWeightError
from tests.fixtures.blip import small_blip_config, write_small_blip
from tests.fixtures.threads import torch_threads


@pytest.fixture(autouse=True, scope="module")
def one_thread() -> Iterator[None]:
    with torch_threads(1):
        yield


@pytest.fixture(scope="module")
def blip_folder(tmp_path_factory) -> Path:
    return write_small_blip(tmp_path_factory.mktemp("blip"))


@pytest.fixture(scope="module")
def images(donor_photos) -> list[np.ndarray]:
    out = []
    for path in donor_photos[:3]:
        im = cv2.imread(str(path))
        out.append(cv2.resize(im, (96, round(96 * im.shape[0] / im.shape[1])), interpolation=cv2.INTER_AREA))
    return out


def _cfg(model: Path, **caption) -> Config:
    cfg = Config()
    cfg.caption.model = str(model)
    cfg.caption.max_length = 20
    cfg.caption.min_length = 12
    for key, value in caption.items():
        setattr(cfg.caption, key, value)
    return cfg


def test_blip_from_a_saved_folder_captions_a_batch(blip_folder: Path, images) -> None:
    captioner = blip.load_blip(_cfg(blip_folder), torch.device("cpu"))
    assert type(captioner.model).__name__ == "BlipForConditionalGeneration"
    assert captioner.processor.tokenizer.bos_token == "[DEC]"
    assert captioner.processor.tokenizer.convert_tokens_to_ids("[DEC]") == 30522
    captions = captioner.caption(images)
    assert len(captions) == len(images)
    assert all(isinstance(c, str) and c.strip() for c in captions)
    # Batched decoding gives each image its own caption, the same as one at a time.
    assert captioner.caption(images[1:2]) == captions[1:2]
    # max_length counts BLIP's [DEC] start token; each later token adds at most one word.
    assert all(len(c.split()) <= 19 for c in captions)
    assert captioner.caption([]) == []


def test_sampling_and_beams_are_both_repeatable(blip_folder: Path, images) -> None:
    sampler = blip.load_blip(_cfg(blip_folder, sampling=True, top_p=0.9), torch.device("cpu"))
    first = sampler.caption(images[:2])
    assert sampler.caption(images[:2]) == first  # re-seeded per batch
    beams = blip.load_blip(_cfg(blip_folder, beams=2), torch.device("cpu"))
    assert beams._generate_kwargs()["num_beams"] == 2
    assert sampler._generate_kwargs()["do_sample"] is True
    assert len(beams.caption(images[:2])) == 2


def test_settings_are_checked() -> None:
    with pytest.raises(ConfigError, match="beams"):
        GenerationSettings(beams=0)
    with pytest.raises(ConfigError, match="min_length"):
        GenerationSettings(min_length=30, max_length=10)


def test_real_architecture_sizes() -> None:
    from transformers import BlipForConditionalGeneration

    large = blip.blip_config("Salesforce/blip-image-captioning-large")
    base = blip.blip_config("blip_base")
    assert (large.vision_config.hidden_size, large.vision_config.num_hidden_layers) == (1024, 24)
    assert large.text_config.encoder_hidden_size == 1024  # the decoder cross-attends to ViT-L
    assert (base.vision_config.hidden_size, base.vision_config.num_hidden_layers) == (768, 12)
    with torch.device("meta"):
        model = BlipForConditionalGeneration(large)
    params = {n: p.numel() for n, p in model.named_parameters()}
    # blip-image-captioning-large's safetensors stores 470M values, the tied decoder head included.
    total = sum(params.values()) + 30524 * 768
    assert 465e6 < total < 475e6
    assert "text_decoder.cls.predictions.decoder.weight" in dict(model.state_dict())


def test_random_weights_are_seeded_and_use_the_offline_tokenizer(monkeypatch, images) -> None:
    monkeypatch.setattr(blip, "blip_config", lambda model: small_blip_config(image_size=384, patch_size=64))
    monkeypatch.setattr(blip, "repo_id", lambda model: ("nobody/not-cached-blip", None))
    cfg = Config()
    cfg.runtime.random_weights = True
    cfg.caption.max_length = 10
    a = blip.load_blip(cfg, torch.device("cpu"))
    b = blip.load_blip(cfg, torch.device("cpu"))
    assert a.processor.tokenizer.convert_tokens_to_ids("[ENC]") == 30523
    assert a.caption(images[:1]) == b.caption(images[:1])
    assert torch.equal(a.model.vision_model.embeddings.patch_embedding.weight, b.model.vision_model.embeddings.patch_embedding.weight)
    other = blip.build_random_blip(small_blip_config(image_size=384, patch_size=64), seed=1)
    assert not torch.equal(a.model.vision_model.embeddings.patch_embedding.weight, other.vision_model.embeddings.patch_embedding.weight)
    # The decoder head is tied to the word embeddings, as in the real checkpoint.
    dec = a.model.text_decoder
    assert dec.cls.predictions.decoder.weight.data_ptr() == dec.bert.embeddings.word_embeddings.weight.data_ptr()


def test_missing_model_offline_names_repo_and_fetch_command(monkeypatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(weights, "REGISTRY", {})
    monkeypatch.setitem(blip.BLIP_MODELS, "blip_large", "nobody/blip-not-in-cache")
    cfg = Config()
    cfg.caption.model = "blip_large"
    with pytest.raises(MissingWeightError) as err:
        blip.load_blip(cfg, torch.device("cpu"))
    msg = str(err.value)
    assert "nobody/blip-not-in-cache" in msg
    assert "python launch.py weights --fetch blip_large" in msg


def test_local_folder_without_a_model_is_named(tmp_path: Path) -> None:
    cfg = Config()
    cfg.caption.model = str(tmp_path)
    with pytest.raises(MissingWeightError, match=str(tmp_path)):
        blip.load_blip(cfg, torch.device("cpu"))


def test_lavis_missing_says_how_to_install(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "lavis.models", None)  # import fails as if not installed
    cfg = Config()
    cfg.caption.backend = "lavis"
    with pytest.raises(BuilderError, match="pip install salesforce-lavis"):
        load_captioner(cfg, torch.device("cpu"))


def test_none_backend_captions_nothing(images) -> None:
    cfg = Config()
    cfg.caption.backend = "none"
    assert load_captioner(cfg, torch.device("cpu")).caption(images) == [Caption("", ())] * 3
