"""How a model is measured while it trains and after: the lecture's estimate over random
batches, and the whole-split loss in consecutive windows (the figure reported everywhere:
docs/training.md)."""

from __future__ import annotations

import contextlib

import torch
import torch.distributed as dist
from torch.nn import functional as F

from .config import TrainConfig
from .data import Corpus, get_batch
from .distributed import Dist, step_seed
from .model import GPTLanguageModel
from .text import eval_batches


def autocast_for(device: torch.device):
    # bf16 only where it is fast; CPUs here run bf16 matmuls hundreds of times slower.
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


@torch.no_grad()
def estimate_loss(model, corpus: Corpus, cfg: TrainConfig, block_size: int, step: int, job: Dist, device) -> dict:
    """The lecture's progress estimate: mean loss over eval_iters random batches per split."""
    model.eval()
    out = {}
    g = torch.Generator().manual_seed(step_seed(cfg.seed, step, job.rank, stream=1))  # never the training draws
    for split, data in (("train", corpus.train), ("val", corpus.val)):
        losses = torch.zeros(cfg.eval_iters)
        for k in range(cfg.eval_iters):
            x, y = get_batch(data, cfg.batch_size, block_size, g)
            with autocast_for(device):
                _, loss, _ = model(x.to(device), y.to(device))
            losses[k] = loss.item()
        mean = losses.mean()
        if job.size > 1:
            dist.all_reduce(mean)
            mean /= job.size
        out[split] = mean.item()
    model.train()
    return out


@torch.no_grad()
def split_char_losses(model: GPTLanguageModel, data: torch.Tensor, block_size: int, device, batch_size: int = 64):
    """Cross-entropy of every next-character prediction in `data`, read in consecutive block_size
    windows (the reported loss's reading: docs/training.md): yields [windows, length] tensors, column j the predictions
    from j + 1 characters of context. The model is in eval mode while it runs."""
    was_training = model.training
    model.eval()
    try:
        for starts, length in eval_batches(len(data), block_size, batch_size):
            positions = torch.tensor(starts)[:, None] + torch.arange(length)
            x, y = data[positions].to(device), data[positions + 1].to(device)
            logits, _, _ = model(x)
            yield F.cross_entropy(logits.float().transpose(1, 2), y, reduction="none")
    finally:
        model.train(was_training)


def full_split_loss(
    model: GPTLanguageModel, data: torch.Tensor, block_size: int, device, batch_size: int = 64
) -> float:
    """Mean cross-entropy (nats/char) over the whole split, in consecutive block_size windows
    (the reported validation loss: docs/training.md): deterministic and independent of batch size."""
    total, count = 0.0, 0
    for losses in split_char_losses(model, data, block_size, device, batch_size):
        total += losses.double().sum().item()
        count += losses.numel()
    return total / count
