"""The typed configuration: defaults, TOML files, overrides, and the errors a typo gets."""

from __future__ import annotations

import dataclasses
import tomllib
from pathlib import Path

import pytest

import launch
from builder.cli.common import build_config
from builder.config import (
    Config,
    apply_overrides,
    from_dict,
    load_toml,
    parse_set,
    to_dict,
)
from builder.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]


def _toml(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "cfg.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_defaults_are_written_once_and_complete() -> None:
    cfg = Config()
    assert cfg.character.trigger == "ohwx" and cfg.character.class_word == "woman"
    assert cfg.swap.generator == "G_unet_2blocks" and cfg.swap.restorer == "codeformer"
    assert cfg.faces.insightface_pack == "antelopev2"
    assert cfg.caption.model == "Salesforce/blip-image-captioning-large"
    assert cfg.runtime.device == "auto" and cfg.runtime.random_weights is False
    # Mutable defaults are per instance, not shared between configs.
    other = Config()
    other.paths.source.append("x.png")
    assert cfg.paths.source == []
    assert set(to_dict(cfg)) == {f.name for f in dataclasses.fields(Config)}


def test_toml_overrides_only_what_it_names(tmp_path: Path) -> None:
    cfg = load_toml(_toml(tmp_path, """
[character]
trigger = "zxq"
[swap]
restorer = "gfpgan"
codeformer_w = 0.5
[quality]
min_face_px = 128
max_yaw = 45
[caption]
strip_words = ["Anna", "Smith"]
[sample]
seeds = [7, 8, 9]
"""))
    assert cfg.character.trigger == "zxq" and cfg.character.class_word == "woman"
    assert cfg.swap.restorer == "gfpgan" and cfg.swap.codeformer_w == 0.5
    assert cfg.quality.min_face_px == 128
    assert cfg.quality.max_yaw == 45.0 and isinstance(cfg.quality.max_yaw, float)  # int accepted as float
    assert cfg.caption.strip_words == ["Anna", "Smith"]
    assert cfg.sample.seeds == [7, 8, 9]
    assert cfg.swap.generator == "G_unet_2blocks"


def test_unknown_key_names_it_and_the_closest_valid_one(tmp_path: Path) -> None:
    path = _toml(tmp_path, "[swap]\nrestorrer = 'gfpgan'\n")
    with pytest.raises(ConfigError) as err:
        load_toml(path)
    msg = str(err.value)
    assert "swap.restorrer" in msg and "did you mean 'restorer'" in msg and str(path) in msg


def test_unknown_section_names_it_and_the_closest(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"unknown section \[quallity\].*'quality'"):
        load_toml(_toml(tmp_path, "[quallity]\nkeep = 3\n"))
    with pytest.raises(ConfigError, match=r"'trigger' must be a \[section\] table"):
        load_toml(_toml(tmp_path, "trigger = 'ohwx'\n"))


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("[quality]\nmin_face_px = 'big'\n", "quality.min_face_px must be an integer"),
        ("[quality]\nmin_face_px = 96.5\n", "quality.min_face_px must be an integer"),
        ("[quality]\nmin_face_px = true\n", "quality.min_face_px must be an integer"),
        ("[swap]\nmouth = 1\n", "swap.mouth must be true or false"),
        ("[swap]\ncodeformer_w = 'high'\n", "swap.codeformer_w must be a number"),
        ("[swap]\nrestorer = 'codeformer2'\n", "swap.restorer = 'codeformer2' is not one of"),
        ("[character]\ntrigger = 5\n", "character.trigger must be a string"),
        ("[sample]\nseeds = 3\n", "sample.seeds must be a list"),
        ("[sample]\nseeds = ['a']\n", "sample.seeds must be an integer"),
    ],
)
def test_bad_types_are_rejected_with_the_key(tmp_path: Path, text: str, fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment.replace("[", r"\[")):
        load_toml(_toml(tmp_path, text))


def test_missing_and_malformed_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_toml(tmp_path / "nope.toml")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_toml(_toml(tmp_path, "[swap\n"))


def test_set_items_are_converted_from_strings() -> None:
    items = parse_set(["quality.min_face_px=120", "swap.mouth=off", "swap.codeformer_w=0.9",
                       "caption.strip_words=Anna, Smith", "sample.seeds=3,4"])
    cfg = apply_overrides(Config(), items, origin="--set")
    assert cfg.quality.min_face_px == 120
    assert cfg.swap.mouth is False
    assert cfg.swap.codeformer_w == 0.9
    assert cfg.caption.strip_words == ["Anna", "Smith"]
    assert cfg.sample.seeds == [3, 4]
    with pytest.raises(ConfigError, match=r"must look like section\.key=value"):
        parse_set(["swap.mouth"])
    with pytest.raises(ConfigError, match=r"must look like section\.key=value"):
        apply_overrides(Config(), {"mouth": "true"})
    with pytest.raises(ConfigError, match=r"--set: unknown key 'swap.mouht'.*'mouth'"):
        apply_overrides(Config(), {"swap.mouht": "true"}, origin="--set")


def test_overrides_do_not_touch_the_base() -> None:
    base = Config()
    new = from_dict({"swap": {"restorer": "none"}}, base=base)
    assert new.swap.restorer == "none" and base.swap.restorer == "codeformer"
    assert new.swap is not base.swap


def test_precedence_default_then_file_then_set_then_flags(tmp_path: Path) -> None:
    path = _toml(tmp_path, "[runtime]\ndevice = 'cuda'\nseed = 5\nweights_dir = '/from/file'\n")
    args = launch.make_parser().parse_args([
        "--config", str(path), "--set", "runtime.seed=6", "--set", "runtime.device=cuda:1",
        "weights", "--device", "cpu", "--random-weights",
    ])
    cfg = build_config(args)
    assert cfg.runtime.seed == 6  # --set beats the file
    assert cfg.runtime.device == "cpu"  # a dedicated flag beats --set
    assert cfg.runtime.weights_dir == "/from/file"  # untouched by flags
    assert cfg.runtime.random_weights is True


@pytest.mark.parametrize("before", [True, False])
def test_global_flags_work_before_or_after_the_command(tmp_path: Path, before: bool) -> None:
    flags = ["--weights-dir", str(tmp_path)]
    argv = [*flags, "doctor"] if before else ["doctor", *flags]
    cfg = build_config(launch.make_parser().parse_args(argv))
    assert cfg.runtime.weights_dir == str(tmp_path)
    # A flag the user did not give leaves the default alone (argparse.SUPPRESS).
    assert cfg.runtime.random_weights is False and cfg.runtime.device == "auto"


def test_bad_flag_value_is_a_config_error(tmp_path: Path) -> None:
    args = launch.make_parser().parse_args(["weights", "--set", "swap.restorer=gfpgann"])
    with pytest.raises(ConfigError, match="'gfpgann' is not one of"):
        build_config(args)


def test_example_config_loads_and_covers_every_section() -> None:
    path = REPO / "examples" / "config.toml"
    cfg = load_toml(path)
    data = tomllib.loads(path.read_text(encoding="utf-8"))
    assert set(data) == {f.name for f in dataclasses.fields(Config)}
    assert cfg.paths.source == ["faces/"] and cfg.character.trigger == "ohwx"


def test_overridden_config_shares_no_lists_with_its_base() -> None:
    base = Config()
    new = apply_overrides(base, {"swap.mouth": "false"})
    new.caption.strip_words.append("Anna")
    new.paths.source.append("x.png")
    assert base.caption.strip_words == [] and base.paths.source == []
