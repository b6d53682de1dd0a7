"""The GPU check's CPU dry run: every step of `python -m train.gpu_check` on tiny sizes, and its
refusal on a machine without a GPU."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from conftest import REPO


def test_the_dry_run_runs_every_step_and_writes_the_report(tmp_path, small_text):
    out = tmp_path / "gpu-check"
    result = subprocess.run(
        [sys.executable, "-m", "train.gpu_check", "--dry-run", "--data", str(small_text), "--out", str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    report = json.loads((out / "report.json").read_text())
    steps = {s["step"]: s for s in report["steps"]}
    assert list(steps) == [
        "nanogpt-10m, bf16 autocast",
        "--compile",
        "torchrun --nproc_per_node 1",
        "Muon (CPU recipe's optimizer)",
        "shakespeare-gpu recipe",
        "interrupted and resumed",
        "export on the CPU",
    ]
    assert all(s["ok"] for s in steps.values())
    assert steps["nanogpt-10m, bf16 autocast"]["figures"]["val_loss_full"] > 0
    resumed = steps["interrupted and resumed"]["figures"]
    assert 0 < resumed["stopped_at"] < resumed["steps"]
    assert resumed["max_abs_weight_diff"] == 0.0  # on the CPU a resumed run is exact
    markdown = (out / "report.md").read_text()
    assert "## Export verification" in markdown
    assert "greedy 200 characters (plain loop)" in markdown


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_without_a_gpu_it_says_so_in_one_sentence(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "train.gpu_check", "--out", str(tmp_path / "x")],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert result.stderr == (
        "python -m train.gpu_check: error: this check needs a CUDA GPU and PyTorch sees none here; "
        "--dry-run runs it on the CPU with tiny sizes.\n"
    )
    assert not (tmp_path / "x").exists()
