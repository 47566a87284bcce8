"""The command line as a user runs it (subprocess, the venv's Python), and doctor's checks."""

from __future__ import annotations

import importlib.metadata
import os
import subprocess
import sys
from pathlib import Path

import pytest

import launch
from builder import weights as W
from builder.cli import COMMANDS, doctor
from builder.needs import needed_for

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
    assert len(dists) == 1 and dists[0].startswith("OK") and "onnxruntime" in dists[0]
    assert any(ln.startswith("OK") and "cv2 dists" in ln for ln in lines)  # this venv holds one OpenCV
    assert "onnx models" in res.stdout and len([ln for ln in lines if " weight " in ln]) < len(W.REGISTRY)
    assert "CPUExecutionProvider" in res.stdout
    assert line("sd-scripts").startswith("OK") and str(sd) in line("sd-scripts")
    assert "free disk (weights cache)" in res.stdout
    assert "weight ghost_unet_1block" not in res.stdout and "--all lists them" in res.stdout
    assert all(ln.split()[0] in ("OK", "WARN", "MISSING") for ln in lines if ln.strip())


def _doctor_args(*extra: str):
    return launch.make_parser().parse_args(["doctor", *extra])


def _fake_dists(monkeypatch: pytest.MonkeyPatch, present: dict[str, str]) -> None:
    """importlib.metadata answering as if exactly ``present`` (name -> version) were installed."""
    def version(name: str) -> str:
        if name in present:
            return present[name]
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(doctor.importlib.metadata, "version", version)


@pytest.mark.parametrize("present, module", [
    ({"onnxruntime": "1.31.1", "onnxruntime-gpu": "1.31.1", "opencv-python-headless": "5.1"}, "onnxruntime"),
    ({"onnxruntime-gpu": "1.31.1", "opencv-python": "5.1", "opencv-python-headless": "5.1"}, "cv2"),
])
def test_doctor_fails_with_the_fix_when_two_distributions_share_a_module(monkeypatch, present, module):
    _fake_dists(monkeypatch, present)
    checks = {c.what: c for c in doctor.check_distributions()}
    bad = checks[f"{module} dists"]
    assert bad.status == "MISSING" and bad.fatal and "whichever came last wins" in bad.detail
    names = sorted(n for n in present if n.startswith("onnxruntime" if module == "onnxruntime" else "opencv"))
    assert f"pip uninstall -y {' '.join(n for n in doctor.MODULE_DISTRIBUTIONS[module] if n in names)}" in bad.detail
    assert "pip install -r requirements.txt" in bad.detail
    other = "cv2" if module == "onnxruntime" else "onnxruntime"
    assert checks[f"{other} dists"].status == "OK"


def test_doctor_wants_the_gpu_onnxruntime_on_linux_x86_64(monkeypatch):
    _fake_dists(monkeypatch, {"onnxruntime": "1.31.1", "opencv-python-headless": "5.1"})
    monkeypatch.setattr(doctor, "gpu_ort_platform", lambda: True)
    ort_check = {c.what: c for c in doctor.check_distributions()}["onnxruntime dists"]
    assert ort_check.status == "WARN" and "CPU build" in ort_check.detail
    monkeypatch.setattr(doctor, "gpu_ort_platform", lambda: False)
    assert {c.what: c for c in doctor.check_distributions()}["onnxruntime dists"].status == "OK"
    _fake_dists(monkeypatch, {"opencv-python-headless": "5.1"})
    assert {c.what: c for c in doctor.check_distributions()}["onnxruntime dists"].fatal


def test_doctor_names_the_missing_cuda_library(monkeypatch):
    monkeypatch.setattr(doctor.ORT, "cuda_provider_error", lambda: "libcudnn.so.9: cannot open shared object file")
    bad = next(c for c in doctor.check_onnxruntime(cuda=True) if c.what == "onnxruntime cuda")
    assert bad.fatal and "libcudnn.so.9" in bad.detail
    monkeypatch.setattr(doctor.ORT, "cuda_provider_error", lambda: None)
    assert next(c for c in doctor.check_onnxruntime(cuda=True) if c.what == "onnxruntime cuda").status == "OK"
    assert not any(c.what == "onnxruntime cuda" for c in doctor.check_onnxruntime(cuda=False))


def test_cuda_provider_error_names_a_library_on_this_machine():
    """Here (no GPU driver) onnxruntime-gpu's CUDA provider cannot load, and the loader says which file."""
    import torch

    from builder import ort

    if torch.cuda.is_available():
        pytest.skip("a CUDA machine")
    error = ort.cuda_provider_error()
    assert error is not None and (".so" in error or "no CUDA provider" in error)


def test_doctor_prints_the_provider_of_each_onnx_model(tmp_path):
    from builder.cli.common import build_config

    cfg = build_config(_doctor_args("--weights-dir", str(tmp_path), "--set", "runtime.device=cpu",
                                    "--set", "swap.swapper=inswapper_128"))
    check = doctor.check_onnx_providers(cfg, cuda_ok=True)
    assert "inswapper_128" in check.detail and check.detail.endswith("CPUExecutionProvider")
    assert f"{cfg.faces.insightface_pack}/" in check.detail  # the pack's two nets
    cfg.runtime.device = "cuda"
    import onnxruntime

    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        assert "cannot load" in doctor.check_onnx_providers(cfg, cuda_ok=False).detail


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
    assert "fetched by the first run" in checks["weight gfpgan_v1.4"].detail
    # At a glance: only what this config needs, the rest behind --all.
    assert "weight codeformer" not in checks and "--all" in checks["other weights"].detail
    assert len([c for c in checks if c.startswith("weight ")]) == len(needed_for(cfg)) < len(W.REGISTRY)
    everything = {c.what: c for c in doctor.check_weights(cfg, show_all=True)}
    assert "not used by this config" in everything["weight codeformer"].detail
    path.parent.mkdir(parents=True)
    path.write_bytes(b"not the official file")
    checks = {c.what: c for c in doctor.check_weights(cfg)}
    assert checks["weight gfpgan_v1.4"].status == "WARN" and "size" in checks["weight gfpgan_v1.4"].detail
