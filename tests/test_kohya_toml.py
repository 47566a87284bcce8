"""The generated TOMLs, prompts and GUI JSON, held to the recorded sd-scripts schema."""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path

import pytest

from builder.errors import BuilderError, ConfigError
from builder.families import sample_settings
from builder.kohya.files import write_kohya_files
from builder.kohya.presets import available_presets, load_preset
from builder.kohya.schema import dataset_keys, gui_keys, schema, train_arguments
from builder.kohya.toml import dumps, keep_tokens_for
from tests.fixtures.kohya import make_images, tiny_config, tokenizer_cache


def flat_config(path: Path) -> dict:
    """sd-scripts train_util.read_config_from_file: each table's keys merged into one namespace."""
    flat: dict = {}
    for key, value in tomllib.loads(path.read_text(encoding="utf-8")).items():
        items = value.items() if isinstance(value, dict) else [(key, value)]
        for k, v in items:
            assert k not in flat, f"{k} set twice"
            flat[k] = v
    return flat


@pytest.fixture
def run(tmp_path: Path):
    cfg = tiny_config()
    cfg.paths.base_model = str(tmp_path / "sd15.safetensors")
    make_images(tmp_path, cfg, 5)
    return tmp_path, cfg, write_kohya_files(tmp_path, cfg)


def test_schema_record_is_the_verified_commit() -> None:
    record = schema()
    assert re.fullmatch(r"[0-9a-f]{40}", record["sd_scripts"]["commit"])
    # Facts the mission states about that schema, so a bad re-record is caught.
    assert "resolution" in dataset_keys("general") and "resolution" not in dataset_keys("subsets")
    assert "bucket_reso_steps" not in dataset_keys("subsets")
    assert all("cache_latents" not in dataset_keys(level) for level in ("general", "datasets", "subsets"))
    assert {"image_dir", "is_reg", "class_tokens", "num_repeats"} <= dataset_keys("subsets")
    args = train_arguments()
    assert args["resolution"]["type"] == "str"
    assert args["max_token_length"]["choices"] == [None, 150, 225]
    assert args["cache_latents"]["kind"] == "flag"
    assert "network_module" in args and "tokenizer_cache_dir" in args


def test_dataset_toml_has_only_allowed_keys_at_allowed_levels(run) -> None:
    _, _, files = run
    doc = tomllib.loads(files.dataset_config.read_text(encoding="utf-8"))
    assert set(doc) == {"general", "datasets"}
    assert set(doc["general"]) <= dataset_keys("general")
    for ds in doc["datasets"]:
        assert set(ds) - {"subsets"} <= dataset_keys("datasets")
        for subset in ds["subsets"]:
            assert set(subset) <= dataset_keys("subsets")
            assert Path(subset["image_dir"]).is_dir()
    subset = doc["datasets"][0]["subsets"][0]
    assert subset["num_repeats"] == files.dataset.repeats == 32
    assert subset["class_tokens"] == "ohwx woman"
    assert doc["general"]["bucket_reso_steps"] % 64 == 0
    assert doc["general"]["keep_tokens"] == 2 and doc["general"]["shuffle_caption"] is True


def test_caption_extension_in_toml_matches_files_on_disk(tmp_path: Path) -> None:
    for ext in (".txt", ".caption"):
        out = tmp_path / ext.strip(".")
        cfg = tiny_config()
        cfg.caption.extension = ext
        make_images(out, cfg, 3)
        files = write_kohya_files(out, cfg)
        doc = tomllib.loads(files.dataset_config.read_text(encoding="utf-8"))
        written = doc["general"]["caption_extension"]
        image_dir = Path(doc["datasets"][0]["subsets"][0]["image_dir"])
        images = sorted(image_dir.glob("*.png"))
        assert written == ext
        assert images and all(p.with_suffix(written).is_file() for p in images)


def test_training_toml_keys_are_train_network_arguments(run) -> None:
    out, _, files = run
    flat = flat_config(files.config)
    args = train_arguments()
    assert set(flat) <= set(args), set(flat) - set(args)
    for key, value in flat.items():
        if args[key]["kind"] == "flag":
            assert value is True or value is False, key
        if "choices" in args[key]:
            assert value in args[key]["choices"], key
    assert isinstance(flat["resolution"], str)
    w, h = map(int, flat["resolution"].split(","))
    assert (w, h) == (512, 512)
    assert flat["network_module"] == "networks.lora"
    assert flat["save_model_as"] == "safetensors" and flat["save_every_n_epochs"] == 1
    assert flat["output_dir"] == str((out / "model").resolve())
    assert flat["logging_dir"] == str((out / "log").resolve())
    assert Path(flat["dataset_config"]) == files.dataset_config.resolve()
    assert Path(flat["sample_prompts"]).is_file()
    assert Path(flat["tokenizer_cache_dir"], "openai_clip-vit-large-patch14", "vocab.json").is_file()
    assert flat["sdpa"] is True and "xformers" not in flat
    assert "max_token_length" not in flat  # 75 is sd-scripts' default (choices: None, 150, 225)


