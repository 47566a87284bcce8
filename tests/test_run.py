"""`launch.py run` end to end: build -> caption -> train (a stand-in sd-scripts) -> sample (tiny SD).

The photos, detector, judge and every swap/restore/parse network are real (random
weights); sd-scripts is replaced by a script that writes the LoRA files a real run would
(kohya key format, for the tiny UNet), because sd-scripts cannot be installed in CI.
"""

from __future__ import annotations

import json
import shutil
import socket
import textwrap
import time
from pathlib import Path

import pytest
import torch

import launch
from builder.manifest import read_jsonl
from tests.fixtures.clip import write_clip_tokenizer
from tests.fixtures.kohya import fake_accelerate, path_with
from tests.fixtures.tiny_sd import build_tiny_pipeline, save_tiny_pipeline, write_kohya_lora

DONORS = ("TaylorSwift14.jpeg", "TaylorSwift111.jpeg")

# Writes what sd-scripts' train_network.py leaves in output_dir for 2 epochs, from a LoRA
# the test made for the tiny UNet, and counts its runs so the test can see it ran once.
TRAIN_NETWORK = textwrap.dedent('''
    import os, shutil, sys, tomllib
    doc = tomllib.load(open(sys.argv[2], "rb"))
    config = {k: v for part in doc.values() if isinstance(part, dict) for k, v in part.items()}
    out, name = config["output_dir"], config["output_name"]
    os.makedirs(out, exist_ok=True)
    print("  total optimization steps: 2", flush=True)
    for step in (1, 2):
        sys.stderr.write(f"\\rsteps: {step * 50}%|#####     | {step}/2 [00:01<00:01]")
    shutil.copy(os.environ["LORA_FOR_TEST"], os.path.join(out, name + "-000001.safetensors"))
    shutil.copy(os.environ["LORA_FOR_TEST"], os.path.join(out, name + ".safetensors"))
    with open(os.environ["TRAIN_COUNTER"], "a") as fh:
        fh.write("ran\\n")
''')


@pytest.fixture(scope="module")
def world(tmp_path_factory, data_dir):
    root = tmp_path_factory.mktemp("world")
    donors = root / "donors"
    donors.mkdir()
    for name in DONORS:
        shutil.copy(data_dir / "donors" / name, donors / name)
    base = save_tiny_pipeline(root / "tiny_sd")
    pipe = build_tiny_pipeline(tokenizer_dir=root / "tiny_tokenizer")
    lora = write_kohya_lora(pipe.unet, pipe.text_encoder, root / "lora.safetensors")
    sd_scripts = root / "sd-scripts"
    sd_scripts.mkdir()
    (sd_scripts / "train_network.py").write_text(TRAIN_NETWORK, encoding="utf-8")
    bin_dir = root / "bin"
    fake_accelerate(bin_dir)
    clip = write_clip_tokenizer(root / "clip")
    one_donor = root / "one_donor"
    one_donor.mkdir()
    shutil.copy(donors / DONORS[0], one_donor / DONORS[0])
    return {"root": root, "donors": donors, "one_donor": one_donor, "base": base, "lora": lora, "sd_scripts": sd_scripts, "bin": bin_dir, "clip": clip}


def run_args(world, out: Path, source: Path, *extra: str) -> list[str]:
    return [
        "run", "--source", str(source), "--donors", str(world["donors"]), "--out", str(out),
        "--random-weights", "--detector", "dlib", "--judge", "dlib", "--device", "cpu",
        "--caption-backend", "none", "--base-model", str(world["base"]),
        "--set", f"caption.clip_tokenizer={world['clip']}",
        "--set", "kohya.epochs=2", "--set", "sample.steps=2", "--set", "sample.width=64",
        "--set", "sample.height=64", "--set", "sample.seeds=1",
        "--set", f"kohya.tokenizer_cache_dir={world['root']}",
        "--set", "dataset.closeups=false",  # one record per photo here; close-ups: test_build
        *extra,
    ]  # fmt: skip


@pytest.fixture(scope="module")
def env(world):
    mp = pytest.MonkeyPatch()
    mp.setenv("PATH", path_with(world["bin"]))
    mp.setenv("LORA_FOR_TEST", str(world["lora"]))
    mp.setenv("TRAIN_COUNTER", str(world["root"] / "train_runs.txt"))
    previous = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models: threads cost more than they give
    yield
    torch.set_num_threads(previous)
    mp.undo()


def plumbing_args(world, out: Path, source: Path, *extra: str) -> list[str]:
    """The README's plumbing check: random weights, no --base-model, nothing to download (one donor)."""
    return [
        "run", "--source", str(source), "--donors", str(world["one_donor"]), "--out", str(out),
        "--random-weights", "--detector", "dlib", "--judge", "dlib", "--caption-backend", "none",
        "--device", "cpu", "--weights-dir", str(world["root"] / "weights"),
        "--set", "kohya.epochs=2", "--set", "sample.steps=2", "--set", "sample.width=64",
        "--set", "sample.height=64", "--set", "sample.seeds=1",
        *extra,
    ]  # fmt: skip


