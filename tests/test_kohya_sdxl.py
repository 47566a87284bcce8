"""SDXL kohya files (sdxl_train_network.py), the model family, and training on several GPUs."""

from __future__ import annotations

import json
import math
import shlex
import tomllib
from pathlib import Path

import pytest

from builder.errors import BuilderError, ConfigError
from builder.families import detect_family, family_from_keys, resolve_family
from builder.kohya.dataset import choose_repeats
from builder.kohya.files import write_kohya_files
from builder.kohya.schema import dataset_keys, gui_keys, train_arguments
from builder.kohya.train import gpu_options, make_command
from launch import main
from tests.fixtures.kohya import (
    fake_accelerate,
    fake_base_model,
    fake_sd_scripts,
    fake_sdxl_model,
    make_images,
    path_with,
    tiny_config,
)


def flat(path: Path) -> dict:
    out: dict = {}
    for key, value in tomllib.loads(path.read_text(encoding="utf-8")).items():
        out.update(value if isinstance(value, dict) else {key: value})
    return out


@pytest.fixture
def sdxl_run(tmp_path: Path):
    cfg = tiny_config()
    cfg.paths.base_model = str(fake_sdxl_model(tmp_path))
    make_images(tmp_path / "run", cfg, 4)
    return tmp_path / "run", cfg


# --- the model family -------------------------------------------------------------------------


def test_family_is_told_from_checkpoint_keys(tmp_path: Path) -> None:
    assert detect_family(fake_sdxl_model(tmp_path)) == "sdxl"
    assert family_from_keys(["cond_stage_model.transformer.text_model.embeddings.position_embedding.weight",
                             "model.diffusion_model.out.2.weight"]) == "sd15"
    assert family_from_keys(["lora_unet_x.alpha"]) is None
    with pytest.raises(BuilderError, match=r"Stable Diffusion 2\.x .*cond_stage_model\.model\."):
        family_from_keys(["cond_stage_model.model.token_embedding.weight"])
    assert detect_family(fake_base_model(tmp_path)) is None  # a header without tensors says nothing
    (tmp_path / "model.ckpt").write_bytes(b"PK")  # a pickle is not opened: the flag decides
    assert detect_family(tmp_path / "model.ckpt") is None
    assert resolve_family("auto", tmp_path / "model.ckpt") == "sd15"
    assert resolve_family("sdxl", tmp_path / "model.ckpt") == "sdxl"
    assert resolve_family("auto", "") == "sd15"
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(b"\xff" * 16)
    with pytest.raises(BuilderError, match=r"base model .*broken\.safetensors: not a \.safetensors file"):
        detect_family(broken)


