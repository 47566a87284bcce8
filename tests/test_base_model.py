"""Base models from every source, against a local server playing civitai and the Hugging Face hub."""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

import pytest
import torch

from builder import base_model as B
from builder import weights as W
from builder.config import Config
from builder.errors import BuilderError, MissingWeightError
from builder.families.sd15 import SD15, RandomSDSizes, write_random_sd15
from builder.needs import base_model_names
from tests.fixtures.clip import bpe_path
from tests.fixtures.model_hosts import ModelHost, ServedModelHost, model_bytes, written_text
from tests.fixtures.tiny_sd import build_tiny_pipeline, write_single_file

TOKEN = "civitai-secret-token-3f9a7c1e"  # a value the test can grep for
NAME = "epicrealism_naturalSinRC1VAE.safetensors"

# A random SD 1.5 small enough for tests: the real block structure, tiny channel counts.
TINY = RandomSDSizes(
    block_out_channels=(32, 64, 64), layers_per_block=1, cross_attention_dim=32, text_hidden=32,
    text_intermediate=37, text_layers=2, text_heads=4, vae_channels=(32, 32, 64), vae_layers_per_block=1,
)


@pytest.fixture
def cfg(tmp_path, monkeypatch) -> Config:
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv(B.CIVITAI_TOKEN_ENV, raising=False)
    c = Config()
    c.runtime.weights_dir = str(tmp_path / "weights")
    return c


@pytest.fixture
def host(monkeypatch):
    h = ModelHost(files={"143906": (NAME, model_bytes())})
    with ServedModelHost(h) as served:
        monkeypatch.setenv(B.CIVITAI_API_ENV, served.base)
        monkeypatch.setenv("HF_ENDPOINT", served.base)
        yield served


def test_specs_are_told_apart(tmp_path):
    local = tmp_path / "m.safetensors"
    local.write_bytes(b"x")
    assert B.parse_spec(str(local)).kind == "local"
    assert B.parse_spec("epicrealism").kind == "registry"
    assert B.parse_spec("sd15").name == "sd15"
    assert B.parse_spec("civitai:143906").version_id == "143906"
    src = B.parse_spec("https://civitai.com/api/download/models/143906?type=Model&token=abc")
    assert (src.kind, src.version_id) == ("civitai", "143906") and "abc" not in src.spec
    assert B.parse_spec("https://civitai.com/models/25694?modelVersionId=143906").version_id == "143906"
    hf = B.parse_spec("SG161222/Realistic_Vision_V5.1_noVAE@8815050:model.safetensors")
    assert (hf.kind, hf.repo_id, hf.revision, hf.filename) == ("hf", "SG161222/Realistic_Vision_V5.1_noVAE", "8815050", "model.safetensors")
    assert B.parse_spec("emilianJR/epiCRealism").filename == ""
    assert B.parse_spec("https://example.org/a/model.safetensors").kind == "url"
    assert B.parse_spec(B.RANDOM_SPEC).kind == "random"
    with pytest.raises(BuilderError, match="civitai:<modelVersionId> takes a number"):
        B.parse_spec("civitai:epic")
    with pytest.raises(BuilderError, match=r"not a registry name \(sd15, epicrealism"):
        B.parse_spec("no_such_model")


def test_default_is_the_realistic_fine_tune_and_random_weights_get_the_random_sd15(cfg):
    assert B.base_model_spec(cfg) == "epicrealism" and W.REGISTRY["epicrealism"].family == "sd15"
    assert base_model_names(cfg) == ["epicrealism"]
    cfg.runtime.random_weights = True
    assert B.base_model_spec(cfg) == B.RANDOM_SPEC and base_model_names(cfg) == []
    cfg.paths.base_model = "sd15"
    assert base_model_names(cfg) == ["sd15"]


def test_civitai_download_takes_the_server_name_verifies_and_caches_by_hash(cfg, host, monkeypatch):
    monkeypatch.setenv(B.CIVITAI_TOKEN_ENV, TOKEN)
    host.token = TOKEN
    got = B.resolve_base_model("civitai:143906", cfg)
    data = host.files["143906"][1]
    sha = hashlib.sha256(data).hexdigest()
    assert got.path.name == NAME and got.path.read_bytes() == data
    assert got.path.parent.name == sha and got.sha256 == sha and got.family_hint == "sd15"
    # The token went to the API, in a header; the storage host (another name) never saw it.
    assert {r.authorization for r in host.seen("/api/")} == {f"Bearer {TOKEN}"}
    storage = host.seen("/storage/")
    assert storage and all(r.authorization is None for r in storage)
    assert all(TOKEN not in r.path for r in host.requests)

    before = len(host.requests)
    again = B.resolve_base_model("civitai:143906", cfg)
    assert again.path == got.path and len(host.requests) == before  # cached: no request at all
    assert B.check_base_model("civitai:143906", cfg).present == got.path


