"""How hard training works the hardware: model FLOPs per character and the measured matmul peak.

The utilisation the trainer reports is (model FLOPs per character x characters/s) / peak,
where the peak is what one large float32 `a @ b` reaches on this machine in the same process
(same threads, same moment, so a busy machine lowers both).
"""

from __future__ import annotations

import os
import time

import torch

from .model import GPTConfig


def matmul_params(cfg: GPTConfig) -> int:
    """Weights that take part in a matrix multiply per character: every Linear layer, the output
    head included; embeddings (a lookup), norms and biases are left out."""
    d, hidden = cfg.n_embd, cfg.mlp_ratio * cfg.n_embd
    mlp = 3 * d * (2 * hidden // 3) if cfg.activation == "swiglu" else 2 * d * hidden
    attention = 4 * d * d  # fused q/k/v and the output projection
    return cfg.n_layer * (attention + mlp) + d * cfg.vocab_size


def train_flops_per_char(cfg: GPTConfig) -> int:
    """Forward + backward FLOPs per trained character, the PaLM/nanoGPT convention: 6 per matmul
    weight, plus 12 * n_layer * block_size * n_embd for the attention scores and their use
    (counted over the full window, as that convention does)."""
    return 6 * matmul_params(cfg) + 12 * cfg.n_layer * cfg.block_size * cfg.n_embd


def measure_matmul_peak(device: torch.device, seconds: float = 3.0, size: int = 2048) -> float:
    """float32 FLOP/s of a large square matmul, timed for about `seconds` (one product at least)
    after a warm-up."""
    a = torch.randn(size, size, device=device)
    b = torch.randn(size, size, device=device)
    flops = 2 * size**3
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    a @ b  # warm-up: thread pool, caches
    sync()
    count, start = 0, time.perf_counter()
    while count == 0 or time.perf_counter() - start < seconds:
        a @ b
        count += 1
        sync()
    return count * flops / (time.perf_counter() - start)


# How long the matmul peak is timed at start: 2 s unless CHARGPT_PEAK_SECONDS says otherwise
# (the tests' runs of a few seconds time it for a tenth of a second).
PEAK_SECONDS_ENV, PEAK_SECONDS = "CHARGPT_PEAK_SECONDS", 2.0


def peak_seconds() -> float:
    """PEAK_SECONDS, or the number CHARGPT_PEAK_SECONDS holds (a malformed one is ignored)."""
    try:
        return max(0.0, float(os.environ.get(PEAK_SECONDS_ENV, PEAK_SECONDS)))
    except ValueError:
        return PEAK_SECONDS
