"""FLUX.1 (dev, schnell) and Chroma training files: the base set, flux_train_network.py's TOMLs,
its late checks, the gated download, the GUI JSON and the launch command."""

from __future__ import annotations

import dataclasses
import http.server
import json
import shlex
import threading
import tomllib
from pathlib import Path
from typing import ClassVar

import pytest
import torch

from builder import base_model as B
from builder import families
from builder import weights as W
from builder.errors import BuilderError, ConfigError, MissingWeightError
from builder.families import chroma, detect_family, flux, resolve_family
from builder.kohya.files import write_kohya_files
from builder.kohya.presets import load_preset
from builder.kohya.schema import gui_keys, train_arguments
from launch import main
from tests.fixtures.flux_files import diffusers_transformer, fake_flux_base
from tests.fixtures.kohya import (
    fake_accelerate,
    fake_sd_scripts,
    make_images,
    path_with,
    tiny_config,
)

HF_SECRET = "hf_secret_token_7c1e3f9a"  # a value the test can grep for
SENTENCE = "{trigger}, a photo of a {cls} smiling in a park, with trees behind her {i}"


def flat(path: Path) -> dict:
    out: dict = {}
    for key, value in tomllib.loads(path.read_text(encoding="utf-8")).items():
        out.update(value if isinstance(value, dict) else {key: value})
    return out


def run_folder(tmp_path: Path, variant: str, **kw):
    cfg = tiny_config()
    cfg.paths.base_model = str(fake_flux_base(tmp_path / f"base-{variant}", variant, **kw))
    make_images(tmp_path / "run", cfg, 4, caption=SENTENCE)
    return tmp_path / "run", cfg


# --- detection --------------------------------------------------------------------------------


@pytest.mark.parametrize("variant,family", [("dev", "flux"), ("schnell", "flux"), ("chroma", "chroma")])
def test_transformer_and_folder_are_told_by_tensor_names(tmp_path, variant, family):
    folder = fake_flux_base(tmp_path, variant)
    transformer = folder / flux.M.TRANSFORMER_FILE[variant]
    assert detect_family(transformer) == family and detect_family(folder) == family
    assert resolve_family("auto", folder) == family
    base = flux.base_set(folder)
    assert base.variant == variant and base.transformer == transformer
    assert (base.clip_l is None) == (variant == "chroma")
    # the file name says nothing: a renamed transformer is still told
    renamed = transformer.rename(folder / "my_finetune.safetensors")
    assert flux.base_set(folder).transformer == renamed
    with pytest.raises(ConfigError, match=r"kohya.model_family = 'sdxl', but the base model .* is "):
        resolve_family("sdxl", folder)


def test_every_family_is_in_the_registry_in_detection_order():
    assert list(families.FAMILIES) == ["chroma", "flux", "sdxl", "sd15"]
    assert (flux.BUCKET_STEP, chroma.BUCKET_STEP, flux.SCRIPT, chroma.SCRIPT) == (64, 64, "flux_train_network.py",
                                                                                   "flux_train_network.py")
    for name in ("flux", "chroma"):
        assert load_preset(families.family(name).PRESET, name).family == name


def test_diffusers_layout_transformer_is_refused_with_the_fix(tmp_path):
    path = diffusers_transformer(tmp_path / "diffusion_pytorch_model.safetensors")
    with pytest.raises(BuilderError, match=r"diffusers' layout .*Black Forest Labs' single file"):
        detect_family(path)
    with pytest.raises(BuilderError, match=r"diffusion_pytorch_model.safetensors is a FLUX transformer in diffusers' "
                                           r"layout .* flux1-dev.safetensors"):
        B.check_local(tmp_path)
    (tmp_path / "diffusion_pytorch_model.safetensors").unlink()
    (tmp_path / "model_index.json").write_text(json.dumps({"_class_name": "FluxPipeline"}))
    with pytest.raises(BuilderError, match=r"is a diffusers FLUX/Chroma folder; .* single files"):
        detect_family(tmp_path)


