"""Model families as modules: the names each provides, detection a new family extends, the random
SDXL base, and --random-weights runs of every command that needs a base model with no download."""

from __future__ import annotations

import json
import shlex
import socket
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

import launch
from builder import families
from builder.families import FamilyModule, detect_family, resolve_family, sd15, sdxl
from builder.families.random_init import clip_text_model
from builder.kohya.presets import PRESETS_DIR, load_preset
from tests.fixtures.clip import bpe_path
from tests.fixtures.kohya import (
    fake_accelerate,
    fake_sd_scripts,
    make_images,
    path_with,
    tiny_config,
)

# A random SDXL small enough for tests: SDXL's block structure (no attention in the first down
# block, more transformer layers deeper, text-time embedding, two text encoders), tiny widths.
TINY_XL = sdxl.RandomSDXLSizes(
    block_out_channels=(32, 64), layers_per_block=1, transformer_layers_per_block=(1, 2), attention_head_dim=(2, 4),
    addition_time_embed_dim=8, sample_size=16, text_hidden=32, text_intermediate=37, text_layers=2, text_heads=4,
    text2_hidden=48, text2_intermediate=53, text2_layers=2, text2_heads=4, text2_projection=32,
    vae_channels=(32, 32, 64), vae_layers_per_block=1,
)


# --- the interface ----------------------------------------------------------------------------


def test_every_family_module_provides_the_same_names():
    wanted = set(FamilyModule.__annotations__) | {
        n for n in vars(FamilyModule) if not n.startswith("_") and callable(getattr(FamilyModule, n))
    }
    assert {"owns_keys", "make_random_base", "lora_targets", "BUCKET_STEP", "SCRIPT"} <= wanted
    for name, module in families.FAMILIES.items():
        missing = sorted(n for n in wanted if not hasattr(module, n))
        assert missing == [], (name, missing)
        assert name == module.NAME
        preset = load_preset(module.PRESET, name)  # the default preset exists and is this family's
        assert preset.family == name and preset.path.parent == PRESETS_DIR
    assert (sd15.BUCKET_STEP, sdxl.BUCKET_STEP, sd15.RESOLUTION, sdxl.RESOLUTION) == (64, 32, 512, 1024)
    with pytest.raises(Exception, match=r"kohya.model_family = 'sd3' is not one of chroma, flux, sdxl, sd15"):
        families.family("sd3")


def _header_only(path: Path, keys: list[str]) -> Path:
    save_file({k: torch.zeros(1) for k in keys}, str(path))
    return path


def test_detection_is_extended_by_a_new_family_module(tmp_path, monkeypatch):
    """A family added to the registry is told from its own keys and its own multi-file folder."""
    sd3 = types.SimpleNamespace(
        NAME="sd3", TITLE="SD 3.5", TOLD_BY="it has SD3's joint_blocks",
        owns_keys=lambda keys: any(k.startswith("joint_blocks.") for k in keys),
        owns_folder=lambda p: all((p / f).is_file() for f in ("sd3.5_large.safetensors", "clip_g.safetensors")),
    )
    monkeypatch.setattr(families, "FAMILIES", {"sd3": sd3, **families.FAMILIES})
    transformer = _header_only(tmp_path / "sd3.5_large.safetensors", ["joint_blocks.0.x_block.attn.qkv.weight"])
    assert detect_family(transformer) == "sd3"
    _header_only(tmp_path / "clip_g.safetensors", ["text_model.final_layer_norm.weight"])
    assert detect_family(tmp_path) == "sd3"
    # the families already there are still told apart
    xl = _header_only(tmp_path / "xl.safetensors", ["conditioner.embedders.1.model.ln_final.weight",
                                                    "model.diffusion_model.out.2.weight"])
    sd = _header_only(tmp_path / "sd.safetensors", ["model.diffusion_model.out.2.weight"])
    assert (detect_family(xl), detect_family(sd)) == ("sdxl", "sd15")
    with pytest.raises(Exception, match=r"model_family = 'sdxl', but the base model .*sd3.5_large.safetensors is SD 3\.5 "
                                        r"\(it has SD3's joint_blocks\); set kohya.model_family = \"sd3\""):
        resolve_family("sdxl", transformer)


