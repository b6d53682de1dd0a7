"""Losses of an exported model with onnxruntime and numpy alone (no torch): the whole-split
validation loss, and how the plain loop compares with an exact last window."""

from __future__ import annotations

import numpy as np

from train.text import eval_batches
from webapp.inference.onnx_model import OnnxModel


def split_loss(model: OnnxModel, ids: np.ndarray, block_size: int, batch_size: int = 64) -> float:
    """Mean cross-entropy (nats per character) of every next-character prediction in `ids`,
    in consecutive block_size windows (the reported validation loss: docs/training.md)."""
    total, count = 0.0, 0
    for starts, length in eval_batches(len(ids), block_size, batch_size):
        positions = np.array(starts)[:, None] + np.arange(length)
        logits, _ = model.forward(ids[positions])
        total -= log_softmax_at(logits, ids[positions + 1]).sum()
        count += positions.size
    return total / count


def log_softmax_at(logits: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """log p(target) under softmax(logits) along the last axis, computed in float64."""
    z = logits.astype(np.float64)
    z -= z.max(axis=-1, keepdims=True)
    log_norm = np.log(np.exp(z).sum(axis=-1))
    return np.take_along_axis(z, targets[..., None], axis=-1)[..., 0] - log_norm


def plain_loop_loss(model: OnnxModel, ids: np.ndarray) -> tuple[float, int, int]:
    """What a runtime's plain loop predicts: ids[0] as a prefill, then every next character
    as one cached step, each step's cache fed back. Returns (mean nats per character over the
    predictions from the first full window on, their number, the longest cache it held)."""
    window = model.block_size
    past, total, count, longest = None, 0.0, 0, 0
    for t in range(len(ids) - 1):
        logits, past = model.forward(ids[None, t : t + 1], past)
        longest = max(longest, next(iter(past.values())).shape[2])
        if t >= window - 1:
            total -= log_softmax_at(logits[0, -1], ids[t + 1])
            count += 1
    return total / max(count, 1), count, longest


def last_window_loss(model: OnnxModel, ids: np.ndarray, batch_size: int = 64) -> float:
    """The same predictions, each from exactly the last block_size characters (a fresh prefill
    per character): the ideal that the plain loop's sliding window approximates."""
    window = model.block_size
    targets = np.arange(window, len(ids))  # predicted characters
    total = 0.0
    for i in range(0, len(targets), batch_size):
        chunk = targets[i : i + batch_size]
        logits, _ = model.forward(ids[chunk[:, None] - window + np.arange(window)])
        total -= log_softmax_at(logits[:, -1], ids[chunk]).sum()
    return total / max(len(targets), 1)
