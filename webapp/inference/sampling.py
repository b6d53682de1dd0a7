"""The sampling specification (docs/serving.md, "The API"): the one settings object, and small pure functions over
numpy arrays.

`SamplingParams` holds every setting of a request (as vLLM's object of that name does) and checks
it once, where it is made; the loop passes it along whole, one per row (as TGI's heterogeneous
next-token chooser does), so rows of a batch each sample with their own request's settings.

For each next character, from the model's logits [rows, vocab], each row with its settings:
  1. temperature 0 means greedy: the argmax (the lowest id on ties); nothing is drawn.
  2. otherwise logits / temperature;
  3. min-p (min_p > 0): keep the characters whose probability is at least min_p times the most
     likely one's (transformers' MinPLogitsWarper);
  4. top-k (k > 0): keep the logits >= the k-th largest (ties at the boundary are kept);
  5. top-p (p < 1): keep the smallest set of most probable characters whose probability
     reaches p (the most probable one always), computed after the filters before it;
  6. draw one id by inverse CDF: the first id, in id order, whose cumulative probability
     exceeds u * total, with u uniform in [0, 1) from the row's SplitMix64 stream.

A request may also ask what the model considered at each character (`alternatives`, as vLLM's
`logprobs` asks for the likeliest tokens): the likeliest characters there, with their
probabilities in the model's distribution and in the one the draw was made from (`top_alternatives`).

Row r of a request with seed s draws from the stream seeded with s + r, so it is the same text as
a single generation with seed s + r. SplitMix64 is a few lines in any language (the JavaScript
port, webapp/web/chargpt.js, uses the same one), which makes seeded samples portable.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

MASK64 = (1 << 64) - 1
MAX_NEW_TOKENS = 2000  # per request
MAX_SAMPLES = 8
MAX_SEED = 2**63 - 1
MAX_TEMPERATURE = 10
MAX_ALTERNATIVES = 20  # the likeliest characters a request may ask about at each new one
PAGE_ALTERNATIVES = 5  # what the pages ask for (webapp/web/views.js's ALTERNATIVES keeps the same)
# The JavaScript port (webapp/web/chargpt.js, LIMITS) keeps the same limits; tests/test_web.py ties them.


class SettingsError(ValueError):
    """A sampling setting out of range; the message is one sentence saying which and why."""


def is_number(x) -> bool:
    if isinstance(x, bool) or not isinstance(x, (int, float, np.integer, np.floating)):
        return False
    return isinstance(x, (int, np.integer)) or math.isfinite(
        x
    )  # ints of any size are finite (np.isfinite fails on 10**30)


def is_integer(x) -> bool:
    return is_number(x) and float(x).is_integer()


@dataclass(frozen=True)
class SamplingParams:
    """One request's settings. Out-of-range values raise SettingsError with one sentence."""

    max_new_tokens: int = 200
    temperature: float = 0.8
    top_k: int = 0  # 0 = off
    top_p: float = 1.0  # 1 = off
    min_p: float = 0.0  # 0 = off
    seed: int = 0
    stop: str | None = None  # generation of a row ends before the first occurrence of this
    num_samples: int = 1
    alternatives: int = 0  # the likeliest characters reported with each new one (top_alternatives); 0 = none

    def __post_init__(self):
        checks = [
            (
                is_integer(self.max_new_tokens) and 1 <= self.max_new_tokens <= MAX_NEW_TOKENS,
                f"max_new_tokens must be a whole number from 1 to {MAX_NEW_TOKENS}, not {self.max_new_tokens!r}",
            ),
            (
                is_number(self.temperature) and 0 <= self.temperature <= MAX_TEMPERATURE,
                f"temperature must be between 0 (greedy) and {MAX_TEMPERATURE}, not {self.temperature!r}",
            ),
            (
                is_integer(self.top_k) and self.top_k >= 0,
                f"top_k must be a whole number, 0 for off, not {self.top_k!r}",
            ),
            (
                is_number(self.top_p) and 0 < self.top_p <= 1,
                f"top_p must be above 0 and at most 1 (1 = off), not {self.top_p!r}",
            ),
            (
                is_number(self.min_p) and 0 <= self.min_p <= 1,
                f"min_p must be between 0 (off) and 1, not {self.min_p!r}",
            ),
            (
                is_integer(self.seed) and 0 <= self.seed <= MAX_SEED,
                f"seed must be a whole number from 0 to 2^63-1, not {self.seed!r}",
            ),
            (
                is_integer(self.num_samples) and 1 <= self.num_samples <= MAX_SAMPLES,
                f"num_samples must be from 1 to {MAX_SAMPLES}, not {self.num_samples!r}",
            ),
            (
                self.stop is None or (isinstance(self.stop, str) and len(self.stop) <= 100),
                "stop must be a string of at most 100 characters",
            ),
            (
                is_integer(self.alternatives) and 0 <= self.alternatives <= MAX_ALTERNATIVES,
                f"alternatives must be a whole number from 0 to {MAX_ALTERNATIVES}, not {self.alternatives!r}",
            ),
        ]
        for ok, message in checks:
            if not ok:
                raise SettingsError(message + ".")
        for name in (
            "max_new_tokens",
            "top_k",
            "seed",
            "num_samples",
            "alternatives",
        ):  # 1000.0 (from JSON, or "1e3") -> 1000
            object.__setattr__(self, name, int(getattr(self, name)))


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