def test_tokenizer_cache_dir_defaults_to_a_filled_folder_in_the_weights_cache(tmp_path: Path) -> None:
    cfg = tiny_config()
    cfg.kohya.tokenizer_cache_dir = ""
    cfg.runtime.weights_dir = str(tmp_path / "weights")
    make_images(tmp_path / "a", cfg, 2)
    flat = flat_config(write_kohya_files(tmp_path / "a", cfg).config)
    cache = (tmp_path / "weights" / "sd-scripts-tokenizer").resolve()
    assert flat["tokenizer_cache_dir"] == str(cache)
    # What sd-scripts loads from there (strategy_base._load_tokenizer: the repo id with "/" as "_").
    from transformers import CLIPTokenizer

    tok = CLIPTokenizer.from_pretrained(str(cache / "openai_clip-vit-large-patch14"))
    assert len(tok) == 49408 and tok.model_max_length == 77


def test_tokenizer_cache_dir_without_bpe_file_is_left_for_sd_scripts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from builder.caption import clip_tokenizer

    monkeypatch.setattr(clip_tokenizer, "open_clip_bpe", lambda: None)
    cfg = tiny_config()
    cfg.kohya.tokenizer_cache_dir = ""
    cfg.runtime.weights_dir = str(tmp_path / "weights")
    cfg.caption.clip_tokenizer = str(tokenizer_cache() / "openai_clip-vit-large-patch14")
    make_images(tmp_path / "a", cfg, 2)
    flat = flat_config(write_kohya_files(tmp_path / "a", cfg).config)
    assert flat["tokenizer_cache_dir"] == str((tmp_path / "weights" / "sd-scripts-tokenizer").resolve())
    assert not (tmp_path / "weights" / "sd-scripts-tokenizer").exists()
    out = " ".join(capsys.readouterr().err.split())
    assert "--fetch clip_bpe" in out and "will download the tokenizer" in out


def test_presets_are_valid_and_user_config_overrides_them(tmp_path: Path) -> None:
    assert {"character_sd15", "lowvram_sd15", "character_sdxl", "lowvram_sdxl"} <= set(available_presets())
    for family in ("sd15", "sdxl"):
        for name in available_presets(family):
            preset = load_preset(name, family)
            assert preset.family == family
            assert set(preset.dataset) <= dataset_keys("general")
            assert set(preset.train) <= set(train_arguments(family))
    cfg = tiny_config()
    cfg.kohya.preset = "lowvram_sd15"
    cfg.kohya.network_dim = 8
    cfg.kohya.extra_args = ["noise_offset=0.1", "--network_args=['conv_dim=4']"]
    make_images(tmp_path, cfg, 2)
    flat = flat_config(write_kohya_files(tmp_path, cfg).config)
    assert flat["gradient_checkpointing"] is True and flat["cache_latents_to_disk"] is True
    assert flat["network_dim"] == 8
    assert flat["noise_offset"] == 0.1
    assert flat["network_args"] == ["conv_dim=4"]


def test_no_loader_workers_turns_the_presets_persistent_workers_off(tmp_path: Path) -> None:
    """sd-scripts exits with "persistent_workers option needs num_workers > 0" otherwise (seen in a real run)."""
    cfg = tiny_config()
    assert load_preset("character_sd15").train["persistent_data_loader_workers"] is True
    cfg.kohya.extra_args = ["max_data_loader_n_workers=0"]
    make_images(tmp_path, cfg, 2)
    flat = flat_config(write_kohya_files(tmp_path, cfg).config)
    assert flat["max_data_loader_n_workers"] == 0 and flat["persistent_data_loader_workers"] is False


def test_typo_in_extra_args_is_an_error_not_silently_ignored(tmp_path: Path) -> None:
    cfg = tiny_config()
    cfg.kohya.extra_args = ["noise_ofset=0.1"]
    make_images(tmp_path, cfg, 2)
    with pytest.raises(ConfigError, match="did you mean 'noise_offset'"):
        write_kohya_files(tmp_path, cfg)
    cfg.kohya.extra_args = ["cache_latents=1"]
    with pytest.raises(ConfigError, match="on/off flag"):
        write_kohya_files(tmp_path, cfg)