def test_civitai_download_resumes_after_the_connection_is_cut(cfg, host):
    data = host.files["143906"][1]
    host.cut_after["143906"] = len(data) // 3
    with pytest.raises(MissingWeightError, match="resumes"):
        B.resolve_base_model("civitai:143906", cfg)
    sha = hashlib.sha256(data).hexdigest()
    part = Path(cfg.runtime.weights_dir) / B.CACHE_SUBDIR / "civitai" / sha / "download.part"
    assert part.stat().st_size == len(data) // 3
    got = B.resolve_base_model("civitai:143906", cfg)
    assert got.path.read_bytes() == data and not part.exists()
    assert host.seen("/storage/")[-1].range == f"bytes={len(data) // 3}-"


def test_civitai_checksum_mismatch_is_refused_and_nothing_is_moved_into_place(cfg, host):
    host.wrong_sha.add("143906")
    with pytest.raises(MissingWeightError, match="checksum bad") as err:
        B.resolve_base_model("civitai:143906", cfg)
    assert "CIVITAI_TOKEN" in str(err.value)  # still says what to do by hand
    root = Path(cfg.runtime.weights_dir) / B.CACHE_SUBDIR / "civitai"
    assert [p for p in root.rglob("*") if p.is_file()] == []  # no file, no .part, no index


def test_civitai_401_without_a_token_says_to_set_it(cfg, host):
    host.token = TOKEN
    with pytest.raises(MissingWeightError) as err:
        B.resolve_base_model("civitai:143906", cfg)
    msg = str(err.value)
    assert "HTTP 401" in msg and "set CIVITAI_TOKEN" in msg
    assert "https://civitai.com/api/download/models/143906" in msg and "--base-model" in msg
    manual = B.civitai_manual_folder("143906", cfg.runtime.weights_dir)
    assert str(manual) in msg
    manual.mkdir(parents=True)
    (manual / "by_hand.safetensors").write_bytes(host.files["143906"][1])
    assert B.resolve_base_model("civitai:143906", cfg).path == manual / "by_hand.safetensors"


def test_the_token_is_in_no_output_log_error_or_file(cfg, host, monkeypatch, capfd):
    monkeypatch.setenv(B.CIVITAI_TOKEN_ENV, TOKEN)
    host.token = TOKEN
    url = f"{host.base}/api/download/models/143906?type=Model&token={TOKEN}"
    got = B.resolve_base_model(url, cfg)
    assert TOKEN not in got.spec and TOKEN not in repr(got)
    host.files["999"] = ("other.safetensors", model_bytes(seed=1))
    host.token = "another"  # the server now refuses ours: the error must not quote it
    errors = []
    for spec in ("civitai:999", f"{host.base}/api/download/models/999?token={TOKEN}"):
        with pytest.raises(MissingWeightError) as err:
            B.resolve_base_model(spec, cfg)
        errors += [str(err.value), repr(err.value)]
    assert "refused the API key" in errors[0]
    # A build-only run writes no base model into the kohya files until it is a local file.
    from builder.pipeline import ensure_weights

    cfg.runtime.random_weights = True
    cfg.paths.base_model = f"{host.base}/api/download/models/555?token={TOKEN}"
    ensure_weights(cfg, ("build", "caption"))
    assert cfg.paths.base_model == ""
    out = capfd.readouterr()
    assert "models/555" in out.out + out.err
    written = written_text(Path(cfg.runtime.weights_dir))
    for text in (out.out, out.err, written, *errors):
        assert TOKEN not in text


def test_hugging_face_file_through_the_hub_cache(cfg, host):
    data = model_bytes(seed=2)
    host.hf_files["someone/realistic/model.safetensors"] = data
    got = B.resolve_base_model("someone/realistic:model.safetensors", cfg)
    assert got.source == "hf" and got.path.read_bytes() == data and got.family_hint == "sd15"
    assert str(got.path).startswith(str(Path(cfg.runtime.weights_dir).parent / "hub"))
    assert host.seen("/someone/realistic/resolve/main/model.safetensors")
    before = len(host.requests)
    assert B.check_base_model("someone/realistic:model.safetensors", cfg).present == got.path
    assert len(host.requests) == before
    with pytest.raises(MissingWeightError, match=r"someone/realistic:missing.safetensors: .*by hand"):
        B.resolve_base_model("someone/realistic:missing.safetensors", cfg)


def test_hugging_face_diffusers_repo_as_a_folder(cfg, host, tmp_path):
    folder = write_random_sd15(tmp_path / "rnd", bpe_path(), seed=0, sizes=TINY)
    for f in folder.rglob("*"):
        if f.is_file():
            host.hf_files[f"someone/diffusers/{f.relative_to(folder).as_posix()}"] = f.read_bytes()
    host.hf_files["someone/diffusers/unet/diffusion_pytorch_model.fp16.bin"] = b"not wanted"
    got = B.resolve_base_model("someone/diffusers", cfg)
    assert got.source == "hf" and got.family_hint == "sd15" and (got.path / "model_index.json").is_file()
    assert (got.path / "unet" / "diffusion_pytorch_model.safetensors").read_bytes() == (
        folder / "unet" / "diffusion_pytorch_model.safetensors").read_bytes()
    assert not (got.path / "unet" / "diffusion_pytorch_model.fp16.bin").exists()  # only what the pipeline loads
    host.hf_files["someone/checkpoints/unet/config.json"] = b"{}"  # a repo of single files, not a pipeline
    with pytest.raises(BuilderError, match=r"no model_index.json .* someone/checkpoints:<file>.safetensors"):
        B.resolve_base_model("someone/checkpoints", cfg)


