"""`python -m export eval MODEL [--data FILE]`: an exported model's validation loss on a text, with
onnxruntime and numpy alone (no torch), as docs/training.md defines the reported loss."""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np

from train.usage import fail
from webapp.inference.onnx_model import ModelLoadError, OnnxModel

from .errors import UsageError

PROG = "python -m export eval"
DESCRIPTION = "Validation loss of an exported model on a text file, with onnxruntime alone."


def eval_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description=DESCRIPTION)
    p.add_argument("model", help="a model folder or an exported .onnx file")
    p.add_argument(
        "--data",
        help="UTF-8 text file (default: the model's training text where it can be found: "
        "the cached Tiny Shakespeare for a model trained on it)",
    )
    p.add_argument(
        "--split",
        choices=("val", "all"),
        default="val",
        help="val: the last 10%% of the file, as in training (default); all: the whole file",
    )
    p.add_argument("--batch-size", type=int, default=64, help="windows per onnxruntime call")
    return p


def measure_loss(model: OnnxModel, text: str, split: str, batch_size: int = 64) -> tuple[float, int]:
    """(mean nats per character, number of predictions) of `model` on `text` (its validation
    split, or all of it)."""
    from train.text import split_index

    from .runtime import split_loss

    index = {c: i for i, c in enumerate(model.vocab)}
    unknown = sorted(set(text) - set(index))
    if unknown:
        shown = ", ".join(repr(c) for c in unknown[:5])
        raise UsageError(
            f"the text has {len(unknown)} characters the model's vocabulary lacks ({shown}); "
            "evaluate on text written in the model's alphabet."
        )
    ids = np.array([index[c] for c in text], dtype=np.int64)
    if split == "val":
        ids = ids[split_index(len(ids)) :]
    if len(ids) < 2:
        raise UsageError("the text is too short to evaluate: it needs at least two characters in the split.")
    return split_loss(model, ids, model.block_size, batch_size), len(ids) - 1


def training_text(sha256: str, recorded_path: str | None = None) -> str:
    """Where a model's training text is: the path its run recorded, if the file there is still
    that text, else, for a model trained on Tiny Shakespeare, the cached copy, which is downloaded
    the first time as `python -m train` does (DataError, saying how to supply it, when it cannot
    be); UsageError for another text."""
    from train.data import resolve_data_path
    from train.text import SHAKESPEARE_SHA256, sha256_bytes

    if recorded_path and Path(recorded_path).is_file() and sha256_bytes(Path(recorded_path).read_bytes()) == sha256:
        return recorded_path
    if sha256 == SHAKESPEARE_SHA256:
        return str(resolve_data_path(None))  # verified by its SHA-256
    where = f" (the run recorded {recorded_path}, which is gone or has changed)" if recorded_path else ""
    raise UsageError(f"the model's training text was not found{where}; pass it with --data FILE.")


def eval_main(argv: list[str]) -> int:
    from train.text import DataError, read_text

    args = eval_parser().parse_args(argv)
    try:
        if args.batch_size < 1:
            raise UsageError("--batch-size must be at least 1.")
        model = OnnxModel(args.model)
        data = args.data or training_text(model.metadata["training"]["dataset_sha256"])
        text, _ = read_text(Path(data))
        loss, n = measure_loss(model, text, args.split, args.batch_size)
    except (UsageError, ModelLoadError, DataError) as e:
        return fail(PROG, str(e))
    what = "whole validation split" if args.split == "val" else "whole file"
    print(f"val loss ({what}, {n:,} characters): {loss:.4f} nats/char ({loss / math.log(2):.4f} bits/char)")
    recorded = model.metadata["training"].get("val_loss")
    if recorded is not None:
        print(f"recorded in the model's metadata: {recorded:.4f}")
    return 0
