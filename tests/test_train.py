"""`python -m train` end to end: learning, exact resume, DDP, time budget, every bad input."""

from __future__ import annotations

import contextlib
import io
import json
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch
from conftest import TINY
from helpers import run_train
from safetensors.torch import load_file

from train import checkpoint
from train.budget import eval_seconds, fit_max_iters, refit_due
from train.cli import main
from train.config import TrainConfig, lr_at, passes, run_dropout
from train.data import load_corpus
from train.evaluation import full_split_loss
from train.model import GPTConfig, GPTLanguageModel


def train_run(capsys, *args) -> tuple[int, str, str]:
    code = main([*TINY, *map(str, args)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def records(run_dir: Path, kind: str) -> list[dict]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["kind"] == kind]


def test_a_short_run_learns_and_leaves_a_complete_run_directory(tmp_path, capsys, small_text):
    out = tmp_path / "run"
    code, stdout, _ = train_run(
        capsys, "--data", small_text, "--out", out, "--max-iters", 150, "--learning-rate", "3e-3"
    )
    assert code == 0
    lines = stdout.splitlines()
    vocab = len(set(small_text.read_text()))
    tiny = GPTConfig(vocab_size=vocab, block_size=16, n_embd=32, n_head=4, n_layer=2)
    assert lines[0] == f"{GPTLanguageModel(tiny).num_params() / 1e6} M parameters"
    assert "step 0: train loss 4.0" in stdout
    assert "step 149: train loss" in stdout  # the seed's progress lines
    evals = records(out, "eval")
    assert evals[-1]["val_loss"] < evals[0]["val_loss"] - 0.8
    final = records(out, "final")[0]
    meta = checkpoint.read_meta(out)
    assert meta["step"] == 150
    assert meta["val_loss_full"] == final["val_loss_full"]
    assert f"val loss (whole split, 3,999 characters): {final['val_loss_full']:.4f}" in stdout
    assert "Model size: 0." in stdout
    assert len((out / "sample.txt").read_text()) == 500
    assert (out / "loss.png").read_bytes()[:4] == b"\x89PNG"
    assert (out / "best" / "model.safetensors").exists()
    assert "val_loss_full" in checkpoint.read_meta(out / "best")


def test_whole_split_loss_is_deterministic_and_independent_of_batching(small_text):
    corpus = load_corpus(str(small_text))
    torch.manual_seed(0)
    model = GPTLanguageModel(
        GPTConfig(vocab_size=corpus.tokenizer.vocab_size, block_size=16, n_embd=32, n_head=4, n_layer=2)
    )
    a = full_split_loss(model, corpus.val, 16, "cpu", batch_size=64)
    b = full_split_loss(model, corpus.val, 16, "cpu", batch_size=7)
    assert a == pytest.approx(b, rel=1e-6)
    # The reference computation: every target once, each window predicted from its own start.
    ids = corpus.val
    logits = torch.cat([model(ids[s : min(s + 16, len(ids) - 1)][None])[0][0] for s in range(0, len(ids) - 1, 16)])
    targets = ids[1 : 1 + len(logits)]
    assert a == pytest.approx(torch.nn.functional.cross_entropy(logits, targets).item(), rel=1e-5)


def wait_for_train_step(run_dir: Path, step: int, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"training ended before step {step}: {proc.stderr.read()}")
        if (run_dir / "metrics.jsonl").exists() and any(r["step"] >= step for r in records(run_dir, "train")):
            return
        time.sleep(0.05)
    pytest.fail(f"training did not reach step {step} in {timeout} s")


def test_an_interrupted_run_resumes_to_the_same_weights_and_losses(tmp_path, capsys, small_text):
    """Muon and AdamW (two optimizers' states), a cosine schedule, dropout and the weights'
    average (steps 120 and 240). AdamW alone under a constant rate: test_gpu_check.py's dry run
    resumes a nanogpt-10m run to the same weights."""
    settings = [
        *TINY,
        "--data",
        small_text,
        "--max-iters",
        240,
        "--eval-interval",
        120,
        "--dropout",
        0.1,
        "--lr-schedule",
        "cosine",
        "--warmup-iters",
        30,
        "--optimizer",
        "muon",
        "--swa-start",
        0.4,
    ]
    whole = tmp_path / "whole"
    assert main([*map(str, settings), "--out", str(whole)]) == 0
    capsys.readouterr()

    parts = tmp_path / "parts"
    proc = run_train(*settings, "--out", parts)
    wait_for_train_step(parts, 90, proc)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert f"Continue with: python -m train --resume {parts}" in stdout
    stopped_at = checkpoint.read_meta(parts)["step"]
    assert 90 <= stopped_at < 240

    assert main(["--resume", str(parts)]) == 0
    assert f"resuming {parts} at step {stopped_at} of 240" in capsys.readouterr().out
    a, b = load_file(whole / "model.safetensors"), load_file(parts / "model.safetensors")
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    a, b = load_file(whole / "average" / "model.safetensors"), load_file(parts / "average" / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert checkpoint.read_meta(parts / "average")["averaged_steps"] == [120, 240]
    assert records(whole, "final")[0]["val_loss_full"] == records(parts, "final")[0]["val_loss_full"]
    assert [r["val_loss"] for r in records(whole, "eval")] == [r["val_loss"] for r in records(parts, "eval")]
    assert [r["step"] for r in records(whole, "train")] == [r["step"] for r in records(parts, "train")]


def test_a_run_extended_with_max_iters_equals_one_longer_run_under_a_constant_rate(tmp_path, capsys, small_text):
    settings = [*TINY, "--data", small_text, "--dropout", 0.1]
    whole, extended = tmp_path / "whole", tmp_path / "extended"
    assert main([*map(str, settings), "--max-iters", "80", "--out", str(whole)]) == 0
    assert main([*map(str, settings), "--max-iters", "40", "--out", str(extended)]) == 0  # finished at 40
    assert main(["--resume", str(extended), "--max-iters", "80"]) == 0
    assert f"resuming {extended} at step 40 of 80" in capsys.readouterr().out
    a, b = load_file(whole / "model.safetensors"), load_file(extended / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert checkpoint.read_meta(extended)["train"]["max_iters"] == 80
    assert records(whole, "final")[0]["val_loss_full"] == records(extended, "final")[0]["val_loss_full"]
    assert len(records(extended, "final")) == 1  # the first ending's record is gone with it


@pytest.fixture(scope="module")
def swa_runs(tmp_path_factory, small_text) -> tuple[dict[int, Path], str]:
    """Three runs of 10, 15 and 20 steps with SWA from half way, and what they printed. Under a
    constant rate a shorter run's final weights are a longer run's weights at that step, so run
    20's average can be checked against the mean of the three runs' final weights."""
    folder = tmp_path_factory.mktemp("swa")
    settings = [*TINY, "--data", small_text, "--eval-interval", 5, "--swa-start", 0.5]
    runs = {n: folder / f"run{n}" for n in (10, 15, 20)}
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        for n, out in runs.items():
            assert main([*map(str, settings), "--max-iters", str(n), "--out", str(out)]) == 0
    return runs, printed.getvalue()


def mean_of_finals(runs: dict[int, Path]) -> dict[str, torch.Tensor]:
    finals = [load_file(out / "model.safetensors") for out in runs.values()]
    return {k: sum(f[k] for f in finals) / 3 for k in finals[0]}


def test_swa_averages_the_weights_of_the_late_evaluations_and_the_final_ones(swa_runs):
    runs, printed = swa_runs
    meta = checkpoint.read_meta(runs[20] / "average")
    assert meta["averaged_steps"] == [10, 15, 20]
    mean = load_file(runs[20] / "average" / "model.safetensors")
    assert all(torch.allclose(mean[k], want, atol=1e-6) for k, want in mean_of_finals(runs).items())
    assert (
        f"the mean of the weights at steps 10, 15, 20): val loss (whole split) {meta['val_loss_full']:.4f}" in printed
    )
    assert checkpoint.read_meta(runs[10] / "average")["averaged_steps"] == [5, 10]


def test_the_run_names_the_checkpoint_with_the_lowest_loss_to_export(swa_runs):
    runs, printed = swa_runs
    losses = {
        out: checkpoint.read_meta(out)["val_loss_full"] for out in (runs[20], runs[20] / "best", runs[20] / "average")
    }
    assert f"to export: python -m export {min(losses, key=losses.get)}   (" in printed


def test_the_gpu_checks_report_names_the_best_and_the_average_loss(swa_runs):
    from train.gpu_check import run_figures

    runs, _ = swa_runs
    figures = run_figures(runs[20], card_peak=None)
    best, average = (checkpoint.read_meta(runs[20] / name)["val_loss_full"] for name in ("best", "average"))
    assert (figures["best_val_loss_full"], figures["average_val_loss_full"]) == (best, average)


def test_train_average_of_the_three_runs_gives_the_same_mean(swa_runs, tmp_path, capsys):
    from train import average

    runs, _ = swa_runs
    out = tmp_path / "mean"
    assert average.main([*map(str, runs.values()), "--out", str(out)]) == 0
    val_loss = checkpoint.read_meta(runs[20] / "average")["val_loss_full"]
    assert f"{out} (the mean of 3): val loss (whole split) {val_loss:.4f}" in capsys.readouterr().out
    again = load_file(out / "model.safetensors")
    mean = load_file(runs[20] / "average" / "model.safetensors")  # the training run's own average
    assert all(torch.allclose(again[k], mean[k], atol=1e-6) for k in mean)
    assert checkpoint.read_meta(out)["averaged_steps"] == [10, 15, 20]
    assert (out / "metrics.jsonl").read_text() == (runs[20] / "metrics.jsonl").read_text()  # export draws its curve


def test_a_resumed_run_extends_its_average(swa_runs, tmp_path):
    runs, _ = swa_runs
    shutil.copytree(runs[10], tmp_path / "run10")
    assert main(["--resume", str(tmp_path / "run10"), "--max-iters", "20"]) == 0  # its average starts again at 10
    extended = load_file(tmp_path / "run10" / "average" / "model.safetensors")
    assert checkpoint.read_meta(tmp_path / "run10" / "average")["averaged_steps"] == [10, 15, 20]
    mean = load_file(runs[20] / "average" / "model.safetensors")
    assert all(torch.equal(extended[k], mean[k]) for k in mean)


@pytest.mark.parametrize("case", ["one checkpoint", "--out not empty", "another model"])
def test_train_average_refuses_what_it_cannot_average(swa_runs, tmp_path, capsys, small_text, case):
    from train import average

    runs, _ = swa_runs
    out = tmp_path / "out"
    if case == "one checkpoint":
        argv, said = [runs[10]], "give at least two checkpoints"
    elif case == "--out not empty":
        out.mkdir()
        (out / "kept.txt").write_text("kept")
        argv, said = [runs[10], runs[15]], f"--out {out} exists and is not an empty directory"
    else:  # trained only for this case
        argv = [runs[10], finished_other_model(tmp_path, small_text)]
        said = "is not a checkpoint of the same model and vocabulary"
    assert average.main([*map(str, argv), "--out", str(out)]) == 2
    assert said in capsys.readouterr().err
    if case == "--out not empty":
        assert (out / "kept.txt").read_text() == "kept"  # nothing overwritten
    else:
        assert not out.exists()


def finished_other_model(tmp_path: Path, small_text: Path) -> Path:
    out = tmp_path / "other"
    assert main([*TINY, "--n-layer", "1", "--data", str(small_text), "--max-iters", "2", "--out", str(out)]) == 0
    return out


def test_extending_a_cosine_run_follows_the_longer_schedule_from_where_it_stopped(tmp_path, capsys, small_text):
    run = tmp_path / "cosine"
    settings = [*TINY, "--data", small_text, "--lr-schedule", "cosine", "--warmup-iters", "5", "--out", run]
    assert main([*map(str, settings)]) == 0
    assert main(["--resume", str(run), "--max-iters", "100"]) == 0
    cfg = TrainConfig(**checkpoint.read_meta(run)["train"])
    lrs = {r["step"]: r["lr"] for r in records(run, "train")}  # the rate of the step before each record
    assert cfg.max_iters == 100
    assert lrs[40] < lrs[50]  # the schedule of 40 steps ended low; 100 steps' rose again
    assert lrs[50] == pytest.approx(lr_at(49, cfg))
    assert lrs[100] == pytest.approx(lr_at(99, cfg))
    capsys.readouterr()
    assert_refused(capsys, ["--resume", str(run), "--max-iters", "100"], "--max-iters 100 must be above the 100 steps")


def test_time_budget_fits_the_run_to_the_minutes_given(tmp_path, capsys, small_text):
    out = tmp_path / "budget"
    code, stdout, _ = train_run(
        capsys,
        "--data",
        small_text,
        "--out",
        out,
        "--max-iters",
        10**7,
        "--time-budget",
        0.1,
        "--lr-schedule",
        "cosine",
        "--dropout",
        0.1,
        "--dropout-min-passes",
        10**6,
    )
    assert code == 0
    assert "time budget 0.1 min: training for about" in stdout or "time budget of 0.1 min reached" in stdout
    # Its length known at the first fit, the run turns dropout off: it sees its text far fewer than 10**6 times.
    assert "dropout 0: the run passes over its training text" in stdout
    assert checkpoint.read_meta(out)["model"]["dropout"] == 0
    assert 20 < checkpoint.read_meta(out)["step"] < 10**7
    assert checkpoint.read_meta(out)["elapsed_s"] < 60


def refits(first_fit: int, max_iters: int, eval_interval: int) -> list[int]:
    """The steps after which a time budget's run refits its length, at a steady max_iters."""
    last, due = first_fit, []
    for step in range(first_fit + 1, max_iters + 1):
        if refit_due(step, last, max_iters, eval_interval):
            last = step
            due.append(step)
    return due


def test_a_time_budgets_run_refits_its_length_after_each_evaluation_and_every_tenth_of_the_run():
    assert refits(20, 1000, 250) == [120, 220, 251, 351, 451, 501, 601, 701, 751, 851, 951]
    # A run shorter than one eval_interval (a 5-minute run on a slow machine) refits all the same:
    # a first fit made while the machine was busy would otherwise stand to the end.
    assert refits(20, 238, 250) == list(range(43, 238, 23))
    assert refits(20, 25, 250) == [22, 24]


def test_an_evaluation_timed_on_a_busy_machine_does_not_shorten_the_run():
    """The evaluation at step 0 (2 x 20 batches) timed at 26 s while other programs ran, then
    steps of 0.85 s: the fit counts the evaluation as 40 forwards at a third of a step, 11.3 s,
    and fits more steps; an evaluation that cost less than that keeps its own figure."""
    assert eval_seconds(26.0, 0.85, eval_iters=20) == pytest.approx(40 * 0.85 / 3)
    assert eval_seconds(9.0, 0.85, eval_iters=20) == 9.0
    # 74 s left of a 2-minute budget; the evaluation before the last step comes out of them, and
    # so does the final phase, here as long as one evaluation (its reserve grows with the
    # evaluation's cost): 23 more steps with the busy figure, 57 with the bounded one.
    cfg = TrainConfig(eval_interval=250)
    busy, bounded = 26.0, eval_seconds(26.0, 0.85, 20)
    assert fit_max_iters(120.0, 46.0, 20, 0.85, busy, cfg, final_s=busy) == 20 + 23
    assert fit_max_iters(120.0, 46.0, 20, 0.85, bounded, cfg, final_s=bounded) == 20 + 57


def test_max_iters_on_the_command_line_replaces_a_presets_time_budget(tmp_path, capsys, small_text):
    out = tmp_path / "steps"
    code, stdout, _ = train_run(
        capsys, "--preset", "quick", "--data", small_text, "--out", out
    )  # TINY gives --max-iters 40
    assert code == 0
    meta = checkpoint.read_meta(out)
    assert meta["step"] == 40 and meta["train"]["time_budget"] is None
    assert "time budget" not in stdout


def test_dropout_follows_how_often_the_run_sees_its_text(tmp_path, capsys, small_text):
    """40 steps of 8×16 characters pass over the 36,000-character training split 0.14 times: with
    dropout_min_passes above that the run trains exactly as one without dropout, below it with it;
    with high_dropout_passes below it, with high_dropout, which the checkpoint records."""
    weights, said = {}, {}
    runs = {
        "none": (["--dropout", 0], 0),
        "too few passes": (["--dropout", 0.1, "--dropout-min-passes", 0.2], 0),
        "enough passes": (["--dropout", 0.1, "--dropout-min-passes", 0.1, "--high-dropout-passes", 0.2], 0.1),
        "many passes": (
            ["--dropout", 0.1, "--dropout-min-passes", 0.1, "--high-dropout-passes", 0.1, "--high-dropout", 0.3],
            0.3,
        ),
    }
    for name, (flags, dropout) in runs.items():
        code, said[name], _ = train_run(capsys, "--data", small_text, "--out", tmp_path / name, *flags)
        assert code == 0
        weights[name] = load_file(tmp_path / name / "model.safetensors")
        assert checkpoint.read_meta(tmp_path / name)["model"]["dropout"] == dropout
    assert "dropout 0: the run passes over its training text 0.1 times (fewer than the 0.2" in said["too few passes"]
    assert "dropout 0.1: the run passes over its training text 0.1 times (at least the 0.1" in said["enough passes"]
    assert (
        "dropout 0.3: the run passes over its training text 0.1 times (at least the 0.1 from which"
        in said["many passes"]
    )
    assert all(torch.equal(weights["none"][k], weights["too few passes"][k]) for k in weights["none"])
    for name in ("enough passes", "many passes"):
        assert not all(torch.equal(weights["none"][k], weights[name][k]) for k in weights["none"])
    assert not all(torch.equal(weights["enough passes"][k], weights["many passes"][k]) for k in weights["none"])


def test_the_run_length_and_the_dropout_it_trains_with():
    assert passes(max_iters=712, chars_per_step=32 * 128, train_chars=1_003_854) == pytest.approx(2.905, abs=1e-3)
    assert run_dropout(0.1, run_passes=2.9, min_passes=6)[0] == 0.0
    assert run_dropout(0.1, run_passes=6.0, min_passes=6)[0] == 0.1
    assert run_dropout(0.1, run_passes=0.5, min_passes=0) == (
        0.1,
        "neither dropout_min_passes nor high_dropout_passes is set",
    )
    assert run_dropout(0.1, run_passes=24.0, min_passes=6, high_dropout=0.3, high_passes=20)[0] == 0.3
    assert run_dropout(0.1, run_passes=19.9, min_passes=6, high_dropout=0.3, high_passes=20)[0] == 0.1
    assert run_dropout(0.1, run_passes=99.0, min_passes=6, high_dropout=0.3, high_passes=0)[0] == 0.1  # 0: never
    assert (
        run_dropout(0.0, run_passes=24.0, min_passes=6, high_dropout=0.3, high_passes=20)[0] == 0.0
    )  # --dropout 0: none


# --- bad input: one sentence on stderr, exit code 2, nothing on disk overwritten -------------


def assert_refused(capsys, argv, message):
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2, err
    assert message in err
    assert err.count("\n") == 1
    assert err.startswith("python -m train: error: ")


def test_bad_data_files(tmp_path, capsys):
    (tmp_path / "empty.txt").write_bytes(b"")
    (tmp_path / "latin1.txt").write_bytes("caf\xe9".encode("latin-1") * 100)
    (tmp_path / "short.txt").write_text("To be, or not to be" * 5)
    cases = [
        ("missing.txt", "does not exist"),
        ("empty.txt", "is empty"),
        ("latin1.txt", "is not UTF-8"),
        ("short.txt", "too short for block_size 16"),
    ]
    for name, message in cases:
        assert_refused(capsys, [*TINY, "--data", str(tmp_path / name), "--out", str(tmp_path / "out")], message)
        assert not (tmp_path / "out").exists()


def test_bad_settings(tmp_path, capsys, small_text):
    out = str(tmp_path / "out")
    assert_refused(capsys, ["--data", str(small_text), "--out", out, "--n-embd", "65"], "must be divisible by n_head")
    assert_refused(
        capsys, ["--data", str(small_text), "--out", out, "--learning-rate", "-1"], "learning_rate must be positive"
    )
    assert_refused(
        capsys,
        ["--data", str(small_text), "--out", out, "--dropout-min-passes", "-1"],
        "dropout_min_passes cannot be negative, not -1.0",
    )
    assert_refused(
        capsys,
        ["--data", str(small_text), "--out", out, "--high-dropout", "1"],
        "high_dropout must be a probability below 1, not 1.0",
    )
    assert_refused(
        capsys,
        ["--data", str(small_text), "--out", out, "--swa-start", "1.5"],
        "swa_start must be a fraction of the run between 0 and 1, not 1.5",
    )
    assert not (tmp_path / "out").exists()
    with pytest.raises(SystemExit) as e:  # argparse's own usage error
        main(["--preset", "gpt-5"])
    assert e.value.code == 2
    assert "invalid choice: 'gpt-5'" in capsys.readouterr().err


@pytest.fixture
def finished_run(tmp_path, capsys, small_text) -> Path:
    out = tmp_path / "run"
    assert train_run(capsys, "--data", small_text, "--out", out, "--max-iters", 25)[0] == 0
    return out


def snapshot(directory: Path) -> dict:
    return {p: p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


def test_an_existing_run_is_never_overwritten(finished_run, capsys, small_text):
    before = snapshot(finished_run)
    assert_refused(
        capsys,
        [*TINY, "--data", str(small_text), "--out", str(finished_run)],
        f"{finished_run} already holds a run; continue it with --resume {finished_run}",
    )
    assert_refused(capsys, ["--resume", str(finished_run)], "already complete (25 of 25 steps); to train it further")
    assert snapshot(finished_run) == before


def test_resume_refuses_missing_truncated_or_tampered_checkpoints(finished_run, tmp_path, capsys):
    assert_refused(capsys, ["--resume", str(tmp_path / "nothing")], "is not a directory")
    meta = json.loads((finished_run / "config.json").read_text())
    (finished_run / "config.json").write_text(json.dumps({**meta, "train": {**meta["train"], "max_iters": 50}}))
    assert_refused(capsys, ["--resume", str(finished_run), "--n-layer", "3"], "drop --n-layer")

    weights = finished_run / "model.safetensors"
    original = weights.read_bytes()
    weights.write_bytes(original[:-100])
    assert_refused(capsys, ["--resume", str(finished_run)], "model.safetensors does not match the checksum")
    tampered = bytearray(original)
    tampered[-5] ^= 1
    weights.write_bytes(bytes(tampered))
    assert_refused(capsys, ["--resume", str(finished_run)], "(truncated or altered)")
    weights.write_bytes(original)
    (finished_run / "optimizer.pt").write_bytes(b"")
    assert_refused(capsys, ["--resume", str(finished_run)], "optimizer.pt does not match the checksum")

    (finished_run / "config.json").write_text("{not json")
    assert_refused(capsys, ["--resume", str(finished_run)], "config.json is corrupt")
    (finished_run / "config.json").write_text(json.dumps({**meta, "format": "chargpt-checkpoint/0"}))
    assert_refused(capsys, ["--resume", str(finished_run)], "reads 'chargpt-checkpoint/1'")


def test_cuda_asked_for_without_a_gpu(capsys, small_text, tmp_path):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    assert_refused(
        capsys,
        ["--data", str(small_text), "--device", "cuda", "--out", str(tmp_path / "o")],
        "--device cuda was asked for but PyTorch sees no CUDA GPU",
    )


def test_missing_folders_of_out_are_made_and_the_end_says_which_checkpoint_to_export(tmp_path, capsys, small_text):
    out = tmp_path / "new" / "folders" / "run"
    code, stdout, _ = train_run(capsys, "--data", small_text, "--out", out, "--max-iters", 60)
    assert code == 0
    assert checkpoint.read_meta(out)["step"] == 60
    final, best = checkpoint.read_meta(out)["val_loss_full"], checkpoint.read_meta(out / "best")["val_loss_full"]
    advised = out / "best" if best < final else out
    (line,) = [line for line in stdout.splitlines() if line.startswith("to export: ")]
    assert line.startswith(f"to export: python -m export {advised}   (")
    assert checkpoint.lower_loss_checkpoint({out: final, out / "best": best}) == advised


def test_the_default_out_dir_is_made_under_runs(tmp_path, capsys, small_text, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a fresh checkout has no runs/ folder yet
    code, _, _ = train_run(capsys, "--data", small_text, "--max-iters", 3)
    assert code == 0
    (run,) = (tmp_path / "runs").iterdir()
    assert run.name.startswith("seed-0.2m-")
    assert checkpoint.read_meta(run)["step"] == 3


def test_the_metrics_reader_skips_a_line_cut_short_and_the_plot_still_draws(tmp_path):
    from train.metrics import read_metrics
    from train.plot import plot_losses

    metrics = tmp_path / "metrics.jsonl"
    metrics.write_text(
        '{"kind": "train", "step": 10, "loss": 3.0}\n{"kind": "eval", "step": 10, "train_loss": 2.9, '
        '"val_loss": 3.1}\n{"kind": "train", "st'
    )  # a crash in the middle of a write
    assert [r["kind"] for r in read_metrics(metrics)] == ["train", "eval"]
    plot_losses(metrics, tmp_path / "loss.png")
    assert (tmp_path / "loss.png").read_bytes()[:4] == b"\x89PNG"
