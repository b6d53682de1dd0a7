"""Drafts for the engine's look-ahead, as pure functions: the characters that followed the latest
earlier occurrence of the text's own ending (what Saxena calls prompt lookup decoding), or, where
the text has not repeated itself, the training text's most frequent continuations (a draft
table, written by `python -m export` beside the model file).

A draft decides only how many characters one step of the model computes, never which are
written: the engine runs the text's next character and the drafted ones through the ring file
in one step (webapp/inference/ring.py), draws each position's character with the row's own random number
as the plain loop would, and keeps the drafted characters only up to the first one the draw
disagrees with (webapp/inference/loop.py). A step of several characters costs little more than a
step of one, as reading the weights is most of its time, so text that repeats itself (greedy
decoding falls into loops; names, refrains, a prompt quoted back) or that follows the training
text's habits (words, names, line openings) is written several characters a step; elsewhere the
draft is short and a step writes one.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .onnx_model import beside, first_line

# The most characters drafted per step, chosen by timing 7, 11, 15 and 31 side by side
# (docs/speed.md); the budget (next_budget) keeps drafts short where they are not kept.
MAX_DRAFT = 15
# The shortest ending looked up (a single character matches almost anywhere, and guesses badly),
# and the longest (enough to pick out one place; longer searches cost without choosing better).
MIN_MATCH, MAX_MATCH = 2, 16
# With a draft table, the text's own repeats are drafted only where an ending this long occurred
# before: shorter matches guess worse than the table (below).
REPEAT_MATCH = 6
# A draft table keeps contexts of up to TABLE_ORDER characters seen at least TABLE_MIN_COUNT
# times in the training text: the smallest table that saved about as many steps as larger ones
# (counted in ring steps for the benchmark prompt; docs/speed.md).
TABLE_ORDER, TABLE_MIN_COUNT = 5, 5
TABLE_FORMAT = "chargpt-drafts/1"
TABLE_SUFFIX = ".drafts.json"  # MODEL.onnx -> MODEL.drafts.json


def table_path(model_path: Path) -> Path:
    return beside(model_path, TABLE_SUFFIX)


class DraftTableError(ValueError):
    """A draft table file that cannot be used; the message says why in one sentence."""


def as_text(ids) -> str:
    """Ids as a string of code points (one per id, any vocabulary size), for str.rfind."""
    return "".join(map(chr, ids))


@dataclass(frozen=True)
class DraftTable:
    """The id (as_text) that most often followed each context of up to `order` ids in the training
    text; a context is left out where the next shorter one gives the same id (the lookup falls
    back to it), and the empty context gives the text's most frequent id."""

    next: dict[str, str]
    order: int

    def follow(self, history: str, max_chars: int) -> str:
        """max_chars ids, each the table's continuation of the longest context it holds that ends
        the text so far (history and the ids drafted before it); shorter when none does."""
        text, out = history[-self.order :], []
        for _ in range(max_chars):
            found = next(
                (
                    self.next[text[k:]]
                    for k in range(max(len(text) - self.order, 0), len(text) + 1)
                    if text[k:] in self.next
                ),
                None,
            )
            if found is None:
                break
            out.append(found)
            text = (text + found)[-self.order :]
        return "".join(out)


def build_table(ids: str, order: int = TABLE_ORDER, min_count: int = TABLE_MIN_COUNT) -> DraftTable:
    """The draft table of a training text (ids as_text): for every context of 0 to `order` ids
    followed by something at least `min_count` times, the id that followed it most often (the
    lowest on ties), less the contexts whose next shorter one gives the same id."""
    followed = Counter(ids[i : i + k + 1] for k in range(order + 1) for i in range(len(ids) - k))
    seen, best = Counter(), {}
    for gram, count in sorted(followed.items()):  # sorted: on ties the lowest id wins
        context = gram[:-1]
        seen[context] += count
        if count > best.get(context, ("", 0))[1]:
            best[context] = (gram[-1], count)
    table = {c: n for c, (n, _) in best.items() if seen[c] >= min_count}
    # Every context's shorter ones are in `table` too (each was followed at least as often), so a
    # lookup of the pruned table falls back to an entry that gives what the dropped one gave.
    return DraftTable({c: n for c, n in table.items() if c == "" or table[c[1:]] != n}, order)


