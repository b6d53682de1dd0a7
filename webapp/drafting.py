"""Drafts for the engine's look-ahead: the characters that followed the latest earlier occurrence
of the text's own ending (what Saxena calls prompt lookup decoding), as pure functions.

A draft decides only how many characters one step of the model computes, never which are
written: the engine runs the text's next character and the drafted ones through the ring file
in one step (webapp/ring.py), draws each position's character with the row's own random number
as the plain loop would, and keeps the drafted characters only up to the first one the draw
disagrees with (webapp/engine.py). A step of several characters costs little more than a step of
one here, as reading the weights is most of its time, so text that repeats itself (greedy
decoding falls into loops; names, refrains, a prompt quoted back) is written several characters
a step; elsewhere the draft is short or empty and a step writes one.
"""

from __future__ import annotations

import numpy as np

# The most characters drafted per step. A ring step of T characters cost, at batch 1 on the
# shipped model here (median of 7 x 100 calls): T=1 0.96 ms, 2 1.05, 4 1.28, 8 1.53, 16 2.30; the
# greedy benchmark text (benchmarks/generation.py) took 189 steps for 500 characters with 7 and
# 169 with 15; in two interleaved runs of 7, 11 and 15, 15 was 1.13x and 1.22x as fast as 7
# (11: 0.94x and 1.37x). The budget (Engine.decode) keeps drafts short where they are not kept.
MAX_DRAFT = 15
# The shortest ending looked up (a single character matches almost anywhere, and guesses badly),
# and the longest (enough to pick out one place; longer searches cost without choosing better).
MIN_MATCH, MAX_MATCH = 2, 16


def as_text(ids) -> str:
    """Ids as a string of code points (one per id, any vocabulary size), for str.rfind."""
    return "".join(map(chr, ids))


def draft(history: str, max_chars: int, min_match: int = MIN_MATCH, max_match: int = MAX_MATCH) -> str:
    """max_chars ids (as_text) that followed the latest earlier occurrence of the longest ending
    of `history` that occurred before, min_match to max_match long; "" when none did. Where what
    followed runs into the text's end, the text is taken to go on repeating itself (a loop of
    P characters drafts the loop again, not just what is left of its last P)."""
    if max_chars <= 0:
        return ""
    found, length = -1, 0
    for k in range(min_match, min(max_match, len(history) - 1) + 1):
        at = history.rfind(history[-k:], 0, len(history) - 1)  # ending before the last id: one follows it
        if at < 0:
            break  # no longer ending can occur either
        found, length = at, k
    if found < 0:
        return ""
    followed = history[found + length :]
    return (followed * (max_chars // len(followed) + 1))[:max_chars]


def drafts(histories: list[str], max_chars: int) -> np.ndarray:
    """One draft per row, cut to the shortest (the rows of a step advance together): ids [rows, k]."""
    found = [draft(h, max_chars) for h in histories]
    k = min(len(d) for d in found)
    return np.array([[ord(c) for c in d[:k]] for d in found], dtype=np.int64).reshape(len(histories), k)
