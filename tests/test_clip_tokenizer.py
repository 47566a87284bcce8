"""The CLIP ViT-L/14 tokenizer built offline from CLIP's BPE file: ids, cache, sources, users."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import open_clip
import pytest

from builder import weights as W
from builder.caption import clip_tokenizer as C
from builder.caption.text import load_clip_counter
from builder.config import Config
from builder.errors import BuilderError, MissingWeightError
from builder.needs import needed_for
from tests.fixtures.clip import bpe_path

CAPTIONS = [
    "ohwx, woman, a photo of a woman on a beach!",
    "Hello!!! ?? (foo) [bar] {baz} #tag @user 3.14 1,000 -- ok...",
    "café crème brûlée, naïve — “smart” quotes, it’s Zoë's",
    "Ünïcödé ÀÉÎ ß ﬁne ligature",
    "日本語のテキスト 😀 emoji, Ελληνικά, русский",
    "tabs\tand\n newlines   collapse",
    "x" * 300,
]


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return C.write_clip_tokenizer(tmp_path_factory.mktemp("clip") / C.CLIP_CACHE_NAME, bpe_path())


def test_registry_checksum_matches_the_packaged_bpe_file() -> None:
    spec = W.REGISTRY["clip_bpe"]
    assert spec.url == "https://github.com/openai/CLIP/raw/main/clip/bpe_simple_vocab_16e6.txt.gz"
    assert spec.filename == bpe_path().name and spec.kind == "file" and not spec.optional
    assert bpe_path().stat().st_size == spec.size
    assert W.sha256_file(bpe_path()) == spec.sha256


def test_vocab_and_ids_equal_open_clip(built: Path) -> None:
    from transformers import CLIPTokenizer

    tok = CLIPTokenizer.from_pretrained(str(built))
    assert len(tok) == C.VOCAB_SIZE and tok.model_max_length == C.MODEL_MAX_LENGTH
    assert (tok.bos_token_id, tok.eos_token_id, tok.pad_token_id) == (49406, 49407, 49407)
    ref = open_clip.get_tokenizer("ViT-L-14")
    counter = load_clip_counter(str(built))
    for text in CAPTIONS:
        want = [i for i in ref([text], context_length=400)[0].tolist() if i][1:-1]
        assert counter.count(text) == len(want), text
        cleaned = " ".join(counter.fix_text(text).split())
        assert tok(cleaned, add_special_tokens=False)["input_ids"] == want, text


def test_byte_table_is_clips() -> None:
    table = C.bytes_to_unicode()
    assert len(set(table.values())) == 256 and table[ord("a")] == "a" and table[ord(" ")] == "Ġ"
    assert list(table.items()) == list(open_clip.tokenizer.bytes_to_unicode().items())  # order = ids


def test_ensure_builds_once_in_the_sd_scripts_layout(tmp_path: Path) -> None:
    folder = C.ensure_clip_tokenizer(str(tmp_path))
    # sd-scripts strategy_base._load_tokenizer: os.path.join(tokenizer_cache_dir, model_id.replace("/", "_")).
    assert folder == tmp_path / "sd-scripts-tokenizer" / "openai_clip-vit-large-patch14"
    assert sorted(p.name for p in folder.iterdir()) == sorted(C.TOKENIZER_FILES)
    assert not [p for p in folder.parent.iterdir() if p.name.startswith(".")]  # no temp folder left
    stamp = (folder / "vocab.json").stat().st_mtime_ns
    assert C.ensure_clip_tokenizer(str(tmp_path)) == folder
    assert (folder / "vocab.json").stat().st_mtime_ns == stamp


def test_partial_folder_is_rebuilt(tmp_path: Path) -> None:
    folder = C.tokenizer_cache_root(str(tmp_path)) / C.CLIP_CACHE_NAME
    folder.mkdir(parents=True)
    (folder / "tokenizer_config.json").write_text("{}")
    assert C.ensure_clip_tokenizer(str(tmp_path)) == folder
    assert (folder / "merges.txt").read_text(encoding="utf-8").count("\n") == C.N_MERGES + 1


def test_weights_cache_copy_comes_first(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = bpe_path()
    monkeypatch.setattr(C, "open_clip_bpe", lambda: None)
    with pytest.raises(MissingWeightError, match=r"launch.py weights --fetch clip_bpe") as err:
        C.ensure_clip_tokenizer(str(tmp_path))
    assert str(W.weight_path("clip_bpe", str(tmp_path))) in str(err.value)
    cached = W.weight_path("clip_bpe", str(tmp_path))
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"\x1f\x8b not really gzip")
    with pytest.raises(BuilderError, match=r"sha256 \w+ is not CLIP's bpe_simple_vocab_16e6\.txt\.gz"):
        C.ensure_clip_tokenizer(str(tmp_path))
    shutil.copyfile(real, cached)
    assert C.bpe_file(str(tmp_path)) == cached
    assert (C.ensure_clip_tokenizer(str(tmp_path)) / "vocab.json").is_file()


def test_default_repo_id_offline_uses_the_built_tokenizer(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "empty-hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    counter = load_clip_counter(C.CLIP_REPO_ID, str(tmp_path / "cache"))
    assert counter.count("a photo of a cat") == 5
    assert (tmp_path / "cache" / "sd-scripts-tokenizer" / C.CLIP_CACHE_NAME / "vocab.json").is_file()


def test_explicit_folder_is_used_as_given(tmp_path: Path) -> None:
    with pytest.raises(BuilderError, match="not a CLIP tokenizer"):
        load_clip_counter(str(tmp_path), str(tmp_path / "cache"))
    assert not (tmp_path / "cache").exists()


def test_sd_scripts_loads_it_like_its_own_cache(tmp_path: Path) -> None:
    """What strategy_sd.SdTokenizeStrategy does with tokenizer_cache_dir for SD v1."""
    from transformers import CLIPTokenizer

    C.ensure_clip_tokenizer(str(tmp_path))
    cache_dir = str(C.tokenizer_cache_root(str(tmp_path)))
    local = os.path.join(cache_dir, "openai/clip-vit-large-patch14".replace("/", "_"))
    assert os.path.exists(local)
    tok = CLIPTokenizer.from_pretrained(local)
    ids = tok("ohwx, woman", padding="max_length", max_length=tok.model_max_length, truncation=True)["input_ids"]
    assert len(ids) == 77 and ids[0] == 49406 and ids[-1] == 49407
    assert tok.pad_token_id == tok.eos_token_id  # sd-scripts reads this as the v1 tokenizer


def test_needed_for_lists_clip_bpe_and_blip_registry_names() -> None:
    cfg = Config()
    cfg.paths.base_model = "/models/my_sd15.safetensors"
    assert "clip_bpe" in needed_for(cfg)
    cfg.caption.model = "blip_base"
    assert "blip_base" in needed_for(cfg) and "blip_large" not in needed_for(cfg)
    cfg.caption.model = "/some/local/blip"
    assert not {"blip_base", "blip_large"} & set(needed_for(cfg))
    cfg.caption.clip_tokenizer = "/some/clip"
    assert "clip_bpe" in needed_for(cfg)  # the kohya files still want the tokenizer cache
    cfg.kohya.tokenizer_cache_dir = "/some/cache"
    assert "clip_bpe" not in needed_for(cfg)
    cfg.runtime.random_weights = True
    assert needed_for(cfg) == []
    cfg.caption.clip_tokenizer = C.CLIP_REPO_ID
    assert needed_for(cfg) == ["clip_bpe"]