def streams(params: SamplingParams) -> list[SplitMix64]:
    """A request's random streams, one per row: row r is seeded with seed + r."""
    return [SplitMix64(params.seed + r) for r in range(params.num_samples)]


def softmax(logits: np.ndarray) -> np.ndarray:
    """Probabilities along the last axis, in float64 (masked -inf logits get 0)."""
    z = logits.astype(np.float64)
    z = np.exp(z - z.max(axis=-1, keepdims=True))
    return z / z.sum(axis=-1, keepdims=True)


def per_row(values: Sequence) -> np.ndarray:
    """One setting's value per row, shaped to broadcast against [rows, vocab]."""
    return np.asarray(values).reshape(-1, 1)


# Each rule takes logits [rows, vocab] and its setting's value for each row (a sequence); a rule
# that is off in every row returns the logits untouched, having looked at the values only.


def min_p_filter(logits: np.ndarray, min_p: Sequence[float]) -> np.ndarray:
    """Keep the characters whose probability is at least min_p (0 = off) times the most likely
    one's: exp(logit - max logit) >= min_p, the probabilities' ratio without dividing."""
    if not any(min_p):
        return logits
    ratio = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return np.where(ratio < per_row(min_p), -np.inf, logits)


def top_k_filter(logits: np.ndarray, k: Sequence[int]) -> np.ndarray:
    """Keep the logits >= the k-th largest (0, or at least the vocabulary, = off)."""
    vocab = logits.shape[-1]
    if not any(0 < x < vocab for x in k):
        return logits
    k = np.array([x if 0 < x < vocab else vocab for x in k]).reshape(-1, 1)  # off: the smallest logit, which keeps all
    kth = np.take_along_axis(np.sort(logits, axis=-1), vocab - k, axis=-1)
    return np.where(logits < kth, -np.inf, logits)


def top_p_filter(logits: np.ndarray, p: Sequence[float]) -> np.ndarray:
    """Keep the smallest set of most probable characters whose probability reaches p (1 = off);
    the most probable one always, ties in probability ordered by id."""
    if all(x >= 1.0 for x in p):
        return logits
    p = per_row(p)
    probs = softmax(logits)
    order = np.argsort(-probs, axis=-1, kind="stable")
    cumulative = np.cumsum(np.take_along_axis(probs, order, axis=-1), axis=-1)
    mass_before = np.concatenate([np.zeros_like(cumulative[..., :1]), cumulative[..., :-1]], axis=-1)
    drop_sorted = (mass_before >= p) & (p < 1.0)  # the first (most probable) has 0 before it: always kept
    drop = np.zeros_like(drop_sorted)
    np.put_along_axis(drop, order, drop_sorted, axis=-1)
    return np.where(drop, -np.inf, logits)


def sampling_probs(logits: np.ndarray, params: Sequence[SamplingParams]) -> np.ndarray:
    """The distribution each row of logits [rows, vocab] is drawn from, with its own settings
    (params: one per row, temperatures above 0)."""
    z = logits.astype(np.float64) / per_row([p.temperature for p in params])
    z = min_p_filter(z, [p.min_p for p in params])
    z = top_k_filter(z, [p.top_k for p in params])
    z = top_p_filter(z, [p.top_p for p in params])
    return softmax(z)


def sampling_distribution(logits: np.ndarray, params: Sequence[SamplingParams]) -> np.ndarray:
    """The distribution each row's next id is drawn from [rows, vocab], any temperature: all on
    the argmax (the lowest id on ties) at temperature 0, else sampling_probs."""
    probs = np.zeros(logits.shape)
    probs[np.arange(len(logits)), logits.argmax(axis=-1)] = 1.0
    drawn = [r for r, p in enumerate(params) if p.temperature > 0]
    if drawn:
        probs[drawn] = sampling_probs(logits[drawn], [params[r] for r in drawn])
    return probs


