"""The end of a training run: the whole-split validation loss of the final weights and of the
checkpoints kept beside them, which one to export, the lecture's closing lines, a sample, the
loss curve, and the checkpoint that marks the run complete."""

from __future__ import annotations

from pathlib import Path

import torch

from . import checkpoint
from .checkpoint import KEPT_DIRS, export_reason, lower_loss_checkpoint
from .evaluation import full_split_loss
from .files import write_json
from .metrics import METRICS, append_metrics
from .model import model_size_mb
from .plot import plot_losses

SAMPLE, LOSS_PNG = "sample.txt", "loss.png"
SAMPLE_CHARS = 500


def finish(trainer) -> None:
    """The end of the run of `trainer` (train/trainer.py's Trainer): whole-split validation loss,
    model size, a sample, the loss curve, the final checkpoint."""
    model, corpus, run_dir = trainer.model, trainer.corpus, trainer.run_dir
    val_full = full_split_loss(model, corpus.val, trainer.model_cfg.block_size, trainer.device)
    trainer.say(f"val loss (whole split, {len(corpus.val) - 1:,} characters): {val_full:.4f}")
    candidates = {run_dir: val_full}
    for directory in (run_dir / name for name in KEPT_DIRS):
        if (directory / checkpoint.CONFIG).exists():
            candidates[directory] = measure_kept(trainer, directory, val_full)
    to_export = lower_loss_checkpoint(candidates)
    trainer.say(f"to export: python -m export {to_export}   ({export_reason(run_dir, to_export)})")
    trainer.say(f"Model size: {model_size_mb(model):.2f} MB")
    trainer.say(
        f"trained {trainer.state['step']} steps, {trainer.state['tokens_seen']:,} characters in "
        f"{trainer.elapsed():.1f} s ({trainer.chars_per_s():,.0f} characters/s)"
    )
    trainer.say(
        f"matmul utilisation: {trainer.utilisation():.1%} of this machine's measured float32 peak "
        f"({trainer.peak_flops / 1e9:.1f} GFLOP/s; {trainer.flops_per_char / 1e6:.2f} MFLOP per trained character)"
    )
    newline = corpus.tokenizer.encode("\n") if "\n" in corpus.tokenizer.chars else [0]
    g = torch.Generator(device=trainer.device).manual_seed(trainer.cfg.seed)
    ids = model.generate(torch.tensor([newline], device=trainer.device), SAMPLE_CHARS, generator=g)[0, 1:].tolist()
    sample = corpus.tokenizer.decode(ids)
    trainer.say(sample)
    (run_dir / SAMPLE).write_text(sample, encoding="utf-8")
    append_metrics(
        run_dir,
        {
            "kind": "final",
            "step": trainer.state["step"],
            "val_loss_full": val_full,
            "chars_per_s": round(trainer.chars_per_s(), 1),
            "peak_fraction": round(trainer.utilisation(), 4),
            "elapsed_s": round(trainer.elapsed(), 3),
        },
    )
    plot_losses(run_dir / METRICS, run_dir / LOSS_PNG)
    # Last: a checkpoint with val_loss_full is what marks the run complete (a run killed
    # before this point resumes into finish() again).
    trainer.save(
        val_loss_full=val_full,
        chars_per_s=round(trainer.chars_per_s(), 1),
        peak_fraction=round(trainer.utilisation(), 4),
        peak_gflops=round(trainer.peak_flops / 1e9, 1),
    )


def measure_kept(trainer, directory: Path, val_full: float) -> float:
    """The whole-split loss of a checkpoint kept beside the final weights (best/, average/),
    recorded in its config.json: measured, unless it holds the final weights alone."""
    meta = checkpoint.read_meta(directory)
    steps = meta.get("averaged_steps", [meta["step"]])
    loss = val_full
    if steps != [trainer.state["step"]]:
        kept = checkpoint.load_model(directory, meta).to(trainer.device)
        loss = full_split_loss(kept, trainer.corpus.val, trainer.model_cfg.block_size, trainer.device)
        which = (
            f"the mean of the weights at steps {', '.join(map(str, steps))}"
            if "averaged_steps" in meta
            else f"step {meta['step']}"
        )
        trainer.say(f"{directory.name} checkpoint ({directory}, {which}): val loss (whole split) {loss:.4f}")
    write_json(directory / checkpoint.CONFIG, {**meta, "val_loss_full": loss})
    return loss