@pytest.mark.parametrize("variant,missing,role", [
    ("dev", flux.M.T5_FILE, "t5xxl"), ("dev", flux.M.CLIP_FILE, "clip_l"), ("schnell", flux.M.AE_FILE, "ae"),
    ("chroma", flux.M.T5_FILE, "t5xxl"),
])
def test_a_transformer_without_its_other_parts_is_refused_naming_each(tmp_path, variant, missing, role):
    folder = fake_flux_base(tmp_path / "base", variant, skip=(missing,))
    transformer = folder / flux.M.TRANSFORMER_FILE[variant]
    for given in (folder, transformer):  # the folder, or the transformer file with the rest beside it
        with pytest.raises(BuilderError, match=rf"has no {role} \(.*registry name .*put the file\(s\) in {folder}"):
            B.check_local(given)
    cfg = tiny_config()
    cfg.paths.base_model = str(folder)
    make_images(tmp_path / "run", cfg, 2, caption=SENTENCE)
    with pytest.raises(BuilderError, match=rf"has no {role}"):
        write_kohya_files(tmp_path / "run", cfg)
    assert not (tmp_path / "run" / "config.toml").exists()


# --- the training files -----------------------------------------------------------------------


@pytest.mark.parametrize("variant,t5_tokens,guidance", [("dev", 512, 1.0), ("schnell", 256, 1.0), ("chroma", 512, 0.0)])
def test_flux_run_folder_has_flux_train_network_arguments(tmp_path, variant, t5_tokens, guidance):
    out, cfg = run_folder(tmp_path, variant)
    files = write_kohya_files(out, cfg)
    train = flat(files.config)
    base = Path(cfg.paths.base_model).resolve()
    family = "chroma" if variant == "chroma" else "flux"
    assert files.family == family
    assert train["pretrained_model_name_or_path"] == str(base / flux.M.TRANSFORMER_FILE[variant])
    assert train["ae"] == str(base / "ae.safetensors") and train["t5xxl"] == str(base / "t5xxl_fp16.safetensors")
    assert ("clip_l" in train) == (variant != "chroma")
    assert train["network_module"] == "networks.lora_flux" and train["mixed_precision"] == "bf16"
    assert train["guidance_scale"] == guidance and train["t5xxl_max_token_length"] == t5_tokens
    assert train["model_prediction_type"] == "raw" and train["discrete_flow_shift"] == 3.0
    assert train["timestep_sampling"] == ("sigmoid" if variant == "chroma" else "flux_shift")
    assert "max_token_length" not in train  # CLIP's: flux_train_network.py ignores it
    if variant == "chroma":
        assert train["model_type"] == "chroma" and train["apply_t5_attn_mask"] is True
    assert train["cache_text_encoder_outputs"] and train["fp8_base"] and train["gradient_checkpointing"]
    assert set(train) <= set(train_arguments(family))
    assert files.config.read_text().startswith("# flux_train_network.py --config_file")
    general = tomllib.loads(files.dataset_config.read_text())["general"]
    assert general["bucket_reso_steps"] == 64 and general["resolution"] == 1024
    assert general["shuffle_caption"] is False  # sentences are not shuffled at their commas
    prompts = files.sample_prompts.read_text()
    # the family's sample defaults (flux_models.SAMPLE_DEFAULTS): dev's distilled guidance, schnell's none,
    # Chroma's CFG 4 with --g 0 (sd-scripts' docs); --l 1 is no CFG for FLUX.1
    assert {"dev": "--g 3.5 --l 1 --s 28", "schnell": "--g 0 --l 1 --s 4", "chroma": "--l 4 --g 0 --s 20"}[variant] in prompts


def test_gui_json_sets_kohya_ss_flux_fields(tmp_path):
    out, cfg = run_folder(tmp_path, "chroma")
    gui = json.loads(write_kohya_files(out, cfg).gui_config.read_text())
    assert gui["flux1_checkbox"] is True and gui["LoRA_type"] == "Flux1" and gui["model_type"] == "chroma"
    assert gui["sdxl"] is False and gui["flux1_cache_text_encoder_outputs"] is True
    assert gui["ae"].endswith("ae.safetensors") and gui["t5xxl"].endswith("t5xxl_fp16.safetensors")
    assert gui["guidance_scale"] == 0.0 and gui["apply_t5_attn_mask"] is True and gui["t5xxl_max_token_length"] == 512
    assert set(gui) - {"additional_parameters"} <= gui_keys()
    assert "--cache_text_encoder_outputs" not in gui["additional_parameters"]