def test_preset_may_not_set_what_the_config_sets(tmp_path: Path) -> None:
    bad = tmp_path / "mine.toml"
    bad.write_text("[train]\nnetwork_dim = 4\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="comes from the \\[kohya\\] config"):
        load_preset(str(bad))
    bad.write_text("[dataset]\nbucket_reso_steps = 32\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="multiple of 64"):
        load_preset(str(bad))
    bad.write_text("[dataset]\ncache_latents = true\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="not a dataset_config"):
        load_preset(str(bad))


def test_max_token_length_follows_the_longest_caption(tmp_path: Path) -> None:
    cfg = tiny_config()
    long = "ohwx, woman, " + ", ".join(f"detail number {i}" for i in range(25))  # ~105 CLIP tokens
    make_images(tmp_path / "a", cfg, 2)
    make_images(tmp_path / "a", cfg, 1, caption=long)
    assert flat_config(write_kohya_files(tmp_path / "a", cfg).config)["max_token_length"] == 150
    make_images(tmp_path / "b", cfg, 2)
    assert "max_token_length" not in flat_config(write_kohya_files(tmp_path / "b", cfg).config)


def test_max_token_length_forced_and_checked(tmp_path: Path) -> None:
    cfg = tiny_config()
    cfg.kohya.max_token_length = 150
    make_images(tmp_path, cfg, 2)
    flat = flat_config(write_kohya_files(tmp_path, cfg).config)
    assert flat["max_token_length"] == 150
    cfg.kohya.max_token_length = 100
    with pytest.raises(ConfigError, match="75, 150 or 225"):
        write_kohya_files(tmp_path, cfg)


@pytest.mark.parametrize("captions,keep", [
    (["ohwx, woman, smiling"], 2),
    (["ohwx woman, smiling, outdoors"], 1),
    (["ohwx, a woman standing", "ohwx, woman, x"], 2),
    (["a photo, ohwx, woman"], 3),
    (["no trigger here"], 0),
    (["OHWX, Woman, x"], 2),
    (["ohwxy, woman"], 0),  # a longer word is not the trigger
])
def test_keep_tokens_pins_trigger_and_class(captions, keep) -> None:
    assert keep_tokens_for(captions, "ohwx", "woman") == keep


def test_empty_caption_file_is_refused(tmp_path: Path) -> None:
    cfg = tiny_config()
    images = make_images(tmp_path, cfg, 2)
    images[0].with_suffix(".txt").write_text("\n", encoding="utf-8")
    with pytest.raises(BuilderError, match="empty caption"):
        write_kohya_files(tmp_path, cfg)


def sd_scripts_line_to_prompt_dict(line: str) -> dict:
    """sd-scripts library/train_util.py line_to_prompt_dict (48d368fa), the options used here."""
    parts = line.split(" --")
    d: dict = {"prompt": parts[0]}
    for part in parts[1:]:
        for flag, key, conv in (("w", "width", int), ("h", "height", int), ("d", "seed", int),
                                ("s", "sample_steps", int), ("l", "scale", float), ("n", "negative_prompt", str)):
            m = re.match(rf"{flag} (.+)", part)
            if m:
                d[key] = conv(m.group(1))
    return d


def test_sample_prompts_use_kohya_options_and_the_trigger(run) -> None:
    _, cfg, files = run
    lines = [ln for ln in files.sample_prompts.read_text(encoding="utf-8").splitlines()
             if ln.strip() and not ln.startswith("#")]
    assert len(lines) >= 3
    for line in lines:
        d = sd_scripts_line_to_prompt_dict(line)
        assert d["prompt"].startswith("ohwx woman, ")
        assert d["width"] == d["height"] == 512 and d["width"] % 64 == 0
        assert d["seed"] in cfg.sample.seeds
        settings = sample_settings(cfg, "sd15")
        assert d["scale"] == settings.guidance and d["sample_steps"] == settings.steps
        assert d["negative_prompt"]


def test_gui_json_uses_only_kohya_ss_parameter_names(run) -> None:
    out, _, files = run
    gui = json.loads(files.gui_config.read_text(encoding="utf-8"))
    assert set(gui) <= gui_keys(), set(gui) - gui_keys()
    assert gui["train_data_dir"] == str((out / "img").resolve())
    assert gui["LoRA_type"] == "Standard" and gui["xformers"] == "sdpa"
    assert gui["max_resolution"] == "512,512" and gui["epoch"] == 10
    assert gui["caption_extension"] == ".txt" and gui["keep_tokens"] == 2
    assert "--tokenizer_cache_dir" in gui["additional_parameters"]
    assert gui["sample_prompts"].splitlines()[0].startswith("ohwx woman")


def test_toml_writer_round_trips_awkward_strings() -> None:
    doc = {"a": 'C:\\Users\\me\\"q"', "b": "Zoë — 東京", "c": 1e-05, "d": [1, 2], "t": {"x": True},
           "arr": [{"k": 1, "sub": [{"z": "p"}]}, {"k": 2}]}
    assert tomllib.loads(dumps(doc, header="hi\nthere")) == doc