def test_run_without_sd_scripts_fails_in_seconds_before_touching_a_photo(world, env, tmp_path, source_photo, capsys):
    out = tmp_path / "run"
    start = time.monotonic()
    rc = launch.main(plumbing_args(world, out, source_photo, "--until", "train"))
    assert time.monotonic() - start < 10
    assert rc != 0
    assert "sd-scripts checkout not given: pass --sd-scripts DIR" in capsys.readouterr().err
    assert not out.exists()  # no result, no manifest, no folder
    rc = launch.main(plumbing_args(world, out, source_photo, "--until", "train", "--sd-scripts", str(world["root"] / "missing")))
    assert rc != 0 and "does not exist" in capsys.readouterr().err and not out.exists()


@pytest.mark.slow
def test_plumbing_check_trains_and_samples_on_the_generated_random_sd15_with_no_network(
    world, env, tmp_path, source_photo, monkeypatch
):
    from builder.families import sd15
    from tests.fixtures.clip import bpe_path
    from tests.test_base_model import TINY

    # The product generates SD 1.5's real sizes; the test the same architecture, tiny.
    monkeypatch.setattr(sd15, "SD15", TINY)
    twin = sd15.write_random_sd15(tmp_path / "twin", bpe_path(), seed=0, sizes=TINY)
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(twin, safety_checker=None)
    monkeypatch.setenv("LORA_FOR_TEST", str(write_kohya_lora(pipe.unet, pipe.text_encoder, tmp_path / "lora.safetensors")))
    monkeypatch.setenv("TRAIN_COUNTER", str(tmp_path / "train_runs.txt"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(socket.socket, "connect", no_network(socket.socket.connect))

    out = tmp_path / "run"
    # No restorer and no parsing: the build's own models are tested elsewhere; this is about the base model.
    fast = ("--restorer", "none", "--no-mouth", "--set", "swap.paste_mask=box")
    assert launch.main(plumbing_args(world, out, source_photo, "--sd-scripts", str(world["sd_scripts"]), *fast)) == 0
    generated = world["root"] / "weights" / "sd" / "random-sd15-seed0"
    assert (generated / "model_index.json").is_file()
    assert f'pretrained_model_name_or_path = "{generated}"' in (out / "config.toml").read_text(encoding="utf-8")
    report = json.loads((out / "samples" / "report.json").read_text(encoding="utf-8"))
    assert report["complete"] is True and report["base_model"] == str(generated)
    assert len({img["epoch"] for img in report["images"]}) == 3  # base-model control + epoch 1 + final
    assert (tmp_path / "train_runs.txt").read_text().count("ran") == 1


def no_network(connect):  # type: ignore[no-untyped-def]
    """socket.connect that refuses every address but this machine's own."""
    def guarded(sock, address):  # type: ignore[no-untyped-def]
        host = address[0] if isinstance(address, tuple) else ""
        if isinstance(address, tuple) and host not in ("127.0.0.1", "::1", "localhost"):
            raise OSError(f"test: no network ({host})")
        return connect(sock, address)
    return guarded


def test_run_end_to_end_then_again_without_redoing_anything(world, env, tmp_path, source_photo):
    out = tmp_path / "run"
    args = run_args(world, out, source_photo, "--sd-scripts", str(world["sd_scripts"]))
    assert launch.main(args) == 0

    records = read_jsonl(out / "manifest.jsonl")
    assert len(records) == len(DONORS) and all(r["status"] == "kept" for r in records)
    folders = [p.name for p in (out / "img").iterdir()]
    assert len(folders) == 1 and folders[0].endswith("_ohwx woman")
    for name in ("dataset_config.toml", "config.toml", "sample_prompts.txt", "kohya_gui_lora.json", "contact_sheet.png"):
        assert (out / name).is_file(), name
    report = json.loads((out / "samples" / "report.json").read_text(encoding="utf-8"))
    assert report["complete"] is True
    assert (out / "samples" / "grid.png").is_file()
    epochs = {img["epoch"] for img in report["images"]}
    assert len(epochs) == 3  # base-model control + epoch 1 + final

    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file() and "log" not in p.parts}
    assert launch.main(args) == 0
    assert (world["root"] / "train_runs.txt").read_text().count("ran") == 1
    again = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file() and "log" not in p.parts}
    changed = sorted(str(p.relative_to(out)) for p in again if again[p] != stamps.get(p))
    # Summaries (manifest, TOMLs, sheets, grid, report) are rewritten atomically from the same
    # data; no result, training image, LoRA or rendered sample may be made again.
    redone = [
        c for c in changed
        if c.startswith(("results/", "img/", "model/")) or (c.startswith("samples/") and c.count("/") > 1)
    ]
    assert redone == [], redone
    assert any(c.startswith("samples/") and c.count("/") > 1 for c in map(lambda p: str(p.relative_to(out)), again))
