"""The sample stage on a tiny random-weight SD 1.5-architecture pipeline and kohya-format LoRAs."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import cv2
import numpy as np
import pytest
import torch
from diffusers import StableDiffusionPipeline

import launch
from builder.config import Config, QualityConfig
from builder.errors import BuilderError
from builder.faces.identity import JUDGE_THRESHOLDS
from builder.quality.decide import identity_thresholds
from builder.sample import run_samples
from builder.sample.epochs import find_epochs
from builder.sample.pipeline import (
    check_lora,
    load_pipeline,
    lora_applied,
    render,
    resolve_base_model,
)
from builder.sample.prompts import parse_prompt_line, read_prompt_file
from builder.sample.score import identity_threshold
from tests.fixtures.threads import torch_threads
from tests.fixtures.tiny_sd import (
    build_tiny_pipeline,
    kohya_lora_state_dict,
    save_tiny_pipeline,
    write_kohya_lora,
    write_single_file,
)

PROMPTS = (
    "# two prompts, tiny renders\n"
    "ohwx woman, portrait photo --n blurry, lowres --w 64 --h 64 --d 7 --l 5.5 --s 2\n"
    "ohwx woman, outdoors --w 64 --h 64 --s 1\n"
)


@pytest.fixture(autouse=True, scope="module")
def one_thread() -> Iterator[None]:
    with torch_threads(1):
        yield


@pytest.fixture(scope="session")
def tiny_sd(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_pipeline(tmp_path_factory.mktemp("tiny") / "sd15-tiny")


@pytest.fixture(scope="session")
def pipe(tiny_sd: Path) -> StableDiffusionPipeline:
    cfg = Config()
    cfg.paths.base_model = str(tiny_sd)
    return load_pipeline(resolve_base_model(cfg), cfg, torch.device("cpu"))


@pytest.fixture()
def cfg(tiny_sd: Path, source_photo: Path) -> Config:
    c = Config()
    c.paths.base_model = str(tiny_sd)
    c.paths.source = [str(source_photo)]
    c.runtime.device = "cpu"
    c.faces.detector = "dlib"
    c.faces.judge = "dlib"
    c.sample.seeds = [1, 2]
    c.sample.adherence = False  # a scorer is injected where a test needs one
    return c


def _render(pipe: StableDiffusionPipeline, cfg: Config, seed: int = 3) -> np.ndarray:
    prompt = parse_prompt_line("ohwx woman --w 64 --h 64 --s 2", cfg)
    return render(pipe, prompt, seed, dict(pipe.scheduler.config)).astype(np.int16)


# --- prompts and epochs ---------------------------------------------------------------------


def test_prompt_line_options_override_config_and_defaults_fill_the_rest() -> None:
    cfg = Config()
    cfg.sample.seeds = [4, 5]
    p = parse_prompt_line("a photo of ohwx woman, smiling --n ugly, blurry --w 640 --h 768 --d 42 --l 6.5 --s 5000 --ss k_euler_a", cfg)
    assert (p.text, p.negative, p.width, p.height, p.seeds, p.guidance, p.steps, p.sampler) == (
        "a photo of ohwx woman, smiling", "ugly, blurry", 640, 768, (42,), 6.5, 1000, "euler_a"
    )
    q = parse_prompt_line("ohwx woman --cn control.png", cfg)  # unknown option ignored, as sd-scripts does
    assert (q.text, q.width, q.steps, q.guidance, q.seeds, q.sampler) == ("ohwx woman", 512, 25, 7.0, (4, 5), "ddim")


def test_prompt_file_errors_name_the_line(tmp_path: Path) -> None:
    path = tmp_path / "p.txt"
    path.write_text("# header\nfine prompt\nbad one --w 100\n", encoding="utf-8")
    with pytest.raises(BuilderError, match=r"p\.txt line 3: width 100 must be a positive multiple of 8"):
        read_prompt_file(path, Config())
    path.write_text("x --ss karras_magic\n", encoding="utf-8")
    with pytest.raises(BuilderError, match="sampler 'karras_magic'"):
        read_prompt_file(path, Config())


def test_epochs_found_and_ordered(tmp_path: Path) -> None:
    model = tmp_path / "model"
    model.mkdir()
    for name in ("ohwx.safetensors", "ohwx-000010.safetensors", "ohwx-000002.safetensors",
                 "ohwx-step00000300.safetensors", "notes.txt", "base.safetensors"):
        (model / name).write_bytes(b"x")
    (model / "ohwx-state").mkdir()
    labels = [(e.label, e.kind, e.number) for e in find_epochs(model)]
    assert labels == [
        ("ohwx-000002", "epoch", 2),
        ("ohwx-000010", "epoch", 10),
        ("ohwx-step00000300", "step", 300),
        ("base-lora", "final", None),  # never shares the control row's folder
        ("ohwx", "final", None),
    ]
    with pytest.raises(BuilderError, match="no LoRA files"):
        find_epochs(tmp_path)


# --- LoRA loading ---------------------------------------------------------------------------


def test_kohya_lora_changes_output_and_unloads_cleanly(pipe: StableDiffusionPipeline, tmp_path: Path) -> None:
    cfg = Config()
    control = _render(pipe, cfg)
    lora = write_kohya_lora(pipe.unet, pipe.text_encoder, tmp_path / "ohwx-000001.safetensors", rank=4, seed=1)
    zero = write_kohya_lora(pipe.unet, pipe.text_encoder, tmp_path / "zero.safetensors", rank=4, up_scale=0.0)
    assert check_lora(lora, pipe) == 60  # 48 UNet + 12 text-encoder modules
    with lora_applied(pipe, lora):
        with_lora = _render(pipe, cfg)
    with lora_applied(pipe, zero):
        with_zero = _render(pipe, cfg)
    after = _render(pipe, cfg)
    assert np.abs(with_lora - control).mean() > 2.0
    assert np.array_equal(with_zero, control)
    assert np.array_equal(after, control)  # epochs never stack: the base weights are back
    assert not any("lora" in n for n, _ in pipe.unet.named_modules())


def test_kohya_alpha_scaling_and_text_encoder_keys(pipe: StableDiffusionPipeline, tmp_path: Path) -> None:
    """Fused weights equal W + alpha/rank * up @ down, in the UNet and in the text encoder."""
    path = write_kohya_lora(pipe.unet, pipe.text_encoder, tmp_path / "l.safetensors", rank=4, alpha=2.0, seed=5)
    sd = kohya_lora_state_dict(pipe.unet, pipe.text_encoder, rank=4, alpha=2.0, seed=5)
    unet_mod = pipe.unet.down_blocks[0].attentions[0].transformer_blocks[0].attn2.to_k
    te_mod = pipe.text_encoder.encoder.layers[1].mlp.fc1
    w_unet, w_te = unet_mod.weight.detach().clone(), te_mod.weight.detach().clone()
    pipe.load_lora_weights(str(path), adapter_name="check")
    try:
        pipe.fuse_lora()
        for name, before, mod in (
            ("lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k", w_unet, unet_mod),
            ("lora_te_text_model_encoder_layers_1_mlp_fc1", w_te, te_mod),
        ):
            up = sd[f"{name}.lora_up.weight"].half().float()
            down = sd[f"{name}.lora_down.weight"].half().float()
            fused = getattr(mod, "base_layer", mod).weight.detach()
            torch.testing.assert_close(fused - before, 0.5 * up @ down, atol=1e-6, rtol=1e-4)
        pipe.unfuse_lora()
    finally:
        pipe.unload_lora_weights()
    torch.testing.assert_close(unet_mod.weight, w_unet, atol=1e-6, rtol=0)


def test_lora_for_another_model_is_refused(pipe: StableDiffusionPipeline, tmp_path: Path) -> None:
    from safetensors.torch import save_file

    nothing = tmp_path / "sdxl.safetensors"
    save_file({"lora_unet_input_blocks_4_1_proj_in.lora_down.weight": torch.zeros(4, 8),
               "lora_unet_input_blocks_4_1_proj_in.lora_up.weight": torch.zeros(8, 4)}, str(nothing))
    with pytest.raises(BuilderError, match=r"sdxl\.safetensors does not match this base model.*nothing found"):
        check_lora(nothing, pipe)

    other = build_tiny_pipeline(seed=1, tokenizer_dir=tmp_path / "tok")
    wider = type(other.unet).from_config({**dict(other.unet.config), "cross_attention_dim": 48})
    misfit = write_kohya_lora(wider, None, tmp_path / "wide.safetensors")
    with pytest.raises(BuilderError, match=r"wide\.safetensors has weights that do not fit.*attn2_to_k \(file \(4, 48\)"):
        check_lora(misfit, pipe)

    foreign = tmp_path / "peft.safetensors"
    save_file({"unet.down_blocks.0.attentions.0.proj_in.lora_A.weight": torch.zeros(4, 32)}, str(foreign))
    with pytest.raises(BuilderError, match=r"peft\.safetensors is not in kohya sd-scripts' key format"):
        check_lora(foreign, pipe)

    with pytest.raises(BuilderError, match=r"LoRA file .*missing\.safetensors does not exist"):
        check_lora(tmp_path / "missing.safetensors", pipe)


def test_single_file_checkpoint_loads_with_a_local_config(pipe: StableDiffusionPipeline, tiny_sd: Path, tmp_path: Path) -> None:
    """The README's main path: one original-layout .safetensors, configs from a local folder (offline)."""
    ckpt = write_single_file(pipe, tmp_path / "tiny-v1-5.safetensors")
    cfg = Config()
    cfg.paths.base_model = str(ckpt)
    cfg.sample.model_config = str(tiny_sd)
    single = load_pipeline(resolve_base_model(cfg), cfg, torch.device("cpu"))
    for name in ("unet", "vae", "text_encoder"):
        ours, theirs = getattr(pipe, name).state_dict(), getattr(single, name).state_dict()
        assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)
    assert np.array_equal(_render(single, cfg), _render(pipe, cfg))
    cfg.sample.model_config = str(tmp_path / "no-such-config")
    with pytest.raises(BuilderError, match=r"model_config .*no-such-config is neither a folder"):
        load_pipeline(ckpt, cfg, torch.device("cpu"))


