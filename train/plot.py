"""The loss curve of a run, drawn from its metrics.jsonl."""

from __future__ import annotations

from pathlib import Path

from .metrics import read_metrics


def plot_losses(
    metrics_path: Path, png_path: Path, checkpoint: tuple[int, float] | None = None, checkpoint_label: str | None = None
) -> None:
    """Training loss (every logged step), the train/val estimates at each evaluation, and the
    final whole-split validation loss, against the step; `checkpoint` = (step, whole-split val
    loss) marks the checkpoint that was exported, named by `checkpoint_label` (default: its step)."""
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    records = read_metrics(metrics_path)
    evals = [r for r in records if r["kind"] == "eval"]
    steps = [r for r in records if r["kind"] == "train"]
    final = [r for r in records if r["kind"] == "final"]
    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=100)
    if steps:
        ax.plot([r["step"] for r in steps], [r["loss"] for r in steps], color="0.75", lw=1, label="train (batch)")
    if evals:
        ax.plot([r["step"] for r in evals], [r["train_loss"] for r in evals], "o-", ms=3, label="train (estimate)")
        ax.plot([r["step"] for r in evals], [r["val_loss"] for r in evals], "o-", ms=3, label="val (estimate)")
    if final:
        ax.axhline(
            final[-1]["val_loss_full"],
            color="C3",
            ls="--",
            lw=1,
            label=f"val, whole split, final weights: {final[-1]['val_loss_full']:.4f}",
        )
    if checkpoint is not None:
        ax.plot(
            [checkpoint[0]],
            [checkpoint[1]],
            "*",
            color="C2",
            ms=14,
            zorder=5,
            label=f"{checkpoint_label or f'exported checkpoint, step {checkpoint[0]}'}: {checkpoint[1]:.4f}",
        )
    ax.set_xlabel("step")
    ax.set_ylabel("cross-entropy (nats / character)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(png_path, format="png")
    plt.close(fig)