def table_json(table: DraftTable, vocab: list[str], min_count: int, source: dict) -> dict:
    """The draft table file's contents: contexts and continuations in the model's characters."""

    def spell(ids: str) -> str:
        return "".join(vocab[ord(i)] for i in ids)

    return {
        "format": TABLE_FORMAT,
        "order": table.order,
        "min_count": min_count,
        "source": source,
        "next": {spell(c): spell(n) for c, n in sorted(table.next.items())},
    }


def read_table(data, vocab: list[str]) -> DraftTable:
    """A DraftTable from a draft table file's JSON; DraftTableError if it is not one for `vocab`."""
    if not isinstance(data, dict) or data.get("format") != TABLE_FORMAT:
        raise DraftTableError(f"it is not a draft table of format {TABLE_FORMAT!r}")
    order, entries = data.get("order"), data.get("next")
    if not (isinstance(order, int) and 0 <= order <= 64 and isinstance(entries, dict)):
        raise DraftTableError("its order or its table is missing or malformed")
    index = {c: chr(i) for i, c in enumerate(vocab)}
    try:
        table = {
            "".join(index[c] for c in context): index[then]
            for context, then in entries.items()
            if len(context) <= order
        }
    except (KeyError, TypeError):
        raise DraftTableError("it holds characters that are not in the model's vocabulary") from None
    return DraftTable(table, order)


def load_table(path: Path, vocab: list[str]) -> tuple[DraftTable | None, str]:
    """The draft table file at `path`: (table, "") when it is there and fits `vocab`; (None, why
    not) otherwise ("" when there is none). A model decodes the same text without one."""
    if not path.is_file():
        return None, ""
    try:
        return read_table(json.loads(path.read_text(encoding="utf-8")), vocab), ""
    except (OSError, ValueError) as e:  # DraftTableError is a ValueError, as is bad JSON or UTF-8
        return None, f"{path.name} was not used ({first_line(e)}); drafting from the text's own repeats only."


def draft(
    history: str,
    max_chars: int,
    table: DraftTable | None = None,
    min_match: int = MIN_MATCH,
    max_match: int = MAX_MATCH,
) -> str:
    """max_chars ids (as_text) that followed the latest earlier occurrence of the longest ending
    of `history` that occurred before, min_match to max_match long; "" when none did. Where what
    followed runs into the text's end, the text is taken to go on repeating itself (a loop of
    P characters drafts the loop again, not just what is left of its last P). With a table, the
    table's continuation instead, unless an ending of REPEAT_MATCH ids occurred before."""
    if max_chars <= 0:
        return ""
    found, length = -1, 0
    for k in range(min_match, min(max_match, len(history) - 1) + 1):
        at = history.rfind(history[-k:], 0, len(history) - 1)  # ending before the last id: one follows it
        if at < 0:
            break  # no longer ending can occur either
        found, length = at, k
    if table is not None and length < REPEAT_MATCH:
        return table.follow(history, max_chars)
    if found < 0:
        return ""
    followed = history[found + length :]
    return (followed * (max_chars // len(followed) + 1))[:max_chars]


def next_budget(budget: int, drafted: int, written: int, max_draft: int) -> int:
    """The most characters the next draft may have: 2 more after a draft kept whole (a step
    of `drafted` characters that wrote drafted + 1), 1 fewer (at least 1) after one that was not."""
    if not drafted:
        return budget
    return min(budget + 2, max_draft) if written == drafted + 1 else max(budget - 1, 1)


def drafts(histories: list[str], max_chars: int, table: DraftTable | None = None) -> np.ndarray:
    """One draft per row, cut to the shortest (the rows of a step advance together): ids [rows, k]."""
    found = [draft(h, max_chars, table) for h in histories]
    k = min(len(d) for d in found)
    return np.array([[ord(c) for c in d[:k]] for d in found], dtype=np.int64).reshape(len(histories), k)