class Alternatives(NamedTuple):
    """What rows considered at one position: each row's k likeliest ids (most likely first, the
    lower id first on ties), their probabilities in the model's distribution (temperature 1) and
    in the one the draw was made from (0 where temperature 0 or a filter left them out), and the
    drawn id's probability in the latter."""

    ids: np.ndarray  # [rows, k]
    model: np.ndarray  # [rows, k]
    sampled: np.ndarray  # [rows, k]
    drawn: np.ndarray  # [rows]


def likeliest_first(logits: np.ndarray) -> np.ndarray:
    """Each row's ids by their logits [..., vocab], most likely first, the lower id first on ties."""
    return np.argsort(-logits, axis=-1, kind="stable")


def top_alternatives(logits: np.ndarray, params: Sequence[SamplingParams], drawn: np.ndarray, k: int) -> Alternatives:
    """The k likeliest of each row of logits [rows, vocab] (params: one per row), from which the
    ids `drawn` [rows] were drawn."""
    ids = likeliest_first(logits)[:, :k]
    model, sampled = softmax(logits), sampling_distribution(logits, params)
    return Alternatives(
        ids,
        np.take_along_axis(model, ids, axis=-1),
        np.take_along_axis(sampled, ids, axis=-1),
        sampled[np.arange(len(logits)), drawn],
    )


def draw_rows(probs: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Inverse CDF per row of probabilities [rows, vocab], with one uniform each [rows]: the number
    of cumulative probabilities at or below u * total (the cumulative sums run in id order, as a
    row's own would, and never decrease), at most the last id."""
    cdf = np.cumsum(probs, axis=-1)
    return np.minimum((cdf <= (u * cdf[:, -1])[:, None]).sum(axis=-1), probs.shape[-1] - 1)


def next_ids(logits: np.ndarray, params: Sequence[SamplingParams], rngs: Sequence[SplitMix64]) -> np.ndarray:
    """One id per row of logits [rows, vocab], each row with its own settings and stream: greedy
    rows take the argmax and leave their stream alone, the others draw once."""
    drawn = [r for r, p in enumerate(params) if p.temperature > 0]
    if len(drawn) == len(params):  # every row draws (the usual case: no copies)
        return draw_rows(sampling_probs(logits, params), np.array([rng.uniform() for rng in rngs]))
    ids = logits.argmax(axis=-1)
    if drawn:
        probs = sampling_probs(logits[drawn], [params[r] for r in drawn])
        ids[drawn] = draw_rows(probs, np.array([rngs[r].uniform() for r in drawn]))
    return ids


def draw_blocks(
    logits: np.ndarray,
    drafted: np.ndarray,
    params: Sequence[SamplingParams],
    rngs: Sequence[SplitMix64],
    groups: np.ndarray,
    limits: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The characters one step of drafted blocks writes (webapp/inference/drafting.py), for rows
    that belong to groups (the rows of one request, which advance together): from the logits block
    [rows, T, vocab] after each row's fed id and its drafted ids [rows, T - 1] (-1 where a row's
    draft is shorter), each position's ids drawn as the plain loop draws them (a row's stream
    advancing once per position it writes), up to the first position where a row of its group
    draws other than its draft, or the block's last one, and at most its group's limit (`groups`
    and `limits` [rows]: the group's number and its most characters). params and rngs: each row's.
    Returns the ids and the probability the model gave each [rows, T] (valid up to the count) and
    each row's count [rows]."""
    n_rows, width = logits.shape[:2]
    n_groups = int(groups.max()) + 1 if n_rows else 0
    ids = np.zeros((n_rows, width), np.int64)
    counts = np.full(n_rows, width, np.int64)
    # A row at its limit stops as at the end of its draft (a draw never equals -1).
    drafted = np.where(np.arange(width - 1) < limits[:, None] - 1, drafted, -1)
    live, live_params, live_rngs = (
        slice(None),
        params,
        rngs,
    )  # the rows still drawing (all, as a slice, until one stops)
    for j in range(width - 1):
        drawn = ids[live, j] = next_ids(logits[live, j], live_params, live_rngs)
        stopping = drawn != drafted[live, j]
        if stopping.any():  # a group stops with its first row that stops
            rows = np.arange(n_rows)[live]
            stopped = np.zeros(n_groups, bool)
            stopped[groups[rows[stopping]]] = True
            leaving = stopped[groups[rows]]
            counts[rows[leaving]] = j + 1
            live = rows[~leaving]
            live_params, live_rngs = [params[r] for r in live], [rngs[r] for r in live]
            if len(live) == 0:
                break
    else:
        ids[live, width - 1] = next_ids(logits[live, width - 1], live_params, live_rngs)
    probs = softmax(logits)[np.arange(n_rows)[:, None], np.arange(width), ids]
    return ids, probs, counts
