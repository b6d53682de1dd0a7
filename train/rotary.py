"""Rotary position embeddings: the angle tables and the rotation, in float32 throughout, so that
every runtime the model is exported to computes the same angles."""

from __future__ import annotations

import math

import torch


def rotary_frequencies(head_dim: int, base: float) -> tuple[list[float], list[float]]:
    """The rotary frequencies base^(-2i/head_dim), each split as hi + lo: hi keeps 12 significant
    bits, so that position * hi is exact in float32 for every position below 4096, and lo is the
    small rest. Angles of long texts then keep float32 precision without float64, which some
    runtimes (onnxruntime-web's builds in transformers.js) cannot run."""
    his, los = [], []
    for i in range(0, head_dim, 2):
        f = base ** (-i / head_dim)
        exponent = math.frexp(f)[1]
        hi = math.ldexp(round(math.ldexp(f, 12 - exponent)), exponent - 12)
        his.append(hi)
        los.append(f - hi)
    return his, los


def rotary_tables(length: int, head_dim: int, base: float, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and signed sin for rotary embeddings at positions 0..length-1, each [length, head_dim]
    (broadcast over batch and heads): the half-size angles twice, the sine negated in the first
    half, so that apply_rotary is three elementwise operations (few operators in the exported graph).
    Each angle is position * hi + position * lo (rotary_frequencies), its cosine and sine taken
    by the angle-addition formulas: within float32 rounding of the true values below position
    4096 (a long prefill then agrees with the plain loop's small angles); beyond, as accurate as
    a plain float32 product."""
    his, los = rotary_frequencies(head_dim, base)
    positions = torch.arange(length, dtype=torch.float32, device=device)[:, None]
    a = positions * torch.tensor(his, dtype=torch.float32, device=device)  # exact
    b = positions * torch.tensor(los, dtype=torch.float32, device=device)  # small
    cos_a, sin_a, cos_b, sin_b = a.cos(), a.sin(), b.cos(), b.sin()
    cos, sin = cos_a * cos_b - sin_a * sin_b, sin_a * cos_b + cos_a * sin_b
    return torch.cat((cos, cos), dim=-1), torch.cat((-sin, sin), dim=-1)


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate pairs (first half, second half) of x [B, heads, T, D] by the position angles
    [T, D]: (x1 cos - x2 sin, x2 cos + x1 sin), bit for bit."""
    x32 = x.float()  # rotated in float32 under bf16 autocast too, then cast back
    x1, x2 = x32.chunk(2, dim=-1)
    rotated = x32 * cos + torch.cat((x2, x1), dim=-1) * sin
    return rotated.type_as(x)
