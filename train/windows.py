"""The attention window as pure tensor functions: the mask of a sliding window, the last
positions of a cache, and attention weights laid out by window slot."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def last_positions(cache: torch.Tensor, n: int) -> torch.Tensor:
    """The last n positions (dim 2) of a cache [B, H, L, D], all of them when L <= n. The start
    is clamped here rather than left negative: ONNX clamps a slice's start into range, but not
    every runtime does (docs/model-folder.md), and this keeps the graph to what all of them
    agree on."""
    if n <= 0:
        return cache[:, :, :0]
    length = cache.shape[2]
    return cache[:, :, torch.sym_max(length - n, 0) : length]


def window_weights(probs: torch.Tensor, query_index: torch.Tensor, window: int) -> torch.Tensor:
    """Attention probabilities [..., T, S] (query t is key query_index[t], T <= S) in window
    order [..., T, window]: slot j holds the weight on key query_index[t] - window + 1 + j, the
    query's own key last, and 0 where that key would be before the first."""
    padded = F.pad(probs, (window - 1, 0))
    index = query_index[:, None] + torch.arange(window, device=probs.device)[None, :]  # [T, window]
    return padded.gather(-1, index.expand(*probs.shape[:-1], window))


def sliding_window_mask(past_len: int, T: int, window: int, device=None) -> torch.Tensor:
    """Additive mask [T, past_len + T]: query i (at position past_len + i) sees the keys at the
    positions past_len + i - window + 1 .. past_len + i (0 there, -inf elsewhere)."""
    behind = (
        torch.arange(past_len, past_len + T, device=device)[:, None]
        - torch.arange(past_len + T, device=device)[None, :]
    )
    return torch.zeros(behind.shape, device=device).masked_fill((behind < 0) | (behind >= window), float("-inf"))