# --- the random SDXL --------------------------------------------------------------------------


def test_the_random_sdxl_has_sdxl_bases_real_sizes():
    """SDXL base 1.0's UNet, CLIP-L, bigG-with-projection and VAE parameter counts (meta device).

    Checked beside sd-scripts 48d368fa: convert_diffusers_unet_state_dict_to_sdxl of this UNet
    gives exactly the 1680 tensors of its SdxlUNet2DConditionModel, every shape equal.
    """
    with torch.device("meta"):
        models = [sdxl._unet(sdxl.SDXL), *(clip_text_model(c) for c in sdxl._text_configs(sdxl.SDXL)),
                  sdxl._vae(sdxl.SDXL)]
    assert [sum(p.numel() for p in m.parameters()) for m in models] == [2_567_463_684, 123_060_480, 694_659_840, 83_653_863]


def test_the_random_sdxl_loads_in_diffusers_as_the_hub_repo_does(tmp_path):
    from diffusers import StableDiffusionXLPipeline
    from safetensors.torch import load_file

    folder = sdxl.write_random_sdxl(tmp_path / "rnd", bpe_path(), seed=0, sizes=TINY_XL)
    assert detect_family(folder) == "sdxl"
    pipe = StableDiffusionXLPipeline.from_pretrained(folder, dtype=torch.float32)
    te2 = load_file(str(folder / "text_encoder_2" / "model.safetensors"))
    assert "text_projection.weight" in te2 and all(k.startswith("text_model.") for k in te2 if k != "text_projection.weight")
    assert all(k.startswith("text_model.") for k in load_file(str(folder / "text_encoder" / "model.safetensors")))
    assert pipe.unet.config.cross_attention_dim == 32 + 48 and pipe.unet.config.addition_embed_type == "text_time"
    assert (pipe.tokenizer.pad_token, pipe.tokenizer_2.pad_token) == ("<|endoftext|>", "!")
    assert pipe.vae.config.scaling_factor == 0.13025 and type(pipe.scheduler).__name__ == "EulerDiscreteScheduler"
    image = pipe("a photo", num_inference_steps=1, height=64, width=64, output_type="np").images[0]
    assert image.shape == (64, 64, 3) and np.isfinite(image).all()
    again = sdxl.write_random_sdxl(tmp_path / "rnd2", bpe_path(), seed=0, sizes=TINY_XL)
    first = load_file(str(folder / "unet" / "diffusion_pytorch_model.safetensors"))
    same = load_file(str(again / "unet" / "diffusion_pytorch_model.safetensors"))
    assert all(torch.equal(first[k], same[k]) for k in first)  # seeded
    # sd-scripts names the SGM UNet (one resnet per block here: the second block's attention is input_blocks.3.1)
    names = sdxl.lora_targets(pipe)
    assert "lora_unet_input_blocks_3_1_transformer_blocks_0_attn1_to_q" in names
    assert names["lora_unet_input_blocks_3_1_transformer_blocks_0_attn1_to_q"] is \
        pipe.unet.down_blocks[1].attentions[0].transformer_blocks[0].attn1.to_q


# --- --random-weights never downloads -----------------------------------------------------------