@pytest.mark.parametrize("preset,family,base", [
    ("character_sdxl", "FLUX.1", "dev"), ("lowvram_sd15", "FLUX.1", "schnell"), ("character_flux", "Chroma", "chroma"),
])
def test_a_preset_of_another_family_is_refused_before_any_file_is_written(tmp_path, preset, family, base):
    out, cfg = run_folder(tmp_path, base)
    cfg.kohya.preset = preset
    with pytest.raises(ConfigError, match=rf"{preset}.toml is a preset for .*, but the model family is {family}"):
        write_kohya_files(out, cfg)
    assert not (out / "config.toml").exists()


def test_a_flux_preset_on_an_sd_base_is_refused(tmp_path):
    from tests.fixtures.kohya import fake_sdxl_model

    cfg = tiny_config()
    cfg.paths.base_model = str(fake_sdxl_model(tmp_path))
    cfg.kohya.preset = "lowvram_flux"
    make_images(tmp_path / "run", cfg, 2)
    with pytest.raises(ConfigError, match=r"lowvram_flux.toml is a preset for FLUX.1, but the model family is SDXL"):
        write_kohya_files(tmp_path / "run", cfg)


def test_cached_text_encoder_outputs_refuse_caption_dropout_with_sdxls_message(tmp_path):
    out, cfg = run_folder(tmp_path, "dev")
    cfg.kohya.extra_args = ["token_warmup_step=5"]
    with pytest.raises(ConfigError, match=r"cache_text_encoder_outputs stores one text-encoder output per caption, so "
                                          r"captions cannot change between steps, but token_warmup_step is on .*"
                                          r"flux_train_network.py refuses"):
        write_kohya_files(out, cfg)
    cfg.kohya.extra_args = ["network_train_unet_only=false"]
    with pytest.raises(ConfigError, match=r"so the text encoders cannot be trained"):
        write_kohya_files(out, cfg)


def test_blocks_to_swap_with_cpu_offload_checkpointing_is_refused(tmp_path):
    out, cfg = run_folder(tmp_path, "dev")
    cfg.kohya.preset = "lowvram_flux"
    cfg.kohya.extra_args = ["cpu_offload_checkpointing=true"]
    with pytest.raises(ConfigError, match=r"blocks_to_swap cannot be used with cpu_offload_checkpointing"):
        write_kohya_files(out, cfg)


def test_bucket_steps_of_32_are_refused_for_flux():
    doc = {"datasets": [{"subsets": [{"image_dir": "x", "bucket_reso_steps": 32}]}]}
    with pytest.raises(ConfigError, match=r"bucket_reso_steps = 32; FLUX.1 needs a multiple of 64"):
        flux.check_common({}, doc, "here", flux.TITLE)


@pytest.mark.parametrize("where,dtype,name", [
    ("t5", torch.float8_e5m2, "float8_e5m2"), ("transformer", torch.float8_e5m2, "float8_e5m2"),
])
def test_fp8_base_with_an_fp8_format_sd_scripts_refuses(tmp_path, where, dtype, name):
    kw = {"t5_dtype": dtype} if where == "t5" else {"transformer_dtype": dtype}
    out, cfg = run_folder(tmp_path, "dev", **kw)
    with pytest.raises(ConfigError, match=rf"stored as {name}; with fp8_base sd-scripts .*Unsupported fp8 model dtype"):
        write_kohya_files(out, cfg)
    cfg.kohya.extra_args = ["fp8_base=false"]  # loaded in bf16: accepted
    write_kohya_files(out, cfg)


def test_fp8_e4m3fn_t5_is_accepted_and_the_scaled_one_is_not(tmp_path):
    out, cfg = run_folder(tmp_path, "dev", t5_dtype=torch.float8_e4m3fn)
    assert flat(write_kohya_files(out, cfg).config)["fp8_base"] is True
    from safetensors.torch import load_file, save_file

    t5 = Path(cfg.paths.base_model) / flux.M.T5_FILE
    tensors = load_file(str(t5))
    save_file({**tensors, "scaled_fp8": torch.zeros(1).to(torch.float8_e4m3fn)}, str(t5))
    with pytest.raises(ConfigError, match=r"scaled fp8 T5"):
        write_kohya_files(out, cfg)


