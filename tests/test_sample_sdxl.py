"""The sample stage on a tiny random-weight SDXL pipeline and kohya-format SDXL LoRAs."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from diffusers import StableDiffusionXLPipeline
from safetensors.torch import load_file, save_file

from builder.config import Config
from builder.errors import BuilderError
from builder.sample import run_samples
from builder.sample.pipeline import (
    check_lora,
    load_pipeline,
    lora_applied,
    render,
    resolve_base_model,
)
from builder.sample.prompts import parse_prompt_line
from tests.fixtures.threads import torch_threads
from tests.fixtures.tiny_sd import build_tiny_pipeline, write_kohya_lora
from tests.fixtures.tiny_sdxl import (
    kohya_sdxl_lora_state_dict,
    save_tiny_sdxl_pipeline,
    write_kohya_sdxl_lora,
    write_single_file,
)


@pytest.fixture(autouse=True, scope="module")
def one_thread() -> Iterator[None]:
    with torch_threads(1):
        yield


@pytest.fixture(scope="module")
def tiny_sdxl(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_sdxl_pipeline(tmp_path_factory.mktemp("tiny") / "sdxl-tiny")


@pytest.fixture(scope="module")
def pipe(tiny_sdxl: Path) -> StableDiffusionXLPipeline:
    cfg = Config()
    cfg.paths.base_model = str(tiny_sdxl)
    return load_pipeline(resolve_base_model(cfg), cfg, torch.device("cpu"))


def _render(pipe: StableDiffusionXLPipeline, seed: int = 3) -> np.ndarray:
    prompt = parse_prompt_line("ohwx woman --w 64 --h 64 --s 2", Config())
    return render(pipe, prompt, seed, dict(pipe.scheduler.config)).astype(np.int16)


def test_sdxl_folder_loads_as_the_sdxl_pipeline(pipe: StableDiffusionXLPipeline) -> None:
    assert isinstance(pipe, StableDiffusionXLPipeline)
    assert pipe.unet.config.addition_embed_type == "text_time"
    image = _render(pipe)
    assert image.shape == (64, 64, 3) and image.std() > 0


def test_kohya_sdxl_lora_renders_and_a_zero_lora_changes_nothing(pipe: StableDiffusionXLPipeline, tmp_path: Path) -> None:
    base = _render(pipe)
    lora = write_kohya_sdxl_lora(pipe, tmp_path / "ohwx.safetensors")
    names = {k.split(".")[0] for k in kohya_sdxl_lora_state_dict(pipe)}
    # sd-scripts' SDXL naming: the UNet, CLIP-L (text_model nesting of transformers 4.x) and bigG.
    assert {n.split("_")[1] for n in names} == {"unet", "te1", "te2"}
    assert "lora_te1_text_model_encoder_layers_0_self_attn_q_proj" in names
    assert "lora_te2_text_model_encoder_layers_9_mlp_fc2" in names
    # sd-scripts trains SDXL on the SGM UNet: down_blocks.1.attentions.0 is input_blocks.3.1 here.
    assert "lora_unet_input_blocks_3_1_transformer_blocks_1_attn2_to_k" in names
    assert "lora_unet_output_blocks_0_1_proj_out" in names
    assert check_lora(lora, pipe) == len(names)
    with lora_applied(pipe, lora):
        with_lora = _render(pipe)
    assert np.abs(with_lora - base).max() > 20
    assert np.array_equal(_render(pipe), base)  # unloaded completely

    # The same weights under diffusers' module names render the same pixels: both namings
    # reach the same modules (check_lora and diffusers' SGM conversion agree).
    named = write_kohya_sdxl_lora(pipe, tmp_path / "diffusers-named.safetensors", unet_names="diffusers")
    assert check_lora(named, pipe) == len(names)
    assert "lora_unet_down_blocks_1_attentions_0_transformer_blocks_1_attn2_to_k.alpha" in load_file(str(named))
    with lora_applied(pipe, named):
        assert np.array_equal(_render(pipe), with_lora)

    zero = write_kohya_sdxl_lora(pipe, tmp_path / "zero.safetensors", up_scale=0.0)
    with lora_applied(pipe, zero):
        assert np.array_equal(_render(pipe), base)

    # The second text encoder's modules are applied too: a LoRA on bigG alone changes the image.
    te2_only = {k: v for k, v in kohya_sdxl_lora_state_dict(pipe, seed=4).items() if k.startswith("lora_te2_")}
    save_file({k: v.half() for k, v in te2_only.items()}, str(tmp_path / "te2.safetensors"))
    with lora_applied(pipe, tmp_path / "te2.safetensors"):
        assert np.abs(_render(pipe) - base).max() > 0


def test_lora_of_the_other_family_is_refused_with_the_reason(pipe: StableDiffusionXLPipeline, tmp_path: Path) -> None:
    sd15 = build_tiny_pipeline(seed=1, tokenizer_dir=tmp_path / "tok")
    lora = write_kohya_lora(sd15.unet, sd15.text_encoder, tmp_path / "sd15.safetensors")
    with pytest.raises(BuilderError, match=r"sd15\.safetensors does not match .* trained for SD 1\.x/2\.x, the base model is SDXL"):
        check_lora(lora, pipe)
    sdxl_lora = write_kohya_sdxl_lora(pipe, tmp_path / "xl.safetensors")
    with pytest.raises(BuilderError, match=r"xl\.safetensors does not match .* trained for SDXL, the base model is SD 1\.5"):
        check_lora(sdxl_lora, sd15)


def test_sgm_single_file_loads_with_a_local_config(pipe: StableDiffusionXLPipeline, tiny_sdxl: Path, tmp_path: Path) -> None:
    """sd_xl_base_1.0.safetensors' layout (conditioner.embedders.*), configs from a local folder (offline)."""
    ckpt = write_single_file(pipe, tmp_path / "tiny_xl.safetensors")
    cfg = Config()
    cfg.paths.base_model = str(ckpt)
    cfg.sample.model_config = str(tiny_sdxl)
    single = load_pipeline(resolve_base_model(cfg), cfg, torch.device("cpu"))
    assert isinstance(single, StableDiffusionXLPipeline)
    for name in ("unet", "vae", "text_encoder", "text_encoder_2"):
        ours, theirs = getattr(pipe, name).state_dict(), getattr(single, name).state_dict()
        assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours), name
    assert np.array_equal(_render(single), _render(pipe))
    cfg.sample.model_config = str(tmp_path / "nowhere")
    with pytest.raises(BuilderError, match=r"model_config .*nowhere is neither a folder"):
        load_pipeline(ckpt, cfg, torch.device("cpu"))