@pytest.fixture
def offline(monkeypatch):
    """No network but this machine's own, and every download path of the product raises."""
    import huggingface_hub

    from builder import fetch

    real_connect = socket.socket.connect

    def local_only(sock, address):  # type: ignore[no-untyped-def]
        if isinstance(address, tuple) and address[0] not in ("127.0.0.1", "::1", "localhost"):
            raise OSError(f"test: no network ({address[0]})")
        return real_connect(sock, address)

    def no_download(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise AssertionError(f"a --random-weights run tried to download: {args[:2]}")

    monkeypatch.setattr(socket.socket, "connect", local_only)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    for name in ("fetch", "download_named", "get_json"):
        monkeypatch.setattr(fetch, name, no_download)
    for name in ("hf_hub_download", "snapshot_download"):
        monkeypatch.setattr(huggingface_hub, name, no_download)
    monkeypatch.setattr(sdxl, "SDXL", TINY_XL)  # the product's real sizes, tiny here
    monkeypatch.setattr(sd15, "SD15", __import__("tests.test_base_model", fromlist=["TINY"]).TINY)


@pytest.mark.slow
def test_sdxl_train_and_sample_with_random_weights_make_their_own_base(tmp_path, offline, monkeypatch, capsys):
    from diffusers import StableDiffusionXLPipeline

    from tests.fixtures.tiny_sdxl import write_kohya_sdxl_lora

    weights = tmp_path / "weights"
    cfg = tiny_config()
    out = tmp_path / "run"
    make_images(out, cfg, 2)
    sd = fake_sd_scripts(tmp_path / "sd-scripts")
    fake_accelerate(tmp_path / "bin")
    monkeypatch.setenv("PATH", path_with(tmp_path / "bin"))
    common = ["--random-weights", "--weights-dir", str(weights), "--model-family", "sdxl"]
    assert launch.main(["train", str(out), "--sd-scripts", str(sd), *common, "--dry-run",
                        "--set", f"kohya.tokenizer_cache_dir={cfg.kohya.tokenizer_cache_dir}"]) == 0
    generated = sdxl.random_base_folder(str(weights), 0)
    assert (generated / "model_index.json").is_file() and detect_family(generated) == "sdxl"
    command = shlex.split(capsys.readouterr().out.strip().splitlines()[-1].partition(" && ")[2])
    assert command[4] == str(sd.resolve() / "sdxl_train_network.py")
    config = (out / "config.toml").read_text(encoding="utf-8")
    assert f'pretrained_model_name_or_path = "{generated.resolve()}"' in config and 'resolution = "1024,1024"' in config

    # sample: a fresh folder (no config.toml to name the base), the same generated model as control
    pipe = StableDiffusionXLPipeline.from_pretrained(generated, dtype=torch.float32)
    lora = write_kohya_sdxl_lora(pipe, tmp_path / "ohwx.safetensors")
    samples = tmp_path / "samples-run"
    samples.mkdir()
    (samples / "sample_prompts.txt").write_text("ohwx woman --w 64 --h 64 --s 1 --d 3\n", encoding="utf-8")
    assert launch.main(["sample", str(samples), *common, "--lora", str(lora), "--no-score", "--device", "cpu"]) == 0
    report = json.loads((samples / "samples" / "report.json").read_text(encoding="utf-8"))
    assert report["base_model"] == str(generated) and report["complete"] is True
    assert [e["label"] for e in report["epochs"]] == ["base", "ohwx"]


@pytest.mark.slow
def test_sources_with_random_weights_makes_its_own_sdxl_base(tmp_path, offline, source_photo):
    weights = tmp_path / "weights"
    out = tmp_path / "faces"
    argv = ["sources", "--random-weights", "--weights-dir", str(weights), "--source", str(source_photo),
            "--out", str(out), "--n", "1", "--steps", "2", "--detector", "dlib", "--judge", "dlib", "--device", "cpu",
            "--set", "sources.width=64", "--set", "sources.height=64"]
    assert launch.main(argv) == 0
    assert (sdxl.random_base_folder(str(weights), 0) / "model_index.json").is_file()
    records = [json.loads(line) for line in (out / "sources.jsonl").read_text().splitlines()]
    assert len(records) == 1 and (out / records[0]["file"]).is_file()
