"""The sampling specification (DESIGN.md), as small pure functions over numpy arrays.

For each next character, from the model's logits [rows, vocab]:
  1. temperature 0 means greedy: the argmax (the lowest id on ties); nothing is drawn.
  2. otherwise logits / temperature;
  3. top-k (k > 0): keep the logits >= the k-th largest (ties at the boundary are kept);
  4. top-p (p < 1): keep the smallest set of most probable characters whose probability
     reaches p (the most probable one always), computed after top-k;
  5. draw one id by inverse CDF: the first id, in id order, whose cumulative probability
     exceeds u * total, with u uniform in [0, 1) from the row's SplitMix64 stream.

Row r of a batch generated with seed s draws from the stream seeded with s + r, so it is the
same text as a single generation with seed s + r. SplitMix64 is a few lines in any language
(the JavaScript page uses the same one), which makes seeded samples portable.
"""

from __future__ import annotations

import numpy as np

MASK64 = (1 << 64) - 1


class SplitMix64:
    """Steele, Lea and Flood's SplitMix64 generator: 64-bit state, one uniform per call."""

    def __init__(self, seed: int):
        self.state = seed & MASK64

    def next_u64(self) -> int:
        self.state = (self.state + 0x9E3779B97F4A7C15) & MASK64
        z = self.state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
        return z ^ (z >> 31)

    def uniform(self) -> float:
        """A float in [0, 1) from the top 53 bits."""
        return (self.next_u64() >> 11) * 2.0**-53


def softmax(logits: np.ndarray) -> np.ndarray:
    """Probabilities along the last axis, in float64 (masked -inf logits get 0)."""
    z = logits.astype(np.float64)
    z = np.exp(z - z.max(axis=-1, keepdims=True))
    return z / z.sum(axis=-1, keepdims=True)


def top_k_filter(logits: np.ndarray, k: int) -> np.ndarray:
    if k <= 0 or k >= logits.shape[-1]:
        return logits
    kth = np.partition(logits, -k, axis=-1)[..., -k, None]
    return np.where(logits < kth, -np.inf, logits)


def top_p_filter(logits: np.ndarray, p: float) -> np.ndarray:
    if p >= 1.0:
        return logits
    probs = softmax(logits)
    order = np.argsort(-probs, axis=-1, kind="stable")
    sorted_probs = np.take_along_axis(probs, order, axis=-1)
    cumulative = np.cumsum(sorted_probs, axis=-1)
    mass_before = np.concatenate([np.zeros_like(cumulative[..., :1]), cumulative[..., :-1]], axis=-1)
    drop_sorted = mass_before >= p  # the first (most probable) has 0 before it: always kept
    drop = np.zeros_like(drop_sorted)
    np.put_along_axis(drop, order, drop_sorted, axis=-1)
    return np.where(drop, -np.inf, logits)


def sampling_probs(logits: np.ndarray, temperature: float, top_k: int, top_p: float) -> np.ndarray:
    """The distribution a draw is made from (temperature > 0)."""
    scaled = logits.astype(np.float64) / temperature
    return softmax(top_p_filter(top_k_filter(scaled, top_k), top_p))


def draw_rows(probs: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Inverse CDF per row of probabilities [rows, vocab], with one uniform each [rows]: the number
    of cumulative probabilities at or below u * total (the cumulative sums run in id order, as a
    row's own would, and never decrease), at most the last id."""
    cdf = np.cumsum(probs, axis=-1)
    return np.minimum((cdf <= (u * cdf[:, -1])[:, None]).sum(axis=-1), probs.shape[-1] - 1)


def draw(probs: np.ndarray, u: float) -> int:
    """Inverse CDF over one row of probabilities."""
    return int(draw_rows(probs[None], np.array([u]))[0])


def next_ids(logits: np.ndarray, temperature: float, top_k: int, top_p: float, rngs: list[SplitMix64]) -> np.ndarray:
    """One id per row of logits [rows, vocab]."""
    if temperature == 0:
        return logits.argmax(axis=-1)
    probs = sampling_probs(logits, temperature, top_k, top_p)
    return draw_rows(probs, np.array([rng.uniform() for rng in rngs]))


def draw_blocks(block: np.ndarray, drafted: np.ndarray, temperature: float, top_k: int, top_p: float,
                rngs: list[SplitMix64], groups: np.ndarray, limits: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The characters one step of drafted blocks writes (webapp/drafting.py), for rows that belong
    to groups (the rows of one request, which advance together): from the logits block
    [rows, T, vocab] after each row's fed id and its drafted ids [rows, T - 1] (-1 where a row's
    draft is shorter), each position's ids drawn as the plain loop draws them (a row's stream
    advancing once per position it writes), up to the first position where a row of its group
    draws other than its draft, or the block's last one, and at most its group's limit (`groups`
    and `limits` [rows]: the group's number and its most characters). Returns the ids and the
    probability the model gave each [rows, T] (valid up to the count) and each row's count [rows]."""
    n_rows, width = block.shape[:2]
    n_groups = int(groups.max()) + 1 if n_rows else 0
    ids = np.zeros((n_rows, width), np.int64)
    counts = np.full(n_rows, width, np.int64)
    # A row at its limit stops as at the end of its draft (a draw never equals -1).
    drafted = np.where(np.arange(width - 1) < limits[:, None] - 1, drafted, -1)
    live, live_rngs = slice(None), rngs  # the rows still drawing (all, as a slice, until one stops)
    for j in range(width - 1):
        drawn = ids[live, j] = next_ids(block[live, j], temperature, top_k, top_p, live_rngs)
        stopping = drawn != drafted[live, j]
        if stopping.any():  # a group stops with its first row that stops
            rows = np.arange(n_rows)[live]
            stopped = np.zeros(n_groups, bool)
            stopped[groups[rows[stopping]]] = True
            leaving = stopped[groups[rows]]
            counts[rows[leaving]] = j + 1
            live = rows[~leaving]
            live_rngs = [rngs[r] for r in live]
            if len(live) == 0:
                break
    else:
        ids[live, width - 1] = next_ids(block[live, width - 1], temperature, top_k, top_p, live_rngs)
    probs = softmax(block)[np.arange(n_rows)[:, None], np.arange(width), ids]
    return ids, probs, counts


def draw_drafted(block: np.ndarray, drafted: np.ndarray, temperature: float, top_k: int, top_p: float,
                 rngs: list[SplitMix64], limit: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """draw_blocks for rows that all advance together (one request's): (ids [rows], the
    probability the model gave each) per character written, at most `limit`."""
    rows = len(block)
    ids, probs, counts = draw_blocks(block, drafted, temperature, top_k, top_p, rngs, np.zeros(rows, np.int64),
                                     np.full(rows, limit))
    return [(ids[:, j], probs[:, j]) for j in range(counts[0])]
