"""Florence-2 through the real code: a tiny random Florence2ForConditionalGeneration (the
real classes) saved like a hub checkpoint, with a Florence2Processor; and the combined
florence2+wd14 backend captioning a kohya folder end to end."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

import launch
from builder import weights as W
from builder.caption import florence2
from builder.caption.text import load_clip_counter
from builder.config import Config
from builder.errors import BuilderError, MissingWeightError
from tests.fixtures.captioners import write_small_florence2, write_wd14
from tests.fixtures.clip import write_clip_tokenizer
from tests.fixtures.threads import torch_threads


@pytest.fixture(autouse=True, scope="module")
def one_thread() -> Iterator[None]:
    with torch_threads(1):
        yield


@pytest.fixture(scope="module")
def model_folder(tmp_path_factory) -> Path:
    return write_small_florence2(tmp_path_factory.mktemp("florence2"))


@pytest.fixture(scope="module")
def photos(donor_photos) -> list[np.ndarray]:
    return [cv2.imread(str(p)) for p in donor_photos[:3]]


def _cfg(folder: Path, **caption) -> Config:
    cfg = Config()
    cfg.caption.backend = "florence2"
    cfg.caption.florence2_model = str(folder)
    cfg.caption.florence2_max_new_tokens = 12
    cfg.caption.beams = 2
    for key, value in caption.items():
        setattr(cfg.caption, key, value)
    return cfg


def test_native_classes_generate_a_batch_like_one_at_a_time(model_folder, photos) -> None:
    config = json.loads((model_folder / "config.json").read_text())
    assert config["architectures"] == ["Florence2ForConditionalGeneration"] and "auto_map" not in config
    captioner = florence2.load_florence2(_cfg(model_folder), torch.device("cpu"))
    assert type(captioner.processor).__name__ == "Florence2Processor"
    captions = captioner.caption(photos)
    assert len(captions) == 3 and all(isinstance(c, str) and c for c in captions)
    assert captioner.caption(photos[2:3]) == captions[2:3]
    assert captioner.caption([]) == []
    # The task token becomes Florence-2's own prompt, after the image tokens.
    inputs = captioner.processor(text=["<MORE_DETAILED_CAPTION>"], images=[np.zeros((64, 64, 3), np.uint8)])
    prompt = captioner.processor.tokenizer.decode(inputs["input_ids"][0], skip_special_tokens=True)
    assert prompt == "Describe with a paragraph what is shown in the image."


def test_generation_settings_reach_generate(model_folder, photos, monkeypatch) -> None:
    captioner = florence2.load_florence2(_cfg(model_folder, florence2_task="<MORE_DETAILED_CAPTION>"),
                                         torch.device("cpu"))
    seen = {}
    generate = captioner.model.generate

    def spy(**kwargs):
        seen.update(kwargs)
        out = generate(**kwargs)
        seen["new_tokens"] = out.shape[1] - 1  # the decoder start token comes first
        return out

    monkeypatch.setattr(captioner.model, "generate", spy)
    captioner.caption(photos[:2])
    assert (seen["num_beams"], seen["do_sample"], seen["max_new_tokens"]) == (2, False, 12)
    assert seen["new_tokens"] <= 12 and seen["pixel_values"].shape == (2, 3, 64, 64)
    sampler = florence2.load_florence2(_cfg(model_folder, sampling=True), torch.device("cpu"))
    assert sampler.caption(photos[:2]) == sampler.caption(photos[:2])  # re-seeded per batch


def test_real_architecture_sizes() -> None:
    from transformers import Florence2ForConditionalGeneration

    class Tokenizer:  # the real tokenizer's numbers: 51289 tokens, then the image token
        image_token_id, bos_token_id, pad_token_id, eos_token_id = 51289, 0, 1, 2

        def __len__(self) -> int:
            return 51289

    class Processor:
        tokenizer = Tokenizer()

    sizes = {}
    for name in ("florence-community/Florence-2-base", "florence-community/Florence-2-large"):
        with torch.device("meta"):
            model = Florence2ForConditionalGeneration(florence2.florence2_config(name, Processor()))
        sizes[name] = sum(p.numel() for p in model.parameters())
    # The model cards' 0.23B and 0.77B parameters.
    assert 0.225e9 < sizes["florence-community/Florence-2-base"] < 0.235e9
    assert 0.765e9 < sizes["florence-community/Florence-2-large"] < 0.775e9


def test_missing_checkpoint_offline_and_random_weights_without_processor(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(W, "REGISTRY", {})
    monkeypatch.setitem(florence2.FLORENCE2_MODELS, "florence2_large", "nobody/florence-not-cached")
    cfg = Config()
    with pytest.raises(MissingWeightError) as err:
        florence2.load_florence2(cfg, torch.device("cpu"))
    assert "nobody/florence-not-cached" in str(err.value)
    assert "python launch.py weights --fetch florence2_large" in str(err.value)
    cfg.runtime.random_weights = True
    with pytest.raises(BuilderError, match="huggingface-cli download nobody/florence-not-cached --include"):
        florence2.load_florence2(cfg, torch.device("cpu"))


def test_florence2_plus_wd14_captions_a_kohya_folder(tmp_path, model_folder, donor_photos) -> None:
    folder = tmp_path / "run" / "img" / "10_ohwx woman"
    folder.mkdir(parents=True)
    for i, path in enumerate(donor_photos[:3]):
        shutil.copy(path, folder / f"{i:04d}{Path(path).suffix}")
    clip = write_clip_tokenizer(tmp_path / "clip")
    tagger = write_wd14(tmp_path / "wd14")
    config = tmp_path / "config.toml"
    config.write_text(
        f'[caption]\nbackend = "florence2+wd14"\nflorence2_model = "{model_folder}"\nwd14_model = "{tagger}"\n'
        f'clip_tokenizer = "{clip}"\nbeams = 1\nflorence2_max_new_tokens = 8\nextra_tags = ["film grain"]\n',
        encoding="utf-8",
    )
    assert launch.main(["caption", str(tmp_path / "run"), "--config", str(config)]) == 0
    counter = load_clip_counter(str(clip))
    texts = [p.read_text(encoding="utf-8") for p in sorted(folder.glob("*.txt"))]
    assert len(texts) == 3
    # Default trait pruning drops the tagger's "blue eyes" and "freckles": the trigger carries the face.
    tags = "film grain, 1girl, solo, ^_^, long hair, smile, hatsune miku"
    for text in texts:
        assert text.startswith("ohwx, woman, ") and text.endswith(", " + tags)
        assert len(text) > len("ohwx, woman, " + tags) + 2  # Florence's sentence sits between
        assert counter.count(text) <= 75
    # The configured order puts the tags first; --no-hair prunes "long hair" too.
    args = ["caption", str(tmp_path / "run"), "--config", str(config), "--mode", "overwrite", "--no-hair",
            "--set", "caption.order=trigger,class,tags,caption"]
    assert launch.main(args) == 0
    for p in sorted(folder.glob("*.txt")):
        assert p.read_text(encoding="utf-8").startswith("ohwx, woman, film grain, 1girl, solo, ^_^, smile, hatsune miku, ")