@pytest.mark.slow
def test_sdxl_epochs_are_scored_and_the_best_is_picked(
    pipe: StableDiffusionXLPipeline, tiny_sdxl: Path, tmp_path: Path, source_photo: Path, donor_photos: list[Path]
) -> None:
    from builder.io import load_image, write_image

    out = tmp_path / "run"
    (out / "model").mkdir(parents=True)
    (out / "sample_prompts.txt").write_text("ohwx woman, portrait --w 64 --h 64 --s 2 --d 7\n", encoding="utf-8")
    for epoch in (1, 2):
        write_kohya_sdxl_lora(pipe, out / "model" / f"ohwx-00000{epoch}.safetensors", seed=epoch)
    cfg = Config()
    cfg.paths.base_model = str(tiny_sdxl)
    cfg.paths.source = [str(source_photo)]
    cfg.runtime.device = "cpu"
    cfg.faces.detector = cfg.faces.judge = "dlib"
    cfg.sample.adherence = False  # no CLIP weights here; test_verdicts covers the scorer
    result = run_samples(cfg, out)
    assert result.rendered == 3
    report = json.loads((out / "samples" / "report.json").read_text())
    assert [e["label"] for e in report["epochs"]] == ["base", "ohwx-000001", "ohwx-000002"]
    files = {i["file"]: cv2.imread(str(out / "samples" / i["file"])) for i in report["images"]}
    assert not np.array_equal(files["base/p01_s7.png"], files["ohwx-000001/p01_s7.png"])

    # Real photos where the renders were: the epoch that shows the source's face wins.
    placed = {"base": load_image(donor_photos[0]), "ohwx-000001": load_image(donor_photos[1]),
              "ohwx-000002": load_image(source_photo)}
    for label, image in placed.items():
        write_image(out / "samples" / label / "p01_s7.png", image)
    again = run_samples(cfg, out)
    assert again.rendered == 0 and again.best_epoch == "ohwx-000002"
