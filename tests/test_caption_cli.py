"""``launch.py caption`` end to end, in process: a random-weight BLIP of the real class with
BLIP's real tokenizer, a real CLIP tokenizer counting tokens, and real donor photos."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import cv2
import pytest

import launch
from builder.caption import base, blip
from builder.caption.recaption import recaption
from builder.caption.text import load_clip_counter
from builder.config import load_toml
from tests.fixtures.blip import write_small_blip
from tests.fixtures.clip import write_clip_tokenizer
from tests.fixtures.threads import torch_threads

KOHYA = "10_ohwx woman"


@pytest.fixture(autouse=True, scope="module")
def one_thread() -> Iterator[None]:
    with torch_threads(1):
        yield


@pytest.fixture(scope="module")
def assets(tmp_path_factory, donor_photos) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("caption_assets")
    photos = root / "photos"
    photos.mkdir()
    for i, path in enumerate(donor_photos[:4]):
        im = cv2.imread(str(path))
        small = cv2.resize(im, (80, round(80 * im.shape[0] / im.shape[1])), interpolation=cv2.INTER_AREA)
        cv2.imwrite(str(photos / f"{i:04d}{'.jpg' if i % 2 else '.png'}"), small)
    clip = write_clip_tokenizer(root / "clip")
    model = write_small_blip(root / "blip")
    config = root / "config.toml"
    # min_length makes the random captioner write long captions, so the token limit has work to do.
    config.write_text(
        f'[caption]\nmodel = "{model}"\nclip_tokenizer = "{clip}"\nbatch_size = 3\nbeams = 1\n'
        "min_length = 60\nmax_length = 70\n",
        encoding="utf-8",
    )
    return {"photos": photos, "clip": clip, "config": config}


@pytest.fixture(scope="module")
def counter(assets):
    return load_clip_counter(str(assets["clip"]))


def make_run(tmp_path: Path, assets: dict[str, Path]) -> Path:
    """A kohya run folder as the GUI makes it: img/<N>_<trigger> <class>/, reg/, model/, log/."""
    run = tmp_path / "run"
    shutil.copytree(assets["photos"], run / "img" / KOHYA)
    shutil.copytree(assets["photos"], run / "reg" / "1_woman")
    (run / "model").mkdir()
    (run / "log").mkdir()
    return run


def caption_files(folder: Path, ext: str = ".txt") -> dict[str, str]:
    return {p.name: p.read_text(encoding="utf-8") for p in sorted(folder.glob(f"*{ext}"))}


def main(*args: str, config: Path) -> int:
    return launch.main(["caption", *args, "--config", str(config)])


def test_kohya_run_folder_gets_one_txt_per_image_with_trigger_and_class(tmp_path, assets, counter, capsys) -> None:
    run = make_run(tmp_path, assets)
    assert main(str(run), config=assets["config"]) == 0
    folder = run / "img" / KOHYA
    captions = caption_files(folder)
    assert sorted(captions) == ["0000.txt", "0001.txt", "0002.txt", "0003.txt"]
    for text in captions.values():
        assert text.startswith("ohwx, woman, ")
        assert len(text) > len("ohwx, woman, ") + 10  # BLIP's words follow
        assert counter.count(text) <= 75
    assert not list((run / "reg").rglob("*.txt"))  # regularisation images never learn the trigger
    err = capsys.readouterr().err
    assert "caption summary" in err
    assert "folder '10_ohwx woman'" in err


def test_token_limit_truncates_blip_words_only(tmp_path, assets, counter) -> None:
    run = make_run(tmp_path, assets)
    assert main(str(run), "--max-tokens", "20", "--tags", "film grain", config=assets["config"]) == 0
    for text in caption_files(run / "img" / KOHYA).values():
        assert counter.count(text) <= 20
        assert text.startswith("ohwx, woman, ")
        assert text.endswith(", film grain")
    # Untruncated, the same images caption longer than kohya's 75 tokens: the cut above did real work.
    assert main(str(run), "--mode", "overwrite", "--max-tokens", "225", config=assets["config"]) == 0
    assert max(counter.count(t) for t in caption_files(run / "img" / KOHYA).values()) > 75


def test_skip_keeps_existing_captions_byte_identical(tmp_path, assets) -> None:
    run = make_run(tmp_path, assets)
    folder = run / "img" / KOHYA
    mine = b"my own caption, ohne trigger\r\n  with odd spacing\n"
    (folder / "0001.txt").write_bytes(mine)
    stat = (folder / "0001.txt").stat()
    assert main(str(run), config=assets["config"]) == 0
    assert (folder / "0001.txt").read_bytes() == mine
    assert (folder / "0001.txt").stat().st_mtime_ns == stat.st_mtime_ns
    assert len(caption_files(folder)) == 4
    # A second run with everything captioned loads no model and changes nothing.
    before = {p.name: p.read_bytes() for p in folder.glob("*.txt")}
    summary = recaption(run, load_toml(assets["config"]), captioner_factory=_refuse)
    assert len(summary.skipped) == 4 and not summary.captioned
    assert {p.name: p.read_bytes() for p in folder.glob("*.txt")} == before


def _refuse(cfg, device):
    raise AssertionError("the captioning model must not be loaded")


def test_prefix_only_does_not_load_blip_and_is_idempotent(tmp_path, assets, monkeypatch) -> None:
    monkeypatch.setitem(base.CAPTIONERS, "blip", _refuse)
    monkeypatch.setattr(blip, "load_blip", _refuse)
    run = make_run(tmp_path, assets)
    folder = run / "img" / KOHYA
    (folder / "0000.txt").write_text("a woman in a park", encoding="utf-8")
    (folder / "0001.txt").write_text("ohwx, woman, a woman on a beach", encoding="utf-8")
    (folder / "0002.txt").write_text("Anna Smith smiling, outdoors", encoding="utf-8")
    args = (str(run), "--mode", "prefix-only", "--strip", "anna smith")
    assert main(*args, config=assets["config"]) == 0
    first = caption_files(folder)
    assert first == {
        "0000.txt": "ohwx, woman, a woman in a park",
        "0001.txt": "ohwx, woman, a woman on a beach",
        "0002.txt": "ohwx, woman, smiling, outdoors",
        "0003.txt": "ohwx, woman",
    }
    assert main(*args, config=assets["config"]) == 0
    assert caption_files(folder) == first


def test_corrupt_image_is_reported_by_name_and_the_rest_captioned(tmp_path, assets, capsys) -> None:
    run = make_run(tmp_path, assets)
    folder = run / "img" / KOHYA
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not a picture")
    (folder / "empty.jpg").write_bytes(b"")
    assert main(str(run), config=assets["config"]) == 0
    err = capsys.readouterr().err
    assert "broken.png" in err and "empty.jpg" in err
    captions = caption_files(folder)
    assert sorted(captions) == ["0000.txt", "0001.txt", "0002.txt", "0003.txt"]


def test_nothing_possible_exits_non_zero(tmp_path, assets) -> None:
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "a.png").write_bytes(b"nope")
    assert main(str(bad), config=assets["config"]) == 1
    assert main(str(tmp_path / "missing"), config=assets["config"]) == 2


def test_strip_words_removed_from_blip_captions(tmp_path, assets) -> None:
    run = make_run(tmp_path, assets)
    folder = run / "img" / KOHYA
    assert main(str(run), config=assets["config"]) == 0
    words = [w for t in caption_files(folder).values() for w in t.removeprefix("ohwx, woman, ").split()]
    common = max(set(words), key=words.count)  # a word the random captioner really writes
    assert main(str(run), "--mode", "overwrite", "--strip", common, config=assets["config"]) == 0
    for text in caption_files(folder).values():
        assert common.lower() not in text.lower().split()
        assert text.startswith("ohwx, woman, ")


def test_plain_nested_folder_with_flags_and_caption_extension(tmp_path, assets) -> None:
    plain = tmp_path / "plain"
    shutil.copytree(assets["photos"], plain / "a" / "b")
    shutil.copy(assets["photos"] / "0000.png", plain / "top.png")
    rc = main(str(plain), "--trigger", "sks", "--class-word", "man", "--extension", ".caption",
              "--backend", "none", config=assets["config"])
    assert rc == 0
    assert (plain / "top.caption").read_text() == "sks, man"
    assert sorted(caption_files(plain / "a" / "b", ".caption").values()) == ["sks, man"] * 4
    assert not list(plain.rglob("*.txt"))


def test_folder_itself_kohya_named_and_trigger_flag_wins(tmp_path, assets) -> None:
    folder = tmp_path / "5_zwx young woman"
    shutil.copytree(assets["photos"], folder)
    assert main(str(folder), "--backend", "none", config=assets["config"]) == 0
    assert set(caption_files(folder).values()) == {"zwx, young woman"}
    assert main(str(folder), "--backend", "none", "--mode", "overwrite", "--trigger", "qpx",
                config=assets["config"]) == 0
    assert set(caption_files(folder).values()) == {"qpx, young woman"}