def test_chroma_checks_its_required_flags():
    base = {"model_type": "chroma", "apply_t5_attn_mask": True, "guidance_scale": 0.0}
    with pytest.raises(ConfigError, match="apply_t5_attn_mask = true"):
        chroma.check_train_args({**base, "apply_t5_attn_mask": False}, {}, "c")
    with pytest.raises(ConfigError, match=r"guidance_scale = 0\.0"):
        chroma.check_train_args({**base, "guidance_scale": 1.0}, {}, "c")
    with pytest.raises(ConfigError, match=r"pretrained_model_name_or_path is not set"):
        chroma.check_train_args(base, {}, "c")


# --- the base set from parts ------------------------------------------------------------------


def test_a_comma_list_of_parts_from_different_folders_becomes_one_set(tmp_path):
    folder = fake_flux_base(tmp_path / "a", "dev", skip=(flux.M.T5_FILE,))
    other = fake_flux_base(tmp_path / "b", "dev")
    cfg = tiny_config()
    cfg.runtime.weights_dir = str(tmp_path / "weights")
    spec = f"{folder},{other / flux.M.T5_FILE}"
    assert B.parse_spec(spec).kind == "set"
    got = B.resolve_base_model(spec, cfg)
    assert got.family_hint == "flux" and (got.path / flux.MANIFEST).is_file()
    base = flux.base_set(got.path)
    assert base.t5xxl == other / flux.M.T5_FILE and base.transformer == folder / "flux1-dev.safetensors"
    assert B.check_base_model(spec, cfg).present == got.path


def test_a_registry_transformer_names_its_companions():
    assert B.parse_spec("flux1-dev").kind == "set"
    assert [p for p, _ in B.set_parts("flux1-dev")] == ["flux1-dev", "flux1-dev-ae", "flux-clip-l", "t5xxl-fp16"]
    assert [p for p, _ in B.set_parts("flux1-schnell,t5xxl-fp8")] == ["flux1-schnell", "t5xxl-fp8", "flux1-ae",
                                                                       "flux-clip-l"]
    assert [p for p, _ in B.set_parts("chroma1-hd")] == ["chroma1-hd", "flux1-ae", "t5xxl-fp16"]
    assert W.REGISTRY["flux1-dev"].gated and not W.REGISTRY["flux1-schnell"].gated


class _Gate(http.server.BaseHTTPRequestHandler):
    """A hub that answers 401 without the right token, and records every request."""

    token = ""
    seen: ClassVar[list[tuple[str, str | None]]] = []

    def do_GET(self):
        type(self).seen.append((self.path, self.headers.get("Authorization")))
        if self.headers.get("Authorization") != f"Bearer {self.token}":
            self.send_response(401)
            self.end_headers()
            return
        body = b"not really a transformer"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def test_gated_dev_without_a_token_names_hf_token_and_the_licence_page(tmp_path, monkeypatch, capfd):
    cfg = tiny_config()
    cfg.runtime.weights_dir = str(tmp_path / "weights")
    monkeypatch.delenv("HF_TOKEN", raising=False)
    with pytest.raises(MissingWeightError, match=r"gated on the Hugging Face hub and HF_TOKEN is not set .* "
                                                 r"https://huggingface.co/black-forest-labs/FLUX.1-dev"):
        B.check_base_model("flux1-dev", cfg)  # before any work: nothing is downloaded
    assert not (tmp_path / "weights").exists() or not any((tmp_path / "weights").rglob("*.safetensors"))

    # A hub that refuses: the download's error says the same, and the token is nowhere.
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Gate)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_port}/black-forest-labs/FLUX.1-dev/resolve/main/flux1-dev.safetensors"
    monkeypatch.setitem(W.REGISTRY, "flux1-dev", dataclasses.replace(W.REGISTRY["flux1-dev"], url=url))
    monkeypatch.setattr("builder.fetch._is_hub", lambda u: u.startswith("http://127.0.0.1"))
    monkeypatch.setenv("HF_TOKEN", HF_SECRET)
    _Gate.token = "another"
    from builder.fetch import fetch

    with pytest.raises(MissingWeightError) as err:
        fetch(["flux1-dev"], cfg.runtime.weights_dir)
    server.shutdown()
    msg = str(err.value)
    assert "refused the token in HF_TOKEN (HTTP 401)" in msg and "black-forest-labs/FLUX.1-dev" in msg
    assert _Gate.seen and all(auth == f"Bearer {HF_SECRET}" for _, auth in _Gate.seen)  # sent, as a header
    captured = capfd.readouterr()
    assert HF_SECRET not in msg + repr(err.value) + captured.out + captured.err
    assert all(HF_SECRET not in p.read_bytes().decode("latin-1") for p in tmp_path.rglob("*") if p.is_file())