def test_base_model_errors_say_how_to_set_it(tmp_path: Path) -> None:
    cfg = Config()
    with pytest.raises(BuilderError, match=r"no base model configured: pass --base-model .* \[paths\] base_model"):
        resolve_base_model(cfg)
    cfg.paths.base_model = str(tmp_path / "v1-5-pruned-emaonly.safetensors")
    with pytest.raises(BuilderError, match=r"v1-5-pruned-emaonly\.safetensors does not exist"):
        resolve_base_model(cfg)
    cfg.paths.base_model = str(tmp_path)
    with pytest.raises(BuilderError, match=r"is not a diffusers pipeline \(no model_index\.json\)"):
        resolve_base_model(cfg)


# --- the whole stage ------------------------------------------------------------------------


def _run_folder(tmp_path: Path, pipe: StableDiffusionPipeline) -> Path:
    out = tmp_path / "run"
    (out / "model").mkdir(parents=True)
    (out / "sample_prompts.txt").write_text(PROMPTS, encoding="utf-8")
    write_kohya_lora(pipe.unet, pipe.text_encoder, out / "model" / "ohwx-000002.safetensors", seed=2)
    write_kohya_lora(pipe.unet, pipe.text_encoder, out / "model" / "ohwx-000001.safetensors", seed=1)
    return out


