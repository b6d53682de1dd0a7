"""`python -m train.average CHECKPOINT... --out DIR`: the mean of several checkpoints of one run.

Weight averaging (SWA, checkpoint averaging): late in a run the weights circle around the floor
of a valley, and their mean lies nearer its centre than any one of them, which lowers the loss
without another step of training. The trainer does it itself from TrainConfig.swa_start on
(the run's average/ checkpoint); this command does it afterwards, for checkpoints already
written (a run's best/ and its final weights, or copies kept along the way). It prints the mean's
whole-split validation loss beside each checkpoint's.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

import torch

from . import checkpoint
from .metrics import METRICS
from .usage import fail


def average(directories: list[Path]) -> tuple[dict[str, torch.Tensor], dict]:
    """The mean of the checkpoints' weights, and the meta to save it with (the last one's, naming
    what it averages). CheckpointError when they are not of one model and one vocabulary."""
    metas = [checkpoint.read_meta(d) for d in directories]
    first = metas[0]
    for d, meta in zip(directories, metas):
        if meta["model"] != first["model"] or meta["vocab"] != first["vocab"]:
            raise checkpoint.CheckpointError(
                f"{d} is not a checkpoint of the same model and vocabulary as {directories[0]}; "
                "only checkpoints of one run can be averaged."
            )
    mean: dict[str, torch.Tensor] = {}
    for count, (d, meta) in enumerate(zip(directories, metas)):
        weights = checkpoint.load_weights(d, meta)
        mean = checkpoint.add_to_mean(mean, count, weights) if mean else weights
    meta = {k: v for k, v in metas[-1].items() if k not in ("files", "format", "val_loss_full")}
    meta["averaged_steps"] = [m["step"] for m in metas]
    return mean, meta


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m train.average", description=__doc__.split("\n\n")[0])
    p.add_argument(
        "checkpoints", nargs="+", help="checkpoint directories of one run (a run directory, its best/, copies)"
    )
    p.add_argument("--out", required=True, help="new directory for the mean (a checkpoint `python -m export` reads)")
    p.add_argument("--data", help="the text the run trained on (default: the path the run recorded)")
    args = p.parse_args(argv)
    prog = "python -m train.average"
    from .data import load_run_corpus
    from .evaluation import full_split_loss
    from .text import DataError

    out = Path(args.out)
    try:
        if len(args.checkpoints) < 2:
            raise checkpoint.CheckpointError("give at least two checkpoints to average.")
        if out.exists() and (not out.is_dir() or any(out.iterdir())):
            raise checkpoint.CheckpointError(f"--out {out} exists and is not an empty directory; choose a new one.")
        directories = [Path(d) for d in args.checkpoints]
        mean, meta = average(directories)
        corpus = load_run_corpus(meta, args.data)
    except (checkpoint.CheckpointError, DataError, OSError) as e:
        return fail(prog, str(e))
    block_size = meta["model"]["block_size"]
    for d, step in zip(directories, meta["averaged_steps"]):
        loss = full_split_loss(checkpoint.load_model(d), corpus.val, block_size, "cpu")
        print(f"{d} (step {step}): val loss (whole split) {loss:.4f}")
    loss = full_split_loss(checkpoint.model_from_weights(meta, mean, out), corpus.val, block_size, "cpu")
    out.mkdir(parents=True, exist_ok=True)
    checkpoint.save(out, mean, {**meta, "val_loss_full": loss})
    metrics = checkpoint.run_metrics(directories[-1])
    if metrics is not None:  # the run's history, which export draws as the mean's loss curve
        shutil.copyfile(metrics, out / METRICS)
    print(f"{out} (the mean of {len(directories)}): val loss (whole split) {loss:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