# --- train ------------------------------------------------------------------------------------


def test_train_dry_run_prints_the_flux_train_network_command(tmp_path, monkeypatch, capsys):
    out, cfg = run_folder(tmp_path, "dev")
    sd = fake_sd_scripts(tmp_path / "sd-scripts")
    fake_accelerate(tmp_path / "bin")
    monkeypatch.setenv("PATH", path_with(tmp_path / "bin"))
    argv = ["train", str(out), "--sd-scripts", str(sd), "--base-model", cfg.paths.base_model,
            "--set", f"kohya.tokenizer_cache_dir={cfg.kohya.tokenizer_cache_dir}", "--dry-run", "--gpus", "2"]
    assert main(argv) == 0
    command = shlex.split(capsys.readouterr().out.strip().splitlines()[-1].partition(" && ")[2])
    assert command[2:5] == ["--multi_gpu", "--num_processes", "2"]
    assert command[7:] == [str(sd.resolve() / "flux_train_network.py"), "--config_file", str((out / "config.toml").resolve())]
    train = flat(out / "config.toml")
    assert train["pretrained_model_name_or_path"].endswith("flux1-dev.safetensors")
    # a hand edit that removes the T5 is refused before launch
    config = out / "config.toml"
    config.write_text("\n".join(line for line in config.read_text().splitlines() if not line.startswith("t5xxl =")) + "\n")
    assert main(argv[:-3]) == 2
    assert "t5xxl is not set" in " ".join(capsys.readouterr().err.split())


# --- run, end to end up to training -----------------------------------------------------------

# Stands in for flux_train_network.py: records what accelerate gave it and the model files it was told.
FLUX_TRAIN = '''
import json, os, sys, tomllib
doc = tomllib.load(open(sys.argv[sys.argv.index("--config_file") + 1], "rb"))
config = {k: v for part in doc.values() if isinstance(part, dict) for k, v in part.items()}
os.makedirs(config["output_dir"], exist_ok=True)
open(os.path.join(config["output_dir"], config["output_name"] + ".safetensors"), "wb").write(b"\\x02\\x00\\x00\\x00\\x00\\x00\\x00\\x00{}")
json.dump({"argv": sys.argv, "config": config, "launch": os.environ["ACCELERATE_LAUNCH_ARGS"]}, open(os.environ["FLUX_RAN"], "w"))
'''


@pytest.mark.slow
def test_run_with_a_flux_folder_goes_to_flux_train_network_on_two_gpus(tmp_path, data_dir, source_photo, monkeypatch):
    import shutil

    base = fake_flux_base(tmp_path / "flux", "dev")
    donors = tmp_path / "donors"
    donors.mkdir()
    shutil.copy(data_dir / "donors" / "TaylorSwift14.jpeg", donors)
    sd = fake_sd_scripts(tmp_path / "sd-scripts")
    (sd / "flux_train_network.py").write_text(FLUX_TRAIN, encoding="utf-8")
    fake_accelerate(tmp_path / "bin")
    monkeypatch.setenv("PATH", path_with(tmp_path / "bin"))
    monkeypatch.setenv("FLUX_RAN", str(tmp_path / "ran.json"))
    out = tmp_path / "run"
    args = ["run", "--source", str(source_photo), "--donors", str(donors), "--out", str(out), "--random-weights",
            "--detector", "dlib", "--judge", "dlib", "--device", "cpu", "--caption-backend", "none",
            "--weights-dir", str(tmp_path / "weights"), "--base-model", str(base), "--sd-scripts", str(sd),
            "--gpus", "2", "--until", "train", "--set", f"kohya.tokenizer_cache_dir={tiny_config().kohya.tokenizer_cache_dir}"]
    assert main(args) == 0
    ran = json.loads((tmp_path / "ran.json").read_text())
    assert ran["argv"][0].endswith("flux_train_network.py")
    assert ran["launch"].startswith("--multi_gpu --num_processes 2 ")
    config = ran["config"]
    assert config["pretrained_model_name_or_path"] == str((base / "flux1-dev.safetensors").resolve())
    assert config["network_module"] == "networks.lora_flux" and config["t5xxl_max_token_length"] == 512
    gui = json.loads((out / "kohya_gui_lora.json").read_text())
    assert gui["flux1_checkbox"] is True and gui["num_processes"] == 2 and gui["multi_gpu"] is True


