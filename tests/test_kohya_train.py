"""`launch.py train`: the checks, the command, streaming, progress and failure reporting.

A fake sd-scripts (train_network.py printing sd-scripts-style step lines) and a fake
``accelerate`` on PATH stand in for the real ones.
"""

from __future__ import annotations

import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from builder.errors import BuilderError
from builder.kohya.train import (
    check_base_model,
    check_sd_scripts,
    find_accelerate,
    make_command,
    run_training,
)
from launch import main
from tests.fixtures.kohya import (
    fake_accelerate,
    fake_base_model,
    fake_sd_scripts,
    make_images,
    path_with,
    tiny_config,
)


def err_text(capsys: pytest.CaptureFixture) -> str:
    """stderr with rich's line wrapping undone."""
    return " ".join(capsys.readouterr().err.split())


@pytest.fixture
def setup(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    out = tmp_path / "run"
    make_images(out, tiny_config(), 3)
    sd = fake_sd_scripts(tmp_path / "sd-scripts")
    bin_dir = tmp_path / "bin"
    fake_accelerate(bin_dir)
    monkeypatch.setenv("PATH", path_with(bin_dir))
    model = fake_base_model(tmp_path)
    return out, sd, model, bin_dir


def test_dry_run_prints_a_runnable_command(setup, capsys) -> None:
    out, sd, model, bin_dir = setup
    rc = main(["train", str(out), "--sd-scripts", str(sd), "--base-model", str(model), "--dry-run"])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    assert (out / "config.toml").is_file() and (out / "dataset_config.toml").is_file()
    assert not (out / "log" / "train.log").exists()  # nothing ran
    command = captured.out.strip().splitlines()[-1]
    cd, _, rest = command.partition(" && ")
    argv = shlex.split(rest)
    assert shlex.split(cd) == ["cd", str(sd.resolve())]
    assert argv[:4] == [str(bin_dir / "accelerate"), "launch", "--num_cpu_threads_per_process", "1"]
    assert argv[4:] == [str(sd.resolve() / "train_network.py"), "--config_file", str((out / "config.toml").resolve())]
    done = subprocess.run(command, shell=True, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert f"cwd {sd.resolve()}" in done.stdout and "exists True" in done.stdout


def test_missing_sd_scripts_has_its_own_error(tmp_path: Path) -> None:
    with pytest.raises(BuilderError, match="sd-scripts checkout not given"):
        check_sd_scripts("")
    with pytest.raises(BuilderError, match="does not exist"):
        check_sd_scripts(tmp_path / "nope")
    with pytest.raises(BuilderError, match=r"no train_network\.py"):
        check_sd_scripts(tmp_path)


def test_missing_base_model_has_its_own_error(tmp_path: Path) -> None:
    with pytest.raises(BuilderError, match="base model not given"):
        check_base_model("")
    with pytest.raises(BuilderError, match=r"base model .*missing\.safetensors does not exist"):
        check_base_model(str(tmp_path / "missing.safetensors"))
    with pytest.raises(BuilderError, match=r"is not a diffusers pipeline \(no model_index\.json\) nor a FLUX/Chroma set"):
        check_base_model(str(tmp_path))


def test_missing_accelerate_has_its_own_error(tmp_path: Path) -> None:
    sd = fake_sd_scripts(tmp_path / "sd")
    broken_python = tmp_path / "py" / "python"
    broken_python.parent.mkdir()
    broken_python.write_text("#!/bin/sh\nexit 1\n")
    broken_python.chmod(0o755)
    with pytest.raises(BuilderError, match="accelerate not found"):
        find_accelerate(sd, "", search_path=str(tmp_path / "empty"), python=str(broken_python))
    with pytest.raises(BuilderError, match=r"kohya\.accelerate = .*no such file"):
        find_accelerate(sd, str(tmp_path / "nope"))
    # sd-scripts' own venv wins over PATH.
    venv_acc = fake_accelerate(sd / "venv" / "bin")
    assert find_accelerate(sd, "", search_path=str(tmp_path / "empty"))[:1] == [str(venv_acc)]
    # No executable anywhere, but the Python has the package: `python -m` its launcher.
    wrapper = tmp_path / "py2" / "python"
    wrapper.parent.mkdir()
    wrapper.write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
    wrapper.chmod(0o755)
    assert find_accelerate(tmp_path / "sd2", "", search_path="", python=str(wrapper)) == [
        str(wrapper), "-m", "accelerate.commands.launch"]


def test_cli_reports_each_missing_piece(setup, tmp_path: Path, capsys, monkeypatch) -> None:
    out, sd, model, _ = setup
    assert main(["train", str(out), "--base-model", str(model), "--dry-run"]) == 2
    assert "sd-scripts checkout not given" in err_text(capsys)
    assert main(["train", str(out), "--sd-scripts", str(sd), "--base-model", str(tmp_path / "x.ckpt"),
                 "--dry-run"]) == 2
    assert "x.ckpt does not exist" in err_text(capsys)
    assert main(["train", str(out), "--sd-scripts", str(sd), "--accelerate", str(tmp_path / "acc"),
                 "--dry-run"]) == 2
    assert "no such file" in err_text(capsys)


def test_training_streams_log_and_follows_the_step_counter(setup, monkeypatch) -> None:
    out, sd, model, bin_dir = setup
    assert main(["train", str(out), "--sd-scripts", str(sd), "--base-model", str(model), "--dry-run"]) == 0
    monkeypatch.setenv("FAKE_STEPS", "6")
    cmd = make_command(out, sd.resolve(), [str(bin_dir / "accelerate"), "launch"])
    result = run_training(cmd)
    assert result.returncode == 0
    assert (result.steps_done, result.total_steps) == (6, 6)
    log = (out / "log" / "train.log").read_text(encoding="utf-8")
    assert "学習ステップ数: 6" in log and "epoch 1/1" in log
    assert log.count("steps: ") == 6 and "| 6/6 [" in log  # one line per new step, not per redraw
    assert log.rstrip().endswith("=== exit code 0")


def test_training_failure_exits_nonzero_with_tail_and_command(setup, monkeypatch, capsys) -> None:
    out, sd, model, _ = setup
    monkeypatch.setenv("FAKE_EXIT", "3")
    rc = main(["train", str(out), "--sd-scripts", str(sd), "--base-model", str(model)])
    captured = capsys.readouterr()
    err = " ".join(captured.err.split())
    assert rc == 3
    assert "training failed" in err and "CUDA out of memory (fake)" in err
    assert "to run it by hand" in err
    assert captured.out.strip().splitlines()[-1].endswith(f"--config_file {shlex.quote(str((out / 'config.toml').resolve()))}")


def test_existing_config_is_kept_unless_asked(setup, capsys) -> None:
    out, sd, model, _ = setup
    base = ["train", str(out), "--sd-scripts", str(sd), "--dry-run"]
    assert main([*base, "--base-model", str(model)]) == 0
    config = out / "config.toml"
    edited = config.read_text(encoding="utf-8").replace("network_dim = 32", "network_dim = 7")
    config.write_text(edited, encoding="utf-8")
    assert main(base) == 0
    assert "network_dim = 7" in config.read_text(encoding="utf-8")
    assert main([*base, "--write-configs", "--base-model", str(model)]) == 0
    assert "network_dim = 32" in config.read_text(encoding="utf-8")
