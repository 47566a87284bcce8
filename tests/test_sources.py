"""PhotoMaker V2 sources: checkpoint layout, trigger handling, the SDXL driver, the judge filter."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from builder.config import Config
from builder.errors import CheckpointError
from builder.faces.detect import make_detector
from builder.faces.identity import make_judge
from builder.io import load_image, write_image
from builder.sources import stage
from builder.sources.generate import Job, PhotoMakerSDXL, clip_pixels, start_merge_step
from builder.sources.id_photos import id_photos
from builder.sources.photomaker import PhotoMakerIDEncoder, load_id_encoder, read_checkpoint
from builder.sources.trigger import TriggerError, add_trigger, expand_trigger, text_only_prompt
from builder.swap.source import source_paths
from tests.fixtures.faces import faces_config, write_fake_pack
from tests.fixtures.photomaker import TINY_CONFIG, tiny_checkpoint, write_bin, write_safetensors
from tests.fixtures.tiny_sdxl import build_tiny_sdxl_pipeline, save_tiny_sdxl_pipeline

OFFICIAL_MODULES = {"vision_model", "visual_projection", "visual_projection_2", "qformer_perceiver", "fuse_module"}
LORA_KEY = re.compile(r"^unet\..+\.attn[12]\.processor\.to_(q|k|v|out)_lora\.(down|up)\.weight$")


@pytest.fixture
def tiny_pipe(tmp_path):
    return build_tiny_sdxl_pipeline(0, tokenizer_dir=tmp_path / "tokenizers")


def test_random_checkpoint_has_the_official_layout_and_loads_strictly(tmp_path, tiny_pipe):
    ck = tiny_checkpoint(tiny_pipe.unet)
    assert list(ck) == ["id_encoder", "lora_weights"]
    assert {k.split(".")[0] for k in ck["id_encoder"]} == OFFICIAL_MODULES
    assert "qformer_perceiver.perceiver_resampler.layers.3.1.3.weight" in ck["id_encoder"]  # depth 4, FFN Sequential
    assert ck["lora_weights"] and all(LORA_KEY.match(k) for k in ck["lora_weights"])
    for path in (write_bin(tmp_path / "photomaker-v2.bin", ck), write_safetensors(tmp_path / "photomaker-v2.safetensors", ck)):
        state = read_checkpoint(path)
        assert set(state["lora_weights"]) == set(ck["lora_weights"])
        encoder = load_id_encoder(state["id_encoder"], str(path), TINY_CONFIG)
        loaded = encoder.state_dict()
        assert set(loaded) == set(ck["id_encoder"])
        assert all(torch.equal(loaded[k], v) for k, v in ck["id_encoder"].items())
        assert encoder.vision_model.embeddings.position_ids.device.type == "cpu"


def test_a_missing_extra_or_misshapen_key_fails_naming_it(tmp_path, tiny_pipe):
    ck = tiny_checkpoint(tiny_pipe.unet)
    gone = "qformer_perceiver.perceiver_resampler.layers.1.0.to_kv.weight"
    state = dict(ck["id_encoder"])
    del state[gone]
    with pytest.raises(CheckpointError, match=rf"missing 1 key\(s\): {re.escape(gone)}"):
        load_id_encoder(state, "x.bin", TINY_CONFIG)
    state = {**ck["id_encoder"], "fuse_module.extra.weight": torch.zeros(1)}
    with pytest.raises(CheckpointError, match=r"unexpected 1 key\(s\): fuse_module\.extra\.weight"):
        load_id_encoder(state, "x.bin", TINY_CONFIG)
    state = {**ck["id_encoder"], "visual_projection_2.weight": torch.zeros(3, 3)}
    with pytest.raises(CheckpointError, match=r"wrong shape: visual_projection_2\.weight \(3, 3\)"):
        load_id_encoder(state, "x.bin", TINY_CONFIG)
    path = write_bin(tmp_path / "only-encoder.bin", {"id_encoder": ck["id_encoder"]})
    with pytest.raises(CheckpointError, match="top-level keys must be exactly id_encoder and lora_weights, got \\['id_encoder'\\]"):
        read_checkpoint(path)


def test_the_full_size_key_set_loads_strictly():
    with torch.device("meta"):
        shapes = {k: v.shape for k, v in PhotoMakerIDEncoder().state_dict().items()}
    # model_v2.py's sizes: ViT-L/14 (24 x 1024), projections to 768 and 1280, 2 x 2048 ID tokens.
    expected = {
        "vision_model.embeddings.patch_embedding.weight": (1024, 3, 14, 14),
        "vision_model.encoder.layers.23.mlp.fc1.weight": (4096, 1024),
        "visual_projection.weight": (768, 1024),
        "visual_projection_2.weight": (1280, 1024),
        "qformer_perceiver.token_proj.0.weight": (2048, 512),
        "qformer_perceiver.token_proj.2.weight": (4096, 2048),
        "qformer_perceiver.perceiver_resampler.proj_in.weight": (2048, 1024),
        "qformer_perceiver.perceiver_resampler.layers.3.0.to_kv.weight": (4096, 2048),
        "fuse_module.mlp1.fc1.weight": (2048, 4096),
    }
    assert {k: tuple(shapes[k]) for k in expected} == expected
    assert len(shapes) == 463 and sum(s.numel() for s in shapes.values()) == 543_395_840
    start = time.perf_counter()
    # zeros are allocated lazily and taken as they are (assign): no 2 GB touched.
    encoder = load_id_encoder({k: torch.zeros(s, dtype=torch.bfloat16) for k, s in shapes.items()}, "full")
    assert time.perf_counter() - start < 20
    assert encoder.config.num_hidden_layers == 24 and encoder.cross_attention_dim == 2048


def test_trigger_repeats_the_class_word_on_the_real_tokenizers(tiny_pipe):
    tokenizers = [tiny_pipe.tokenizer, tiny_pipe.tokenizer_2]
    add_trigger(tokenizers)
    prompt = "a photo of a woman img, smiling"
    expanded = []
    for tok in tokenizers:
        assert tok.tokenize(prompt)[4:6] == ["woman</w>", "img"]  # one special token, not split
        e = expand_trigger(prompt, tok, "img", num_id_images=2)
        woman = tok.convert_tokens_to_ids("woman</w>")
        assert len(e.input_ids) == 77
        # <start> a photo of a woman x4 (2 photos x 2 ID tokens) , smiling <end> then padding
        assert e.input_ids[:12] == [49406, 320, 1125, 539, 320, woman, woman, woman, woman, 267, 9200, 49407]
        assert [i for i, m in enumerate(e.class_tokens_mask) if m] == [5, 6, 7, 8]
        assert tok.convert_tokens_to_ids("img") not in e.input_ids
        expanded.append(e)
    assert expanded[0].input_ids[12] == 49407 and expanded[1].input_ids[12] == 0  # bigG pads with "!"
    assert expanded[0].class_tokens_mask == expanded[1].class_tokens_mask
    one = expand_trigger(prompt, tokenizers[0], "img", num_id_images=1)
    assert [i for i, m in enumerate(one.class_tokens_mask) if m] == [5, 6]
    assert text_only_prompt(prompt, tokenizers[0], "img") == "a photo of a woman , smiling"
    for bad, why in (("a photo of a woman", "found no"), ("a woman img and a man img", "found 2"), ("img woman", "must follow")):
        with pytest.raises(ValueError, match=why):
            expand_trigger(bad, tokenizers[0], "img", 1)
    assert issubclass(TriggerError, ValueError)


def test_the_id_enters_the_prompt_after_start_merge_step(tiny_pipe):
    maker = PhotoMakerSDXL.load(tiny_pipe, tiny_checkpoint(tiny_pipe.unet), "random", cfg=TINY_CONFIG)
    assert "photomaker" in tiny_pipe.get_list_adapters()["unet"]
    seen = []
    hook = tiny_pipe.unet.register_forward_pre_hook(
        lambda m, args, kwargs: seen.append((kwargs["encoder_hidden_states"].clone(), kwargs["added_cond_kwargs"]["text_embeds"].clone())),
        with_kwargs=True,
    )
    rng = np.random.default_rng(0)
    photos = [rng.integers(0, 255, (90, 70, 3), dtype=np.uint8)]
    pixels, ids = clip_pixels(photos), torch.randn(1, 512) * 20
    assert pixels.shape == (1, 3, 224, 224)
    job = Job("portrait of a woman img", "blurry", seed=3, steps=4, guidance=5.0, start_merge_step=1, width=64, height=64)
    image = maker.generate(job, pixels, ids)
    hook.remove()
    assert image.shape == (64, 64, 3) and image.dtype == np.uint8
    text, negative, pooled_text, _ = tiny_pipe.encode_prompt(
        prompt="portrait of a woman", device=tiny_pipe.device, do_classifier_free_guidance=True, negative_prompt="blurry"
    )
    with_slots, pooled_id, mask = maker.encode_with_id_slots(job.prompt, 1)
    with torch.inference_mode():
        with_id = maker.encoder(pixels[None], with_slots, mask, ids[None])
    assert len(seen) == 4 and all(h.shape == (2, 77, 80) for h, _ in seen)
    for step, (hidden, pooled) in enumerate(seen):
        assert torch.equal(hidden[0], negative[0])  # the unconditional half never changes
        cond, cond_pooled = (text, pooled_text) if step <= job.start_merge_step else (with_id, pooled_id)
        assert torch.allclose(hidden[1], cond[0], atol=1e-5) and torch.allclose(pooled[1], cond_pooled[0], atol=1e-5)
    # Only the class-word slots differ between the two conditionings' ID part.
    assert not torch.allclose(with_id[0][mask[0]], with_slots[0][mask[0]]) and torch.equal(with_id[0][~mask[0]], with_slots[0][~mask[0]])
    assert start_merge_step(20, 50) == 10 and start_merge_step(50, 100) == 30


def test_an_empty_negative_prompt_is_encoded_as_upstream_does(tiny_pipe):
    """PhotoMaker's pipeline encodes "" (only a None negative gets SDXL's zero embeddings)."""
    maker = PhotoMakerSDXL.load(tiny_pipe, tiny_checkpoint(tiny_pipe.unet), "random", cfg=TINY_CONFIG)
    seen = []
    hook = tiny_pipe.unet.register_forward_pre_hook(
        lambda m, args, kwargs: seen.append(kwargs["encoder_hidden_states"][0].clone()), with_kwargs=True
    )
    rng = np.random.default_rng(0)
    pixels, ids = clip_pixels([rng.integers(0, 255, (90, 70, 3), dtype=np.uint8)]), torch.randn(1, 512) * 20
    job = Job("portrait of a woman img", "", seed=3, steps=2, guidance=5.0, start_merge_step=1, width=64, height=64)
    maker.generate(job, pixels, ids)
    hook.remove()
    _, empty, _, _ = tiny_pipe.encode_prompt(
        prompt="portrait of a woman", device=tiny_pipe.device, do_classifier_free_guidance=True, negative_prompt=""
    )
    assert empty.abs().max() > 0.1  # "" encodes to something, not to zeros
    assert len(seen) == 2 and all(torch.equal(h, empty[0]) for h in seen)


def _cfg(tmp_path: Path, source: Path) -> Config:
    cfg = faces_config(detector="dlib", judge="dlib")
    cfg.paths.source = [str(source)]
    cfg.runtime.weights_dir = str(tmp_path / "weights")
    return cfg


def test_the_judge_drops_a_photo_without_a_face_and_one_with_two(tmp_path, source_photo):
    cfg = _cfg(tmp_path, source_photo)
    out = tmp_path / "faces"
    (out / stage.DROPPED).mkdir(parents=True)
    face = load_image(source_photo)
    write_image(out / "001_a.png", face)
    write_image(out / "002_b.png", np.full((256, 256, 3), 128, np.uint8))
    write_image(out / "003_c.png", np.concatenate([face, face], axis=1))
    job = Job("p", "", 1, 1, 5.0, 0, 64, 64)
    planned = [(job, "001_a.png"), (job, "002_b.png"), (job, "003_c.png")]
    result = stage.SourcesResult(out=out)
    stage._judge_all(cfg, make_detector(cfg), make_judge(cfg), [str(source_photo)], planned, result)
    stage._write_outputs(cfg, result)
    records = [json.loads(line) for line in (out / "sources.jsonl").read_text().splitlines()]
    assert [(r["file"], r["status"], r["reason"], r["faces"]) for r in records] == [
        ("001_a.png", "kept", "", 1),
        ("dropped/002_b.png", "dropped", "no face", 0),
        ("dropped/003_c.png", "dropped", "2 faces", 2),
    ]
    assert records[0]["similarity"] > 0.99 and records[0]["similarity"] >= result.threshold == 0.90
    assert (out / "dropped" / "002_b.png").is_file() and not (out / "002_b.png").exists()
    assert load_image(out / stage.KEPT_SHEET).shape[1] == 256 and (out / stage.DROPPED_SHEET).is_file()
    report = json.loads((out / stage.REPORT).read_text())
    assert (report["kept"], report["dropped"], report["judge"]) == (1, 2, "dlib")
    # build/run --source faces/ read the folder through its records: the kept photo only.
    assert source_paths([str(out)]) == [out / "001_a.png"]


def test_id_photos_use_buffalo_l_raw_embeddings(tmp_path, source_photo):
    cfg = faces_config(detector="insightface", judge="insightface")
    cfg.runtime.weights_dir = str(tmp_path)
    folder = write_fake_pack(tmp_path, "buffalo_l", seed=2)
    blank = tmp_path / "blank.png"
    cv2.imwrite(str(blank), np.zeros((8, 8, 3), np.uint8))
    ids = id_photos([source_photo, blank], cfg)
    assert ids.used == [str(source_photo)] and ids.failed[0][0] == str(blank)
    assert ids.embeds[0].shape == (512,) and abs(float(np.linalg.norm(ids.embeds[0])) - 1) > 1e-3  # not normalised
    assert ids.images_rgb[0].shape == load_image(source_photo).shape
    assert (folder / "w600k_r50.onnx").is_file() and len(ids.digest) == 64


def test_jobs_come_from_the_config_prompts_and_seeds():
    cfg = Config()
    cfg.character.class_word = "man"
    cfg.sources.prompts = ["a photo of a {class_word} img", "a {class_word} img, smiling"]
    cfg.sources.seeds = [5, 9]
    got = stage.jobs(cfg, 5)
    assert [(j.prompt, j.seed) for j in got] == [
        ("a photo of a man img", 5), ("a man img, smiling", 9),
        ("a photo of a man img", 1005), ("a man img, smiling", 1009), ("a photo of a man img", 2005),
    ]
    assert got[0].start_merge_step == 10 and (got[0].steps, got[0].guidance) == (50, 5.0)
    cfg.sources.seeds = [1]
    with pytest.raises(Exception, match="1 seeds for 2 prompts"):
        stage.jobs(cfg, 1)


def test_run_generate_sources_adds_the_stage_first():
    import launch
    from builder.cli.common import build_config
    from builder.pipeline import stages_for

    args = launch.make_parser().parse_args(["run", "--generate-sources", "4", "--out", "x"])
    assert build_config(args).sources.generate is False  # the run command sets it
    setattr(args, "sources.generate", True)
    cfg = build_config(args)
    assert (cfg.sources.n, cfg.sources.generate) == (4, True)
    assert stages_for(cfg, "build") == ("sources", "build")
    assert stages_for(Config(), "caption") == ("build", "caption")


@pytest.mark.slow
def test_sources_end_to_end_on_a_tiny_sdxl_writes_n_images_and_resumes(tmp_path, source_photo):
    cfg = _cfg(tmp_path, source_photo)
    cfg.runtime.random_weights = True
    cfg.sources.base_model = str(save_tiny_sdxl_pipeline(tmp_path / "tiny-sdxl"))
    cfg.sources.steps, cfg.sources.width, cfg.sources.height = 3, 64, 64
    out = tmp_path / "faces"
    result = stage.make_sources(cfg, out, n=3)
    assert result.generated == 3 and len(result.records) == 3
    files = sorted(p.name for p in out.glob("*.png") if p.name[0].isdigit())
    assert len(files) == 3 and all(re.fullmatch(r"00[123]_[0-9a-f]{12}\.png", f) for f in files)
    images = [load_image(out / f) for f in files]
    assert all(im.shape == (64, 64, 3) for im in images) and not np.array_equal(images[0], images[1])
    records = [json.loads(line) for line in (out / "sources.jsonl").read_text().splitlines()]
    assert [r["seed"] for r in records] == [1, 2, 3] and all(r["status"] == "kept" for r in records)
    assert all("woman img" in r["prompt"] for r in records)
    again = stage.make_sources(cfg, out, n=3)
    assert again.generated == 0 and [r["file"] for r in again.records] == [r["file"] for r in records]
    assert [load_image(out / f).tobytes() for f in files] == [im.tobytes() for im in images]


@pytest.mark.slow
def test_run_generate_sources_then_build_averages_the_kept_set(tmp_path, data_dir, source_photo):
    import launch

    donors = tmp_path / "donors"
    donors.mkdir()
    (donors / "d.jpeg").write_bytes((data_dir / "donors" / "TaylorSwift14.jpeg").read_bytes())
    sdxl = save_tiny_sdxl_pipeline(tmp_path / "tiny-sdxl")
    out = tmp_path / "run"
    argv = [
        "run", "--generate-sources", "2", "--until", "build", "--source", str(source_photo), "--donors", str(donors),
        "--out", str(out), "--random-weights", "--detector", "dlib", "--judge", "dlib", "--device", "cpu",
        "--caption-backend", "none", "--set", f"sources.base_model={sdxl}", "--set", "sources.steps=2",
        "--set", "sources.width=64", "--set", "sources.height=64", "--set", "swap.restorer=none", "--set", "swap.mouth=false",
        "--set", "swap.paste_mask=box",
    ]  # fmt: skip
    assert launch.main(argv) == 0
    records = [json.loads(line) for line in (out / "sources" / "sources.jsonl").read_text().splitlines()]
    assert len(records) == 2 and all(r["status"] == "kept" for r in records)
    report = json.loads((out / "source_identity.json").read_text())
    # build saw the given photo and the kept generated ones; random noise holds no face, so
    # the generated ones are listed as failed sources rather than silently left out.
    named = report["used"] + [f[0] for f in report["failed"]]
    assert str(source_photo) in report["used"]
    assert sorted(Path(p).name for p in named if "sources" in p) == sorted(r["file"] for r in records)


def test_an_sd15_base_is_refused(tmp_path):
    from builder.errors import BuilderError
    from tests.fixtures.tiny_sd import save_tiny_pipeline

    cfg = Config()
    cfg.sources.base_model = str(save_tiny_pipeline(tmp_path / "tiny-sd15"))
    with pytest.raises(BuilderError, match=r"is an SD 1\.5 model; PhotoMaker V2 needs an SDXL base"):
        stage.base_model_path(cfg)
    cfg.sources.base_model = str(save_tiny_sdxl_pipeline(tmp_path / "tiny-sdxl"))
    assert stage.base_model_path(cfg) == tmp_path / "tiny-sdxl"