def test_family_of_diffusers_folders_and_a_contradicting_flag(tmp_path: Path) -> None:
    xl = tmp_path / "xl"
    (xl / "text_encoder_2").mkdir(parents=True)
    (xl / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionXLPipeline"}))
    sd = tmp_path / "sd"
    sd.mkdir()
    (sd / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionPipeline"}))
    assert (detect_family(xl), detect_family(sd)) == ("sdxl", "sd15")
    with pytest.raises(ConfigError, match=r"model_family = 'sd15', but the base model .*xl is SDXL .*\"sdxl\" or \"auto\""):
        resolve_family("sd15", xl)
    with pytest.raises(ConfigError, match=r"model_family = 'sd3'"):
        resolve_family("sd3", xl)
    # Registry names say their family before anything is downloaded.
    assert resolve_family("auto", "sdxl_base") == resolve_family("auto", "realvisxl_v4") == "sdxl"
    assert resolve_family("auto", "sd15") == "sd15"
    with pytest.raises(ConfigError, match=r"base model realvisxl_v4 is SDXL"):
        resolve_family("sd15", "realvisxl_v4")


# --- the SDXL TOMLs ---------------------------------------------------------------------------


def test_sdxl_tomls_pass_the_schema_of_sdxl_train_network(sdxl_run) -> None:
    out, cfg = sdxl_run
    cfg.kohya.preset = "lowvram_sdxl"
    cfg.kohya.shuffle_caption = False  # what text-encoder caching needs
    files = write_kohya_files(out, cfg)
    assert files.family == "sdxl"
    train = flat(files.config)
    assert set(train) <= set(train_arguments("sdxl"))
    assert train["cache_text_encoder_outputs"] is True and "cache_text_encoder_outputs" not in train_arguments("sd15")
    assert train["resolution"] == "1024,1024" and train["network_train_unet_only"] is True
    assert train["no_half_vae"] is True and train["mixed_precision"] == "fp16"
    assert "clip_skip" not in train  # sdxl_train_util warns that it does nothing
    assert files.config.read_text(encoding="utf-8").startswith("# sdxl_train_network.py --config_file")
    dataset = tomllib.loads(files.dataset_config.read_text(encoding="utf-8"))
    assert set(dataset["general"]) <= dataset_keys("general")
    assert dataset["general"]["resolution"] == 1024 and dataset["general"]["bucket_reso_steps"] % 32 == 0
    prompts = [ln for ln in files.sample_prompts.read_text(encoding="utf-8").splitlines() if not ln.startswith("#")]
    assert all("--w 1024 --h 1024" in ln for ln in prompts)

    gui = json.loads(files.gui_config.read_text(encoding="utf-8"))
    assert set(gui) <= gui_keys(), set(gui) - gui_keys()
    assert gui["sdxl"] is True and gui["sdxl_cache_text_encoder_outputs"] is True and gui["sdxl_no_half_vae"] is True
    assert gui["text_encoder_lr"] == 0  # the GUI's way of saying network_train_unet_only
    assert gui["max_resolution"] == "1024,1024" and gui["multi_gpu"] is False
    assert "--cache_text_encoder_outputs_to_disk" in gui["additional_parameters"]


def test_sdxl_tokenizer_cache_holds_both_tokenizers(tmp_path: Path) -> None:
    """sdxl_train_network.py loads CLIP-L's and bigG's tokenizers from tokenizer_cache_dir (strategy_sdxl)."""
    from transformers import CLIPTokenizer

    cfg = tiny_config()
    cfg.kohya.tokenizer_cache_dir = ""
    cfg.runtime.weights_dir = str(tmp_path / "weights")
    cfg.paths.base_model = str(fake_sdxl_model(tmp_path))
    make_images(tmp_path / "run", cfg, 2)
    cache = Path(flat(write_kohya_files(tmp_path / "run", cfg).config)["tokenizer_cache_dir"])
    clip_l = CLIPTokenizer.from_pretrained(str(cache / "openai_clip-vit-large-patch14"))
    big_g = CLIPTokenizer.from_pretrained(str(cache / "laion_CLIP-ViT-bigG-14-laion2B-39B-b160k"))
    ids = clip_l("ohwx, woman", padding="max_length", max_length=77).input_ids
    ids_g = big_g("ohwx, woman", padding="max_length", max_length=77).input_ids
    assert ids[:5] == ids_g[:5] == [49406, 47993, 267, 2308, 49407]  # one BPE vocabulary
    assert (ids[-1], ids_g[-1], big_g.pad_token) == (49407, 0, "!")  # bigG pads with "!" (id 0)


def test_default_preset_follows_the_family_and_a_wrong_one_is_refused(sdxl_run, tmp_path: Path) -> None:
    out, cfg = sdxl_run
    files = write_kohya_files(out, cfg)
    assert "Preset: character_sdxl.toml" in files.config.read_text(encoding="utf-8")
    assert flat(files.config)["cache_text_encoder_outputs"] is False  # so shuffle_caption may stay on
    cfg.kohya.preset = "lowvram_sd15"
    with pytest.raises(ConfigError, match=r"lowvram_sd15\.toml is a preset for SD 1\.5, but the model family is SDXL"):
        write_kohya_files(out, cfg)
    sd15 = tiny_config()
    sd15.kohya.extra_args = ["cache_text_encoder_outputs=true"]
    make_images(tmp_path / "sd", sd15, 2)
    with pytest.raises(ConfigError, match=r"not a train_network\.py argument \(sdxl_train_network\.py and flux_train_network\.py have it: "
                       r"kohya.model_family = \"sdxl\" or \"flux\" or \"chroma\"\)"):
        write_kohya_files(tmp_path / "sd", sd15)


@pytest.mark.parametrize("extra,shuffle,message", [
    ([], True, r"captions cannot change between steps, but shuffle_caption is on for .+/img/40_ohwx woman: set kohya\.shuffle_caption = false"),
    (["network_train_unet_only=false"], False, r"so the text encoders cannot be trained: set network_train_unet_only = true"),
    (["caption_tag_dropout_rate=0.1", "token_warmup_step=5"], False,
     r"token_warmup_step, caption_tag_dropout_rate are on .*: set token_warmup_step = 0 and caption_tag_dropout_rate = 0"),
])
def test_text_encoder_caching_with_varying_captions_is_refused(sdxl_run, extra, shuffle, message) -> None:
    out, cfg = sdxl_run
    cfg.kohya.preset = "lowvram_sdxl"
    cfg.kohya.shuffle_caption = shuffle
    cfg.kohya.extra_args = extra
    with pytest.raises(ConfigError, match=r"lowvram_sdxl\.toml\): cache_text_encoder_outputs stores one .*" + message):
        write_kohya_files(out, cfg)


def test_forbidden_combination_in_a_hand_edited_config_is_refused_before_launch(sdxl_run, tmp_path, monkeypatch, capsys) -> None:
    out, cfg = sdxl_run
    sd = fake_sd_scripts(tmp_path / "sd-scripts")
    bin_dir = tmp_path / "bin"
    fake_accelerate(bin_dir)
    monkeypatch.setenv("PATH", path_with(bin_dir))
    base = ["train", str(out), "--sd-scripts", str(sd), "--set", f"kohya.tokenizer_cache_dir={cfg.kohya.tokenizer_cache_dir}"]
    assert main([*base, "--base-model", cfg.paths.base_model, "--dry-run"]) == 0
    command = capsys.readouterr().out.strip().splitlines()[-1]
    assert shlex.split(command.partition(" && ")[2])[4] == str(sd.resolve() / "sdxl_train_network.py")
    config = out / "config.toml"
    config.write_text(config.read_text(encoding="utf-8").replace(
        "cache_text_encoder_outputs = false", "cache_text_encoder_outputs = true"), encoding="utf-8")
    assert main(base) == 2  # not a dry run: refused before accelerate starts
    err = " ".join(capsys.readouterr().err.split())
    assert "config.toml + dataset_config.toml: cache_text_encoder_outputs stores one" in err
    assert "shuffle_caption is on" in err and not (out / "log" / "train.log").exists()


# --- several GPUs -----------------------------------------------------------------------------


def test_gpus_2_launch_command(tmp_path: Path) -> None:
    launch = ["/venv/bin/accelerate", "launch"]
    cmd = make_command(tmp_path, tmp_path / "sd-scripts", launch, "sdxl", num_processes=2, gpu_ids="0,1")
    assert cmd.argv == [
        "/venv/bin/accelerate", "launch", "--multi_gpu", "--num_processes", "2", "--gpu_ids", "0,1",
        "--num_cpu_threads_per_process", "1", str(tmp_path / "sd-scripts" / "sdxl_train_network.py"),
        "--config_file", str((tmp_path / "config.toml").resolve()),
    ]
    assert make_command(tmp_path, tmp_path, launch, num_processes=2).argv[2:5] == ["--multi_gpu", "--num_processes", "2"]
    assert gpu_options(1, "") == [] and gpu_options(1, "3") == ["--gpu_ids", "3"]
    with pytest.raises(ConfigError, match=r"gpu_ids = '0,1' names 2 GPU\(s\) but kohya\.num_processes \(--gpus\) is 3"):
        gpu_options(3, "0,1")
    with pytest.raises(ConfigError, match=r"gpu_ids = '0,a'"):
        gpu_options(2, "0,a")
    with pytest.raises(ConfigError, match=r"num_processes \(--gpus\) = 0"):
        gpu_options(0, "")


def test_cli_gpus_flag_reaches_the_command_and_the_repeats(tmp_path: Path, monkeypatch, capsys) -> None:
    out = tmp_path / "run"
    cfg = tiny_config()
    make_images(out, cfg, 4)
    sd = fake_sd_scripts(tmp_path / "sd-scripts")
    fake_accelerate(tmp_path / "bin")
    monkeypatch.setenv("PATH", path_with(tmp_path / "bin"))
    argv = ["train", str(out), "--sd-scripts", str(sd), "--base-model", str(fake_base_model(tmp_path)),
            "--set", f"kohya.tokenizer_cache_dir={cfg.kohya.tokenizer_cache_dir}", "--dry-run"]
    assert main([*argv, "--gpus", "2", "--gpu-ids", "0,1"]) == 0
    captured = capsys.readouterr()
    command = shlex.split(captured.out.strip().splitlines()[-1].partition(" && ")[2])
    assert command[2:7] == ["--multi_gpu", "--num_processes", "2", "--gpu_ids", "0,1"]
    assert command[9] == str(sd.resolve() / "train_network.py")
    # 4 images, 10 epochs, 1600 target steps: 80 repeats on 2 GPUs (40 on one), 160 steps per epoch.
    assert (out / "img" / "80_ohwx woman").is_dir()
    assert "batch 1 x 2 GPUs (effective batch 2) = 160 steps per epoch" in " ".join(captured.err.split())
    assert main([*argv, "--gpus", "3", "--gpu-ids", "0,1"]) == 2


@pytest.mark.parametrize("images,epochs,batch,target,reg,gpus", [
    (5, 10, 1, 1600, False, 2), (37, 10, 2, 1600, False, 4), (7, 3, 4, 999, True, 3), (1, 1, 1, 1, False, 8),
])
def test_repeats_count_every_gpu(images, epochs, batch, target, reg, gpus) -> None:
    plan = choose_repeats(images, epochs, batch, target, reg, gpus)

    def steps(r: int) -> int:  # train_network.py: ceil(len(dataloader) / num_processes) per epoch
        return math.ceil(math.ceil(images * r * (2 if reg else 1) / batch) / gpus) * epochs

    best = min(range(1, 5000), key=lambda r: (abs(steps(r) - target), r))
    assert plan.repeats == best and plan.total_steps == steps(best)
    assert f"effective batch {batch * gpus}" in plan.describe()


def test_doctor_lists_every_gpu(monkeypatch) -> None:
    from types import SimpleNamespace

    import torch

    from builder.cli import doctor

    props = [SimpleNamespace(name="NVIDIA H200", total_memory=139 * 2**30, major=9, minor=0),
             SimpleNamespace(name="NVIDIA RTX 4090", total_memory=24 * 2**30, major=8, minor=9)]
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda i: props[i])
    lines = {c.what: (c.status, c.detail) for c in doctor.check_torch()}
    assert lines["cuda"][1].endswith("2 GPU(s); `train --gpus 2` trains on all of them")
    assert lines["gpu 0"] == ("OK", "NVIDIA H200, 139.0 GiB, compute capability 9.0")
    assert lines["gpu 1"] == ("OK", "NVIDIA RTX 4090, 24.0 GiB, compute capability 8.9")
