"""bench/gpu_check.py: the no-CUDA path runs nothing, and the report keeps its shape when the
budget is spent."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from bench import gpu_check
from tests.conftest import REPO


@pytest.mark.skipif(torch.cuda.is_available(), reason="the no-CUDA path")
def test_without_cuda_it_says_so_and_writes_nothing(tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-m", "bench.gpu_check", "--out", str(out)], cwd=REPO,
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert gpu_check.NEEDS_CUDA in proc.stdout
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []


def test_spent_budget_skips_every_section_and_still_writes_both_files(tmp_path: Path) -> None:
    assert gpu_check.main(["--device", "cpu", "--tiny", "--budget", "0", "--out", str(tmp_path)]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gpu_check.json", "gpu_check.md"]
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    assert list(report["sections"]) == ["precision", "providers", "fused", "sampler"]
    assert all(s["status"].startswith("skipped") for s in report["sections"].values())
    table = (tmp_path / "gpu_check.md").read_text().splitlines()
    assert table[0] == "| section | item | result |"
    assert [row.split(" | ")[0].strip("| ") for row in table[2:]] == list(report["sections"])


def test_a_failing_section_is_recorded_and_the_next_one_runs() -> None:
    report: dict = {"sections": {}}
    budget = gpu_check.Budget(60)
    with gpu_check.section(report, "broken", budget):
        raise RuntimeError("boom")
    with gpu_check.section(report, "after", budget) as entry:
        entry["x"] = 1
    assert report["sections"]["broken"]["status"] == "error: RuntimeError: boom"
    assert report["sections"]["after"]["status"] == "ok" and report["sections"]["after"]["x"] == 1