def test_sample_renders_grid_and_report_and_resumes(
    cfg: Config, pipe: StableDiffusionPipeline, tmp_path: Path
) -> None:
    out = _run_folder(tmp_path, pipe)
    result = run_samples(cfg, out)
    assert result.rendered == 9  # 3 rows x (prompt 1: seed 7; prompt 2: seeds 1, 2)

    report = json.loads((out / "samples" / "report.json").read_text())
    assert report["complete"] and report["scored"]
    assert [e["label"] for e in report["epochs"]] == ["base", "ohwx-000001", "ohwx-000002"]
    assert [(i["prompt_index"], i["seed"]) for i in report["images"][:3]] == [(0, 7), (1, 1), (1, 2)]
    first = report["images"][0]
    assert (first["negative"], first["guidance"], first["steps"], first["width"]) == ("blurry, lowres", 5.5, 2, 64)
    # Random-weight renders hold no faces: the scores say so instead of inventing similarity.
    assert all(i["face_found"] is False and i["similarity"] is None for i in report["images"])
    assert all(e["share_with_face"] == 0.0 and e["mean_similarity"] is None for e in report["epochs"])
    assert report["best_epoch"] is None

    images = {i["file"]: cv2.imread(str(out / "samples" / i["file"])) for i in report["images"]}
    assert all(im is not None and im.shape == (64, 64, 3) for im in images.values())
    assert not np.array_equal(images["base/p01_s7.png"], images["ohwx-000001/p01_s7.png"])
    assert not np.array_equal(images["ohwx-000001/p01_s7.png"], images["ohwx-000002/p01_s7.png"])
    grid = cv2.imread(str(out / "samples" / "grid.png"))
    assert grid.shape == (44 + 3 * 260 + 4, 230 + 3 * 260 + 4, 3)

    again = run_samples(cfg, out)
    assert again.rendered == 0
    lora = out / "model" / "ohwx-000002.safetensors"
    st = lora.stat()
    os.utime(lora, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # a re-saved epoch is rendered again
    assert run_samples(cfg, out).rendered == 3
    redone = json.loads((out / "samples" / "report.json").read_text())["images"]
    changed = [a["file"] for a, b in zip(redone, report["images"], strict=True) if a["key"] != b["key"]]
    assert changed == ["ohwx-000002/p01_s7.png", "ohwx-000002/p02_s1.png", "ohwx-000002/p02_s2.png"]
    assert np.array_equal(cv2.imread(str(out / "samples" / changed[0])), images[changed[0]])  # same seed, same pixels


def _err(capsys: pytest.CaptureFixture[str]) -> str:
    """stderr with rich's line wrapping undone, so a long path stays one token."""
    return "".join(capsys.readouterr().err.splitlines())


def test_cli_sample_missing_lora_and_base_model(
    cfg: Config, pipe: StableDiffusionPipeline, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = _run_folder(tmp_path, pipe)
    (out / "sample_prompts.txt").write_text("ohwx woman --w 64 --h 64 --d 3 --s 1\n", encoding="utf-8")
    common = ["--base-model", cfg.paths.base_model, "--no-score", "--device", "cpu"]
    assert launch.main(["sample", str(out), *common, "--lora", str(out / "model" / "gone.safetensors")]) == 2
    assert re.search(r"LoRA file \S*gone\.safetensors does not exist", _err(capsys))
    assert launch.main(["sample", str(out), "--base-model", str(tmp_path / "nope.ckpt"), "--no-score"]) == 2
    assert re.search(r"base model \S*nope\.ckpt does not exist", _err(capsys))
    lora = out / "model" / "ohwx-000001.safetensors"
    assert launch.main(["sample", str(out), *common, "--lora", str(lora)]) == 0
    report = json.loads((out / "samples" / "report.json").read_text())
    assert [e["label"] for e in report["epochs"]] == ["base", "ohwx-000001"]
    assert report["scored"] is False and all(i["face_found"] is None for i in report["images"])


def test_scores_and_best_epoch_on_real_photos(
    cfg: Config, pipe: StableDiffusionPipeline, tmp_path: Path, source_photo: Path, donor_photos: list[Path]
) -> None:
    """Put real photos where the renders were (a resumed run keeps them) to check the scoring end to end.

    dlib's judge puts different people near cosine 0.82 (its 0.6 distance rule): the threshold
    left unset is dlib's calibrated 0.90, which the donor (somebody else) stays below.
    """
    from builder.io import load_image, write_image

    assert cfg.sample.identity_threshold is None
    out = _run_folder(tmp_path, pipe)
    run_samples(cfg, out)
    source = load_image(source_photo)
    donors = [load_image(p) for p in donor_photos[:3]]
    placed = {
        "base": donors,  # the control: somebody else
        "ohwx-000001": [donors[0], source, np.zeros_like(source)],  # one hit, one miss, one without a face
        "ohwx-000002": [source, cv2.flip(source, 1), cv2.resize(source, None, fx=0.5, fy=0.5)],
    }
    for label, images in placed.items():
        for name, image in zip(("p01_s7", "p02_s1", "p02_s2"), images, strict=True):
            write_image(out / "samples" / label / f"{name}.png", image)

    result = run_samples(cfg, out)
    assert result.rendered == 0 and result.best_epoch == "ohwx-000002"
    report = json.loads((out / "samples" / "report.json").read_text())
    by_label = {e["label"]: e for e in report["epochs"]}
    assert by_label["ohwx-000002"]["mean_similarity"] > 0.98 and by_label["ohwx-000002"]["share_above_threshold"] == 1
    assert 0.7 < by_label["base"]["mean_similarity"] < 0.88 and by_label["base"]["share_above_threshold"] == 0
    mid = by_label["ohwx-000001"]
    assert (mid["faces"], mid["share_with_face"], mid["share_above_threshold"]) == (2, pytest.approx(2 / 3), pytest.approx(1 / 3))
    sims = {i["file"]: i["similarity"] for i in report["images"]}
    assert sims["ohwx-000001/p02_s2.png"] is None and sims["ohwx-000002/p01_s7.png"] == pytest.approx(1.0, abs=1e-3)
    assert report["best_epoch"] == "ohwx-000002"
    grid = cv2.imread(str(result.grid))
    assert grid.shape == (44 + 3 * 260 + 4, 230 + 3 * 260 + 4, 3)
    # The best row is framed in green: the frame's top edge runs just above its first tile.
    row_top = 44 + 2 * 260 - 2
    assert (grid[row_top, 5:900] == (120, 220, 80)).all()


def test_best_epoch_prefers_mean_then_share_above() -> None:
    from builder.sample.score import FaceScore, summarize
    from builder.sample.verdict import choose_best

    a = summarize("a", [FaceScore(True, 0.5), FaceScore(True, 0.3)], threshold=0.45)
    b = summarize("b", [FaceScore(True, 0.4), FaceScore(True, 0.4)], threshold=0.45)
    c = summarize("c", [FaceScore(False, None)], threshold=0.45)
    assert (a.mean_similarity, a.share_above_threshold) == (pytest.approx(0.4), 0.5)
    # same mean; a has more images above the threshold (nothing measured leaks or is overfit)
    assert choose_best([b, a, c], None, 0.25, 0.03).best == "a"
    assert choose_best([c], None, 0.25, 0.03).best is None


def test_identity_threshold_follows_the_report_judge_unless_configured() -> None:
    cfg = Config()
    cfg.faces.judge = "insightface"  # the selection judge does not set the samples' scale
    assert identity_threshold(cfg) == JUDGE_THRESHOLDS[cfg.faces.report_judge].same_person == 0.90
    # The quality filter's default minimum for the same judge is the same number: one scale per judge.
    assert identity_thresholds(QualityConfig(), cfg.faces.report_judge)[0] == identity_threshold(cfg)
    cfg.sample.identity_threshold = 0.5
    assert identity_threshold(cfg) == 0.5

class BackdropAdherence:
    """A scorer whose answer is known: a sample shows its prompt when its backdrop (the outer
    tenth of the image) has the colour the prompt names; 1 for that colour, 0.5 for grey."""

    name = "backdrop colour"
    COLOURS: ClassVar[dict[str, tuple[int, int, int]]] = {"red": (0, 0, 255), "blue": (255, 0, 0)}  # BGR

    def score(self, image_bgr: np.ndarray, text: str) -> float:
        target = next(np.array(c, np.float64) for word, c in self.COLOURS.items() if word in text)
        m = max(2, min(image_bgr.shape[:2]) // 10)
        ring = np.concatenate([part.reshape(-1, 3) for part in (
            image_bgr[:m], image_bgr[-m:], image_bgr[:, :m], image_bgr[:, -m:])])
        return float(1 - np.linalg.norm(ring.mean(axis=0) - target) / (255 * np.sqrt(3)))


def _on_backdrop(image: np.ndarray, colour: tuple[int, int, int]) -> np.ndarray:
    h, w = image.shape[:2]
    canvas = np.full((h * 3 // 2, w * 3 // 2, 3), colour, np.uint8)
    canvas[h // 4 : h // 4 + h, w // 4 : w // 4 + w] = image
    return canvas


@pytest.mark.slow
def test_best_epoch_skips_the_overfit_and_the_leaking_epoch(
    cfg: Config, pipe: StableDiffusionPipeline, tmp_path: Path, source_photo: Path, donor_photos: list[Path],
    data_dir: Path,
) -> None:
    """Known answers end to end: an epoch whose samples are the source photo on a grey backdrop
    (ignoring "red/blue backdrop") is overfit, one whose samples are donor photos leaks, and the
    best is the one that shows the source on the backdrops asked for."""
    from builder.io import load_image, write_image

    out = _run_folder(tmp_path, pipe)
    write_kohya_lora(pipe.unet, pipe.text_encoder, out / "model" / "ohwx-000003.safetensors", seed=3)
    (out / "sample_prompts.txt").write_text(
        "ohwx woman, red backdrop --w 64 --h 64 --d 7 --s 1\nohwx woman, blue backdrop --w 64 --h 64 --s 1\n",
        encoding="utf-8",
    )
    cfg.paths.donors = str(data_dir / "donors")
    run_samples(cfg, out, adherence=BackdropAdherence())
    red, blue, grey = (0, 0, 255), (255, 0, 0), (128, 128, 128)
    source = load_image(source_photo)
    donors = [load_image(p) for p in donor_photos[:6]]
    placed = {
        "base": [(donors[0], red), (donors[1], blue), (donors[2], blue)],
        "ohwx-000001": [(source, red), (cv2.flip(source, 1), blue), (cv2.resize(source, None, fx=0.8, fy=0.8), blue)],
        "ohwx-000002": [(source, grey)] * 3,  # the face, and nothing of the prompt
        "ohwx-000003": [(donors[3], red), (donors[4], blue), (donors[5], blue)],
    }
    for label, images in placed.items():
        for name, (image, colour) in zip(("p01_s7", "p02_s1", "p02_s2"), images, strict=True):
            write_image(out / "samples" / label / f"{name}.png", _on_backdrop(image, colour))

    result = run_samples(cfg, out, adherence=BackdropAdherence())
    assert result.rendered == 0 and result.best_epoch == "ohwx-000001"
    report = json.loads((out / "samples" / "report.json").read_text())
    by = {e["label"]: e for e in report["epochs"]}
    assert by["ohwx-000002"]["mean_similarity"] > by["ohwx-000001"]["mean_similarity"]  # best identity, yet overfit
    assert by["ohwx-000002"]["verdict"] == {"leaking": False, "overfit": True, "qualifies": False,
                                            "miss": pytest.approx((1 - 0.03 - by["ohwx-000002"]["mean_adherence"]) / 0.03, abs=1e-4)}
    assert by["ohwx-000002"]["mean_adherence"] == pytest.approx(0.5, abs=0.01)
    assert by["base"]["mean_adherence"] == pytest.approx(1.0) == by["ohwx-000001"]["mean_adherence"]
    assert by["ohwx-000003"]["share_closer_to_donor"] == 1.0 and by["ohwx-000003"]["verdict"]["leaking"]
    assert by["ohwx-000001"]["share_closer_to_donor"] == 0.0 and by["ohwx-000001"]["verdict"]["qualifies"]
    rule = report["best_epoch_rule"]
    assert rule["sentence"].startswith("best epoch ohwx-000001") and rule["base_adherence"] == pytest.approx(1.0)
    assert (rule["max_donor_share"], rule["adherence_margin"]) == (0.25, 0.03)
    image = next(i for i in report["images"] if i["file"] == "ohwx-000003/p01_s7.png")
    assert image["donor_similarity"] > image["similarity"] and image["adherence"] == pytest.approx(1.0)
    svg = (out / "samples" / "epochs.svg").read_text(encoding="utf-8")
    assert "prompt adherence (CLIP)" in svg and rule["sentence"] in svg
