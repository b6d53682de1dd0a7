"""`python -m benchmarks.position_loss RUN_DIR`: a run's whole-split validation loss by position
in the window.

The reported loss reads the split in consecutive block_size windows (docs/training.md), so the first
characters of each window are predicted from little context and cost the most. The table says
how much, and so what a longer window could gain if it learned as fast (docs/training.md, "A
256-character window").
"""

from __future__ import annotations

import argparse
import sys

import torch

from train import checkpoint
from train.data import load_run_corpus
from train.evaluation import split_char_losses
from train.table import format_table as table
from train.text import DataError
from train.usage import fail


def position_buckets(block_size: int) -> list[tuple[int, int]]:
    """[start, end) ranges of window positions: 0-7, 8-15, then doubling, the last ending at block_size."""
    edges = [0, 8]
    while edges[-1] < block_size:
        edges.append(edges[-1] * 2)
    edges = [e for e in edges if e < block_size] + [block_size]
    return list(zip(edges, edges[1:]))


def losses_by_position(model, data: torch.Tensor, block_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(sum of the cross-entropies, number of predictions) at each window position, in float64."""
    sums, counts = torch.zeros(block_size, dtype=torch.float64), torch.zeros(block_size, dtype=torch.float64)
    for losses in split_char_losses(model, data, block_size, "cpu"):
        length = losses.shape[1]
        sums[:length] += losses.double().sum(0)
        counts[:length] += losses.shape[0]
    return sums, counts


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks.position_loss", description=__doc__.split("\n\n")[0])
    p.add_argument("run", help="a run directory that training wrote (or its best/)")
    p.add_argument("--data", help="the text the run trained on (default: the path the run recorded)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    prog = "python -m benchmarks.position_loss"
    try:
        meta = checkpoint.read_meta(args.run)
        corpus = load_run_corpus(meta, args.data)
        model = checkpoint.load_model(args.run, meta)
    except (checkpoint.CheckpointError, DataError, OSError) as e:
        return fail(prog, str(e))
    block_size = model.config.block_size
    sums, counts = losses_by_position(model, corpus.val, block_size)
    ranges = [(f"{start}-{end - 1}", start, end) for start, end in position_buckets(block_size)] + [
        ("all", 0, block_size)
    ]
    rows = [("positions", "predictions", "nats/char")]
    rows += [
        (name, f"{int(counts[a:b].sum()):,}", f"{sums[a:b].sum() / counts[a:b].sum():.4f}") for name, a, b in ranges
    ]
    print(f"{args.run}: whole validation split in consecutive windows of {block_size} characters")
    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
