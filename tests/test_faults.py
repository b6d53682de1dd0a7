"""Faults a long training run meets: SIGKILL at any moment, a crash inside a save, a full disk
and a read-only directory. Each must leave a checkpoint that resumes to exactly the weights of
an uninterrupted run, and say what happened in one sentence."""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import REPO, TINY
from helpers import run_train as start
from safetensors.torch import load_file

from train import checkpoint
from train.cli import main
from train.model import GPTConfig, GPTLanguageModel

# Many checkpoints (one per evaluation), so that kills often land in or near a save.
STEPS = 300
SETTINGS = [*TINY, "--max-iters", str(STEPS), "--eval-interval", "25", "--dropout", "0.1", "--swa-start", "0.5"]


def saved_step(run_dir: Path) -> int | None:
    try:
        return checkpoint.read_meta(run_dir)["step"]
    except (checkpoint.CheckpointError, KeyError):
        return None


def wait_for_checkpoint(run_dir: Path, proc: subprocess.Popen, at_least: int, timeout: float = 120) -> int:
    deadline = time.time() + timeout
    while time.time() < deadline:
        step = checkpoint.peek_step(run_dir)  # not read_meta: its recovery would race the running save
        if step is not None and step >= at_least:
            return step
        if proc.poll() is not None:
            pytest.fail(f"training ended before a checkpoint of step {at_least}: {proc.stderr.read()}")
        time.sleep(0.05)
    pytest.fail(f"no checkpoint of step {at_least} in {timeout} s")


def same_weights(a: Path, b: Path) -> bool:
    x, y = load_file(a / checkpoint.WEIGHTS), load_file(b / checkpoint.WEIGHTS)
    return x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, small_text) -> Path:
    out = tmp_path_factory.mktemp("faults") / "whole"
    assert main([*SETTINGS, "--data", str(small_text), "--out", str(out)]) == 0
    return out


# --- a crash inside a save ----------------------------------------------------------------


class Crash(BaseException):
    """Stands for SIGKILL: nothing after it runs, not even cleanup."""


def tiny_training_state(seed: int):
    """A one-step-trained tiny model and its optimizer (the same for the same seed)."""
    torch.manual_seed(seed)
    model = GPTLanguageModel(GPTConfig(vocab_size=10, block_size=8, n_embd=16, n_head=2, n_layer=1))
    optimizer = torch.optim.AdamW(model.parameters())
    model(torch.zeros(1, 8, dtype=torch.long), targets=torch.zeros(1, 8, dtype=torch.long))[1].backward()
    optimizer.step()
    return model, optimizer


def test_a_crash_at_every_point_of_a_save_leaves_the_old_or_the_new_checkpoint_whole(tmp_path, monkeypatch):
    old_dir = tmp_path / "old"
    old_dir.mkdir()
    old_model, old_optimizer = tiny_training_state(seed=1)
    checkpoint.save(old_dir, old_model, {"step": 1}, old_optimizer)
    new_model, new_optimizer = tiny_training_state(seed=2)
    old, new = (checkpoint.state_dict_for_saving(m) for m in (old_model, new_model))
    real_replace, outcomes = os.replace, []
    for crash_at in range(10):
        run = tmp_path / f"crash{crash_at}"
        shutil.copytree(old_dir, run)
        calls = []

        def replace(src, dst, calls=calls, crash_at=crash_at):
            calls.append(dst)
            if len(calls) > crash_at:
                raise Crash
            real_replace(src, dst)

        with monkeypatch.context() as m:
            m.setattr(os, "replace", replace)
            m.setattr(Path, "unlink", lambda self, missing_ok=False: None)  # a killed process cleans nothing up
            try:
                checkpoint.save(run, new_model, {"step": 2}, new_optimizer)
                crashed = False
            except Crash:
                crashed = True
        meta = checkpoint.read_meta(run)  # rolls a committed save forward
        weights = checkpoint.load_weights(run, meta)
        checkpoint.verify_files(run, meta, [checkpoint.OPTIMIZER])
        want = old if meta["step"] == 1 else new
        assert weights.keys() == want.keys(), crash_at
        assert all(torch.equal(weights[k], want[k]) for k in want), crash_at
        outcomes.append(meta["step"])
        if not crashed:
            break
    # The commit point is config.json.next: crashes before it keep step 1, crashes after it give step 2.
    assert outcomes[0] == 1
    assert outcomes[-1] == 2
    assert outcomes == sorted(outcomes)
    assert 1 in outcomes[:-1], outcomes
    assert 2 in outcomes[:-1], outcomes  # both sides of the commit point were hit
    checkpoint.save(run, old_model, {"step": 3}, old_optimizer)  # the next save clears the litter
    assert sorted(p.name for p in run.iterdir()) == sorted(
        [checkpoint.CONFIG, checkpoint.WEIGHTS, checkpoint.OPTIMIZER]
    )


# --- SIGKILL at random moments ------------------------------------------------------------


