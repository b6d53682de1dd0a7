"""Validation loss of an exported model with onnxruntime and numpy alone (no torch)."""

from __future__ import annotations

import numpy as np

from train.text import eval_batches
from webapp.onnx_model import OnnxModel


def split_loss(model: OnnxModel, ids: np.ndarray, block_size: int, batch_size: int = 64) -> float:
    """Mean cross-entropy (nats per character) of every next-character prediction in `ids`,
    in consecutive block_size windows (DESIGN.md's reported validation loss)."""
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
