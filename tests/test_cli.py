"""The command line as a user runs it (subprocess, the venv's Python), and doctor's checks."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import launch
from builder import weights as W
from builder.cli import COMMANDS, doctor

REPO = Path(__file__).resolve().parents[1]


def _run(*argv: str, weights_dir: Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, W.ENV_VAR: str(weights_dir), "HF_HUB_CACHE": str(weights_dir / "hub"),
           "HF_HUB_OFFLINE": "1", "COLUMNS": "200"}
    return subprocess.run([sys.executable, "launch.py", *argv], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=timeout)


def test_top_level_help_lists_every_command(tmp_path: Path) -> None:
    res = _run("--help", weights_dir=tmp_path)
    assert res.returncode == 0, res.stderr
    for name in COMMANDS:
        assert name in res.stdout
    assert "--random-weights" in res.stdout and "--config" in res.stdout


@pytest.mark.parametrize("command", ["weights", "doctor"])
def test_command_help(tmp_path: Path, command: str) -> None:
    res = _run(command, "--help", weights_dir=tmp_path)
    assert res.returncode == 0, res.stderr
    assert f"launch.py {command}" in res.stdout
    assert "--weights-dir" in res.stdout  # global flags are accepted after the command too


def test_weights_lists_every_entry_offline(tmp_path: Path) -> None:
    res = _run("weights", weights_dir=tmp_path)
    assert res.returncode == 0, res.stderr
    for name, spec in W.REGISTRY.items():
        assert f"{name} missing" in res.stdout
        assert W.page_url(spec) in res.stdout
    assert "4,265,146,304 B" in res.stdout and str(tmp_path) in res.stdout


def test_weights_rejects_an_unknown_name(tmp_path: Path) -> None:
    res = _run("weights", "gfpgan", weights_dir=tmp_path)
    assert res.returncode == 2
    assert "unknown weight 'gfpgan'" in res.stderr and "gfpgan_v1.4" in res.stderr


def test_doctor_runs_offline_and_reports_each_check(tmp_path: Path) -> None:
    sd = tmp_path / "sd-scripts"
    sd.mkdir()
    (sd / "train_network.py").write_text("# stand-in\n")
    res = _run("doctor", "--sd-scripts", str(sd), weights_dir=tmp_path, timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    lines = res.stdout.splitlines()

    def line(what: str) -> str:
        found = [ln for ln in lines if ln.split()[1:2] == [what]]
        assert found, f"no '{what}' line in:\n{res.stdout}"
        return found[0]

    assert line("python").startswith("OK")
    assert line("torch").startswith("OK")
    assert line("cuda").split()[0] in ("OK", "WARN")
    dists = [ln for ln in lines if "onnxruntime dists" in ln]
    assert len(dists) == 1 and "onnxruntime==" in dists[0]
    assert "CPUExecutionProvider" in res.stdout
    assert line("sd-scripts").startswith("OK") and str(sd) in line("sd-scripts")
    assert "free disk (weights cache)" in res.stdout
    for name in W.REGISTRY:
        assert f"weight {name}" in res.stdout
    assert all(ln.split()[0] in ("OK", "WARN", "MISSING") for ln in lines if ln.strip())


def _doctor_args(*extra: str):
    return launch.make_parser().parse_args(["doctor", *extra])


def test_doctor_warns_when_two_onnxruntime_builds_are_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(doctor, "installed_ort", lambda: ["onnxruntime==1.32.0", "onnxruntime-gpu==1.32.0"])
    checks = doctor.check_onnxruntime(cuda=False)
    warn = next(c for c in checks if c.what == "onnxruntime dists")
    assert warn.status == "WARN" and "last one installed wins" in warn.detail
    assert "pip uninstall -y onnxruntime onnxruntime-gpu" in warn.detail


def test_doctor_flags_gpu_without_cuda_provider() -> None:
    checks = doctor.check_onnxruntime(cuda=True)
    prov = next(c for c in checks if c.what == "onnxruntime providers")
    if "CUDAExecutionProvider" in prov.detail.split(" (")[0]:
        pytest.skip("this onnxruntime has the CUDA provider")
    assert prov.status == "WARN" and "GPU providers" in prov.detail


def test_doctor_sd_scripts_and_accelerate(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = launch.make_parser().parse_args(["doctor", "--sd-scripts", str(tmp_path)])
    from builder.cli.common import build_config

    checks = {c.what: c for c in doctor.check_sd_scripts(build_config(cfg))}
    assert checks["sd-scripts"].status == "MISSING" and "train_network.py" in checks["sd-scripts"].detail
    (tmp_path / "train_network.py").write_text("")
    venv_bin = tmp_path / "venv" / "bin"
    venv_bin.mkdir(parents=True)
    (venv_bin / "accelerate").write_text("#!/bin/sh\n")
    (venv_bin / "accelerate").chmod(0o755)
    monkeypatch.setattr(doctor.shutil, "which", lambda _: None)
    monkeypatch.setattr(doctor.sys, "executable", str(tmp_path / "nowhere" / "python"))
    checks = {c.what: c for c in doctor.check_sd_scripts(build_config(cfg))}
    assert checks["sd-scripts"].status == "OK"
    assert checks["accelerate"].status == "OK" and checks["accelerate"].detail == str(venv_bin / "accelerate")


def test_doctor_exits_nonzero_when_torch_is_broken(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setitem(sys.modules, "torch", None)  # makes `import torch` raise ImportError
    assert doctor.run(_doctor_args("--weights-dir", str(tmp_path))) == 1
    out = capsys.readouterr().out
    assert "MISSING torch" in out and "cannot run: torch" in out


def test_doctor_marks_weights_the_config_needs(tmp_path: Path) -> None:
    from builder.cli.common import build_config

    cfg = build_config(_doctor_args("--weights-dir", str(tmp_path), "--set", "swap.restorer=gfpgan"))
    path = W.weight_path("gfpgan_v1.4", str(tmp_path))
    checks = {c.what: c for c in doctor.check_weights(cfg)}
    assert checks["weight gfpgan_v1.4"].status == "MISSING"
    assert "needed by this config" in checks["weight gfpgan_v1.4"].detail
    assert "not used by this config" in checks["weight codeformer"].detail
    path.parent.mkdir(parents=True)
    path.write_bytes(b"not the official file")
    checks = {c.what: c for c in doctor.check_weights(cfg)}
    assert checks["weight gfpgan_v1.4"].status == "WARN" and "size" in checks["weight gfpgan_v1.4"].detail