# --- captions: Florence-2 by default, the budget in T5 tokens ---------------------------------


def test_flux_captions_default_to_florence2_and_a_t5_budget(tmp_path):
    from builder.caption.base import backend_name
    from builder.caption.recaption import t5_budget
    from builder.caption.text import CaptionRules

    cfg = tiny_config()
    assert cfg.caption.backend == "auto" and backend_name(cfg) == "blip" and t5_budget(cfg) == 0  # SD 1.5
    for variant, budget in (("dev", 512), ("schnell", 256), ("chroma", 512)):
        cfg.paths.base_model = str(fake_flux_base(tmp_path / variant, variant))
        assert backend_name(cfg) == "florence2" and t5_budget(cfg) == budget
    cfg.caption.backend = "blip+wd14"
    assert backend_name(cfg) == "blip+wd14"  # a backend the user names is kept
    rules = CaptionRules.from_config(cfg.caption, 512)
    assert rules.max_tokens == 512  # not CLIP's 75
    with pytest.raises(ConfigError, match=r"must be 1\.\.225"):
        CaptionRules(max_tokens=300)


def test_captions_over_the_t5_budget_are_named(tmp_path, capsys):
    from builder.caption.t5_tokenizer import load_t5_counter
    from builder.kohya.toml import check_t5_budget

    cfg = tiny_config()
    counter = load_t5_counter("", "", cfg.kohya.tokenizer_cache_dir)
    short, long = "ohwx woman smiling", "ohwx woman, " + "a photo of a woman smiling in a park, " * 12
    assert counter.count(short) < 20 < counter.count(long)
    assert counter.count(short) == len(counter.tokenizer(short)["input_ids"])  # </s> counted, as T5 reads it
    assert check_t5_budget([short, long], cfg, 20) == 1
    assert "1 of 2 captions are longer than t5xxl_max_token_length = 20" in " ".join(capsys.readouterr().err.split())
    assert check_t5_budget([short, long], cfg, 512) == 0


def test_the_t5_tokenizer_comes_from_sd_scripts_or_the_hub_and_is_kept_for_sd_scripts(tmp_path, monkeypatch):
    from builder.caption import t5_tokenizer as T
    from tests.fixtures.t5 import write_t5_repo, write_t5_tokenizer

    monkeypatch.setattr(T, "_hub_folder", lambda: None)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(BuilderError, match=r"not cached here and downloads are off; set paths.sd_scripts"):
        T.ensure_t5_tokenizer(str(tmp_path / "w1"))
    sd = tmp_path / "sd-scripts"
    write_t5_tokenizer(sd / "configs" / "t5_old")
    folder = T.ensure_t5_tokenizer(str(tmp_path / "w1"), str(sd))
    assert folder.name == "google_t5-v1_1-xxl" and (folder / "tokenizer.json").is_file()
    assert T.load_t5_tokenizer(folder)("a photo")["input_ids"] == T.load_t5_tokenizer(sd / "configs" / "t5_old")("a photo")["input_ids"]
    # The hub download: google/t5-v1_1-xxl's tokenizer files through hf_hub_download.
    hub = write_t5_repo(tmp_path / "hub")
    asked = []
    import huggingface_hub.constants

    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)

    def fake_download(repo, name):
        asked.append((repo, name))
        return str(hub / name)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_download)
    made = T.ensure_t5_tokenizer(str(tmp_path / "w2"))  # converted from spiece.model, saved for sd-scripts
    assert (made / "tokenizer.json").is_file()
    assert T.load_t5_tokenizer(made)("a photo")["input_ids"] == T.load_t5_tokenizer(folder)("a photo")["input_ids"]
    assert asked == [("google/t5-v1_1-xxl", f) for f in T.T5_FILES]
    with pytest.raises(BuilderError, match=r"not a T5 tokenizer"):
        T.load_t5_tokenizer(Path(tiny_config().kohya.tokenizer_cache_dir) / "openai_clip-vit-large-patch14")