def test_https_url_resumes_and_checks_the_given_sha256(cfg, host):
    data = model_bytes(seed=3)
    host.hf_files["someone/big/big.safetensors"] = data
    url = f"{host.base}/someone/big/resolve/main/big.safetensors"
    host.cut_after["someone/big/big.safetensors"] = 1000
    cfg.paths.base_model_sha256 = "f" * 64
    with pytest.raises(MissingWeightError, match="resumes"):
        B.resolve_base_model(url, cfg)
    with pytest.raises(MissingWeightError, match="checksum bad"):
        B.resolve_base_model(url, cfg)
    assert not B._url_folder(url, cfg.runtime.weights_dir).joinpath("big.safetensors").exists()
    cfg.paths.base_model_sha256 = hashlib.sha256(data).hexdigest()
    got = B.resolve_base_model(url, cfg)
    assert got.path.name == "big.safetensors" and got.path.read_bytes() == data


def test_unreachable_sources_fail_fast_saying_what_to_do(cfg, monkeypatch):
    start = time.monotonic()
    with pytest.raises(MissingWeightError, match=r"cannot be fetched: cannot reach 127.0.0.1:9 .*by hand"):
        B.check_base_model("http://127.0.0.1:9/model.safetensors", cfg, connect_timeout=1)
    monkeypatch.setenv(B.CIVITAI_API_ENV, "http://127.0.0.1:9")
    with pytest.raises(MissingWeightError, match=r"set CIVITAI_TOKEN .* download https://civitai\.com/api/download/models/143906"):
        B.check_base_model("civitai:143906", cfg, connect_timeout=1)
    assert time.monotonic() - start < 5


def test_local_files_and_family_detection(tmp_path, cfg):
    pipe = build_tiny_pipeline(tokenizer_dir=tmp_path / "tok")
    single = write_single_file(pipe, tmp_path / "tiny.safetensors")
    assert B.resolve_base_model(str(single), cfg).family_hint == "sd15"
    pipe.save_pretrained(tmp_path / "folder")
    assert B.detect_family(tmp_path / "folder") == "sd15"
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(BuilderError, match=r"neither a diffusers folder nor a \.safetensors/\.ckpt file"):
        B.resolve_base_model(str(tmp_path / "notes.txt"), cfg)


def test_the_random_model_has_sd15s_real_sizes():
    """Parameter counts of SD 1.5's UNet, CLIP ViT-L/14 text model and VAE (built on the meta device)."""
    from builder.families import sd15 as R

    with torch.device("meta"):
        counts = [sum(p.numel() for p in build(SD15).parameters()) for build in (R._unet, R._text_encoder, R._vae)]
    assert counts == [859_520_964, 123_060_480, 83_653_863]


def test_the_random_model_loads_in_diffusers_with_the_weights_written(tmp_path):
    from diffusers import StableDiffusionPipeline
    from safetensors.torch import load_file

    folder = write_random_sd15(tmp_path / "rnd", bpe_path(), seed=0, sizes=TINY)
    pipe = StableDiffusionPipeline.from_pretrained(folder, safety_checker=None, dtype=torch.float32)
    te_file = load_file(str(folder / "text_encoder" / "model.safetensors"))
    assert all(k.startswith("text_model.") for k in te_file)  # the hub's (and sd-scripts') layout
    emb = pipe.text_encoder.get_input_embeddings().weight
    assert torch.equal(emb.half(), te_file["text_model.embeddings.token_embedding.weight"])
    assert pipe.unet.config.cross_attention_dim == 32 and pipe.tokenizer.model_max_length == 77
    image = pipe("a photo", num_inference_steps=1, height=64, width=64, output_type="np").images[0]
    assert image.shape == (64, 64, 3) and 0.0 <= image.min() <= image.max() <= 1.0
    again = write_random_sd15(tmp_path / "rnd2", bpe_path(), seed=0, sizes=TINY)
    same = load_file(str(again / "unet" / "diffusion_pytorch_model.safetensors"))
    first = load_file(str(folder / "unet" / "diffusion_pytorch_model.safetensors"))
    assert all(torch.equal(first[k], same[k]) for k in first)  # seeded


def test_doctor_says_where_the_base_model_will_come_from(cfg):
    from builder.cli.doctor import check_base_model_source

    c = check_base_model_source(cfg)
    assert c.status == "MISSING" and c.detail == "epicrealism (registry): not here yet, fetched by the first run that trains or samples"
    cfg.runtime.random_weights = True
    assert check_base_model_source(cfg).detail == "random-sd15 (random): not here yet, generated on first use"
