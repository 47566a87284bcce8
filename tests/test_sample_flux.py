"""Sampling FLUX.1 and Chroma: the pipeline built from the four single files, sd-scripts' LoRAs on it,
the family's sampling defaults, and the LoRA name mapping on the full-size transformer."""

from __future__ import annotations

import gc
import json
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from safetensors import safe_open

from builder import families
from builder.config import Config
from builder.errors import BuilderError
from builder.families import flux_models as M
from builder.kohya.prompts import prompt_lines
from builder.sample.pipeline import check_lora, load_pipeline, lora_applied, render
from builder.sample.prompts import parse_prompt_line
from tests.fixtures.flux_files import fake_flux_base
from tests.fixtures.threads import torch_threads
from tests.fixtures.tiny_flux import (
    kohya_flux_lora_state_dict,
    lora_names,
    merge_into_bfl,
    write_kohya_flux_lora,
    write_tiny_flux,
)

CPU = torch.device("cpu")


@pytest.fixture(autouse=True, scope="module")
def two_threads() -> Iterator[None]:
    with torch_threads(2):  # a 3072-wide transformer: worth both cores
        yield


@pytest.fixture(scope="module")
def tiny_dev(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_flux(tmp_path_factory.mktemp("flux") / "flux-dev", "dev")


def _cfg(base: Path) -> Config:
    cfg = Config()
    cfg.paths.base_model = str(base)
    cfg.runtime.device = "cpu"
    return cfg


@pytest.fixture(scope="module")
def pipe(tiny_dev: Path):  # type: ignore[no-untyped-def]
    return load_pipeline(tiny_dev, _cfg(tiny_dev), CPU)


def _render(pipe, cfg: Config, line: str = "ohwx woman --w 64 --h 64 --s 2", seed: int = 3) -> np.ndarray:  # type: ignore[no-untyped-def]
    return render(pipe, parse_prompt_line(line, cfg), seed, dict(pipe.scheduler.config)).astype(np.int16)


def test_flux_base_loads_from_its_single_files_as_flux_pipeline(pipe, tiny_dev: Path) -> None:  # type: ignore[no-untyped-def]
    assert families.detect_family(tiny_dev) == "flux" and type(pipe).__name__ == "FluxPipeline"
    t = pipe.transformer
    assert (t.config.num_layers, t.config.num_single_layers, t.config.guidance_embeds) == (1, 1, True)
    with safe_open(str(tiny_dev / M.TRANSFORMER_FILE["dev"]), framework="pt") as fh:
        qkv = fh.get_tensor("single_blocks.0.linear1.weight").float()
        img_in = fh.get_tensor("img_in.weight").float()
    # diffusers' converter split BFL's fused linear1 into q, k, v and the MLP input, in that order
    block = t.single_transformer_blocks[0]
    assert torch.equal(block.attn.to_k.weight, qkv[M.HIDDEN:2 * M.HIDDEN]) and torch.equal(block.proj_mlp.weight, qkv[3 * M.HIDDEN:])
    assert torch.equal(t.x_embedder.weight, img_in)
    assert pipe.text_encoder.config.hidden_size == M.TINY.clip_hidden and pipe.text_encoder_2.config.d_model == M.TINY.t5_d_model


def test_sample_defaults_are_the_family_defaults(tiny_dev: Path, tmp_path: Path) -> None:
    dev = _cfg(tiny_dev)
    p = parse_prompt_line("ohwx woman --w 64 --h 64", dev)
    assert (p.steps, p.guidance, p.sampler, p.call_kwargs) == (28, 3.5, "", ())
    # FLUX.1: --g is the distilled guidance; sd-scripts' FLUX sampler reads no --l as guidance and no --ss
    p = parse_prompt_line("ohwx woman --g 2.5 --l 7 --ss euler_a --s 3", dev)
    assert (p.steps, p.guidance, p.sampler) == (3, 2.5, "")
    schnell = _cfg(fake_flux_base(tmp_path / "schnell", "schnell"))
    p = parse_prompt_line("ohwx woman", schnell)
    assert (p.steps, p.guidance, dict(p.call_kwargs)) == (4, 0.0, {"max_sequence_length": 256})
    chroma = _cfg(fake_flux_base(tmp_path / "chroma", "chroma"))
    p = parse_prompt_line("ohwx woman --n ugly --g 0", chroma)
    assert (p.steps, p.guidance, p.negative) == (20, 4.0, "ugly")  # Chroma: CFG from --l, --g 0 is not it
    assert parse_prompt_line("ohwx woman --l 5 --g 0", chroma).guidance == 5.0
    dev.sample.steps, dev.sample.guidance = 12, 2.0  # [sample] wins over the family
    assert (parse_prompt_line("x", dev).steps, parse_prompt_line("x", dev).guidance) == (12, 2.0)
    sd = parse_prompt_line("x", Config())
    assert (sd.steps, sd.guidance, sd.sampler) == (25, 7.0, "ddim")  # SD 1.5 as before
    # the training sample prompts sd-scripts reads carry the same defaults
    assert all(line.endswith("--g 3.5 --l 1 --s 28") for line in prompt_lines(_cfg(tiny_dev), "flux"))
    assert all(line.endswith("--l 4 --g 0 --s 20") for line in prompt_lines(chroma, "chroma"))


def test_zero_lora_gives_identical_pixels(pipe, tiny_dev: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    cfg = _cfg(tiny_dev)
    lora = write_kohya_flux_lora(tmp_path / "zero.safetensors", kohya_flux_lora_state_dict("dev", zero=True))
    assert check_lora(lora, pipe) == len(lora_names("dev")) == 13 + 6  # 10 double + 3 single; CLIP-L 6
    base = _render(pipe, cfg)
    with lora_applied(pipe, lora):
        assert np.array_equal(_render(pipe, cfg), base)
    assert base.std() > 5  # a picture, not a flat field


@pytest.mark.slow
def test_lora_changes_images_and_equals_sd_scripts_merge(pipe, tiny_dev: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Loading the LoRA onto the pipeline renders what its weights merged into the BFL files render."""
    cfg = _cfg(tiny_dev)
    sd = kohya_flux_lora_state_dict("dev", seed=5, scale=0.3)
    lora = write_kohya_flux_lora(tmp_path / "lora.safetensors", sd)
    base = _render(pipe, cfg)
    with lora_applied(pipe, lora):
        with_lora = _render(pipe, cfg)
    assert np.abs(with_lora - base).mean() > 2
    assert np.array_equal(_render(pipe, cfg), base)  # unloaded: the next epoch starts from the base
    merged = load_pipeline(merge_into_bfl(tiny_dev, sd, tmp_path / "merged"), cfg, CPU)
    try:
        assert np.abs(_render(merged, cfg) - with_lora).max() <= 2
    finally:
        del merged
        gc.collect()


def test_lora_of_another_family_is_refused(pipe, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from safetensors.torch import save_file

    sdxl = {f"lora_te{i}_text_model_encoder_layers_0_mlp_fc1.{p}": torch.zeros(4, 4) for i in (1, 2) for p in ("lora_down.weight", "lora_up.weight")}
    save_file(sdxl, str(tmp_path / "xl.safetensors"))
    with pytest.raises(BuilderError, match=r"xl\.safetensors does not match .* trained for SDXL, the base model is FLUX\.1"):
        check_lora(tmp_path / "xl.safetensors", pipe)


@pytest.mark.parametrize(("variant", "unet", "te1", "inputs"), [("dev", 304, 72, 8), ("schnell", 304, 72, 6), ("chroma", 228, 0, 2)])
def test_every_sd_scripts_lora_name_maps_onto_the_full_size_pipeline(variant: str, unet: int, te1: int, inputs: int) -> None:
    """On FLUX.1's real sizes (19 double + 38 single blocks, CLIP-L), built on the meta device."""
    from diffusers import ChromaTransformer2DModel, FluxTransformer2DModel
    from transformers import CLIPTextConfig, CLIPTextModel

    with torch.device("meta"):
        transformer = (ChromaTransformer2DModel() if variant == "chroma"
                       else FluxTransformer2DModel(guidance_embeds=variant == "dev"))
        clip = CLIPTextModel(CLIPTextConfig(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12))
    pipe = SimpleNamespace(transformer=transformer, text_encoder=clip, text_encoder_2=None if variant == "chroma" else object())
    targets = M.lora_targets(pipe)
    names = lora_names(variant, M.REAL)  # sd-scripts' rule applied to the BFL checkpoint's own tensors
    assert (sum(n.startswith("lora_unet_") for n in names), sum(n.startswith("lora_te1_") for n in names)) == (unet, te1)
    assert set(names) <= set(targets)
    assert all((targets[n].in_features, targets[n].out_features) == shape for n, shape in names.items())
    # lora_flux's in_dims option adds the input layers (img_in, txt_in; FLUX also time_in, vector_in, guidance_in)
    inputs_found = [n for n in targets if n.startswith("lora_unet_") and "blocks_" not in n]
    assert len(inputs_found) == inputs


@pytest.mark.slow
def test_sample_renders_flux_epochs_with_the_family_defaults(tiny_dev: Path, tmp_path: Path, source_photo: Path) -> None:
    from builder.sample import run_samples

    out = tmp_path / "run"
    (out / "model").mkdir(parents=True)
    (out / "sample_prompts.txt").write_text("ohwx woman, portrait --w 64 --h 64 --d 7 --s 2\n", encoding="utf-8")
    for epoch in (1, 2):
        write_kohya_flux_lora(out / "model" / f"ohwx-00000{epoch}.safetensors",
                              kohya_flux_lora_state_dict("dev", seed=epoch, scale=0.3))
    cfg = _cfg(tiny_dev)
    cfg.paths.source = [str(source_photo)]
    cfg.faces.detector = cfg.faces.judge = "dlib"
    cfg.sample.adherence = False  # CLIP's weights are not here; adherence is tested in test_sample
    result = run_samples(cfg, out)
    assert result.rendered == 3
    report = json.loads(result.report.read_text())
    assert [e["label"] for e in report["epochs"]] == ["base", "ohwx-000001", "ohwx-000002"]
    assert all((i["guidance"], i["steps"], i["sampler"]) == (3.5, 2, "") for i in report["images"])
    assert report["scored"] and all(i["face_found"] is False for i in report["images"]) and report["best_epoch"] is None


@pytest.mark.slow
def test_chroma_samples_with_a_negative_prompt_and_its_loras(tmp_path: Path) -> None:
    base = write_tiny_flux(tmp_path / "chroma", "chroma")
    cfg = _cfg(base)
    pipe = load_pipeline(base, cfg, CPU)
    assert families.detect_family(base) == "chroma" and type(pipe).__name__ == "ChromaPipeline"
    line = "ohwx woman --n blurry --w 64 --h 64 --s 2"
    plain = _render(pipe, cfg, line)
    assert not np.array_equal(_render(pipe, cfg, line.replace("blurry", "grainy")), plain)  # CFG reads the negative
    zero = write_kohya_flux_lora(tmp_path / "zero.safetensors", kohya_flux_lora_state_dict("chroma", zero=True))
    assert check_lora(zero, pipe) == 8 + 2  # no modulation Linears, no CLIP-L
    with lora_applied(pipe, zero):
        assert np.array_equal(_render(pipe, cfg, line), plain)
    lora = write_kohya_flux_lora(tmp_path / "lora.safetensors", kohya_flux_lora_state_dict("chroma", scale=0.3))
    with lora_applied(pipe, lora):
        assert np.abs(_render(pipe, cfg, line) - plain).mean() > 2