def test_sigkill_at_random_moments_then_resume_gives_the_uninterrupted_weights(
    uninterrupted, tmp_path, small_text, request
):
    seed = request.config.getoption("--kill-seed")
    seed = random.randrange(10**6) if seed == -1 else seed
    rng = random.Random(seed)  # printed on failure; the waits replay, the machine's speed may not
    run = tmp_path / "killed"
    proc = start(*SETTINGS, "--data", small_text, "--out", run)
    kills, last = [], -1
    for _ in range(3):
        if last < STEPS:  # killed in the final phase, a resumed run only evaluates and finishes
            wait_for_checkpoint(run, proc, at_least=last + 1)  # training again, past where it was killed
        time.sleep(rng.uniform(0.0, 1.5))
        if proc.poll() is not None:
            break  # it finished first
        proc.kill()
        proc.wait()
        last = saved_step(run)
        kills.append(last)
        if "val_loss_full" in checkpoint.read_meta(run):
            proc = None  # killed after its last write: complete, and --resume rightly says so
            break
        proc = start("--resume", run)
    if proc is not None:
        assert proc.wait(timeout=300) == 0, f"kill schedule seed {seed}: {proc.stderr.read()}"
    assert kills, "the run finished before the first kill"
    meta = checkpoint.read_meta(run)
    assert meta["step"] == STEPS
    assert "val_loss_full" in meta
    assert same_weights(run, uninterrupted), f"kill schedule seed {seed}, killed with checkpoints at {kills}"
    assert same_weights(run / checkpoint.AVERAGE_DIR, uninterrupted / checkpoint.AVERAGE_DIR), (
        f"kill schedule seed {seed}"
    )
    assert checkpoint.read_meta(run / checkpoint.AVERAGE_DIR)["averaged_steps"] == list(range(150, 301, 25))
    assert not [p for p in run.iterdir() if p.name.endswith((checkpoint.PENDING, ".tmp"))]


# --- a full disk and a read-only directory ----------------------------------------------


@pytest.fixture
def small_disk(tmp_path):
    """A 4 MB tmpfs (needs root, as on the CI machines); unmounted afterwards."""
    mount = tmp_path / "disk"
    mount.mkdir()
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)], capture_output=True, text=True
    )
    if result.returncode != 0:
        pytest.skip(f"cannot mount a small filesystem here ({result.stderr.strip()}); run as root")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def fail_and_check(proc: subprocess.Popen, run: Path, reason: str, after: int) -> int:
    """The run stops with one sentence naming the fault and the intact checkpoint, which is whole."""
    assert proc.wait(timeout=120) == 1
    error = proc.stderr.read().strip().splitlines()[-1]
    step = saved_step(run)
    assert error == (
        f"python -m train: error: writing to {run} failed ({reason}); the checkpoint of step {step} there "
        f"is intact: fix the problem (free space, write access), then continue with python -m train --resume {run}"
    )
    assert after <= step < STEPS
    checkpoint.verify_files(run, checkpoint.read_meta(run), [checkpoint.WEIGHTS, checkpoint.OPTIMIZER])
    return step


def test_a_full_disk_then_a_read_only_directory_keep_the_previous_checkpoint(small_disk, uninterrupted, small_text):
    """One run meets both faults in turn, each fixed and resumed; it ends with the weights of a run
    that met neither."""
    run = small_disk / "run"
    proc = start(*SETTINGS, "--data", small_text, "--out", run)
    wait_for_checkpoint(run, proc, at_least=100)
    stat = os.statvfs(small_disk)
    (small_disk / "filler").write_bytes(b"\0" * (stat.f_bavail * stat.f_frsize - 4096))
    step = fail_and_check(proc, run, "No space left on device", after=100)

    (small_disk / "filler").unlink()
    proc = start("--resume", run)
    wait_for_checkpoint(run, proc, at_least=step + 1)
    subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)
    fail_and_check(proc, run, "Read-only file system", after=step + 1)

    subprocess.run(["mount", "-o", "remount,rw", str(small_disk)], check=True)
    resumed = start("--resume", run)
    assert resumed.wait(timeout=300) == 0, resumed.stderr.read()
    assert same_weights(run, uninterrupted)


# --- truncated or altered model files -------------------------------------------------------


def test_truncated_or_altered_model_files_are_refused_with_a_sentence(exported, tmp_path):
    from webapp.inference.engine import Engine
    from webapp.inference.onnx_model import ModelLoadError

    source = exported[1]
    model, sidecar = tmp_path / "model.onnx", tmp_path / "model.json"
    original = source.read_bytes()
    shutil.copy(source.with_suffix(".json"), sidecar)
    model.write_bytes(original)
    Engine(model)  # the pair as exported loads

    altered = bytearray(original)
    altered[len(altered) // 2] ^= 0x01  # one bit inside the weights: onnxruntime alone would load it
    for name, data in (("altered", bytes(altered)), ("truncated", original[: len(original) // 2])):
        model.write_bytes(data)
        with pytest.raises(ModelLoadError, match="does not match the SHA-256 recorded in model.json beside it"):
            Engine(model)
        result = subprocess.run(
            [sys.executable, "-m", "webapp", "generate", "--model", str(model)],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 2, (name, result.stderr)
        assert result.stderr.count("\n") == 1, (name, result.stderr)
        assert "truncated or altered" in result.stderr
    sidecar.unlink()  # without the sidecar, a cut file still fails to load, with a sentence
    with pytest.raises(ModelLoadError, match="is not a readable ONNX model"):
        Engine(model)
