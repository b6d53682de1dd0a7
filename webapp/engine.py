"""The inference engine: text generation from an exported chargpt model, with a KV cache.

onnxruntime and numpy only (no torch, no `train`): this is what a hosted Space runs.

Decoding is the plain loop that any runtime runs on the graph (format 2 keeps the window in
it): one prefill of the prompt's last `receptive_field` characters (the earlier ones cannot
change what comes next), then one cached step per new character, each step's cache fed back as
the next one's past. So the engine writes the same text as onnxruntime-genai, transformers.js
or the JavaScript page given the same prompt, at a constant cost per character. (With the ring
file, a step may also check characters drafted from the text's own repeats: still the plain
loop's text, in fewer steps; see `Engine.decode`.)
"""

from __future__ import annotations

import math
import os
import unicodedata
from dataclasses import dataclass, field
from typing import Callable, Iterator

import numpy as np

from .drafting import MAX_DRAFT, as_text, drafts, load_table, table_path
from .onnx_model import OnnxModel
from .ring import load_ring
from .sampling import SplitMix64, draw_drafted

MAX_NEW_TOKENS = 2000  # per request, on the server
MAX_PROMPT_CHARS = 10_000
MAX_SAMPLES = 8
MAX_SEED = 2**63 - 1
MAX_TEMPERATURE = 10
# The JavaScript port (webapp/web/chargpt.js, LIMITS) keeps the same limits; tests/test_web.py ties them.


# The loop over ids: (prompt ids, settings) -> (ids [rows], their probabilities) per new character.
Decode = Callable[[list[int], "Settings"], Iterator[tuple[np.ndarray, np.ndarray]]]


class SettingsError(ValueError):
    """A sampling setting out of range; the message is one sentence saying which and why."""


@dataclass(frozen=True)
class Settings:
    max_new_tokens: int = 200
    temperature: float = 0.8
    top_k: int = 0  # 0 = off
    top_p: float = 1.0  # 1 = off
    seed: int = 0
    stop: str | None = None  # generation of a row ends before the first occurrence of this
    num_samples: int = 1

    def __post_init__(self):
        checks = [
            (is_integer(self.max_new_tokens) and 1 <= self.max_new_tokens <= MAX_NEW_TOKENS,
             f"max_new_tokens must be a whole number from 1 to {MAX_NEW_TOKENS}, not {self.max_new_tokens!r}"),
            (is_number(self.temperature) and 0 <= self.temperature <= MAX_TEMPERATURE,
             f"temperature must be between 0 (greedy) and {MAX_TEMPERATURE}, not {self.temperature!r}"),
            (is_integer(self.top_k) and self.top_k >= 0, f"top_k must be a whole number, 0 for off, not {self.top_k!r}"),
            (is_number(self.top_p) and 0 < self.top_p <= 1, f"top_p must be above 0 and at most 1 (1 = off), not {self.top_p!r}"),
            (is_integer(self.seed) and 0 <= self.seed <= MAX_SEED, f"seed must be a whole number from 0 to 2^63-1, not {self.seed!r}"),
            (is_integer(self.num_samples) and 1 <= self.num_samples <= MAX_SAMPLES,
             f"num_samples must be from 1 to {MAX_SAMPLES}, not {self.num_samples!r}"),
            (self.stop is None or (isinstance(self.stop, str) and len(self.stop) <= 100), "stop must be a string of at most 100 characters"),
        ]
        for ok, message in checks:
            if not ok:
                raise SettingsError(message + ".")
        for name in ("max_new_tokens", "top_k", "seed", "num_samples"):  # 1000.0 (from JSON, or "1e3") -> 1000
            object.__setattr__(self, name, int(getattr(self, name)))


def is_number(x) -> bool:
    if isinstance(x, bool) or not isinstance(x, (int, float, np.integer, np.floating)):
        return False
    return isinstance(x, (int, np.integer)) or math.isfinite(x)  # ints of any size are finite (np.isfinite fails on 10**30)


def is_integer(x) -> bool:
    return is_number(x) and float(x).is_integer()


@dataclass(frozen=True)
class EncodedPrompt:
    ids: list[int]
    text: str  # the prompt as the model reads it (after replacements and drops)
    replaced: dict[str, str] = field(default_factory=dict)  # e.g. {"é": "e"}
    dropped: list[str] = field(default_factory=list)  # characters with no stand-in, once each

    def notice(self) -> str:
        parts = []
        if self.replaced:
            parts.append("replaced " + ", ".join(f"{a!r}→{b!r}" for a, b in self.replaced.items()))
        if self.dropped:
            shown = ", ".join(repr(c) for c in self.dropped[:10]) + (" …" if len(self.dropped) > 10 else "")
            parts.append(f"dropped {shown} (not in the model's vocabulary)")
        return "; ".join(parts)


def encode_prompt(text: str, vocab: list[str], start: str = "\n") -> EncodedPrompt:
    """Map the prompt to ids: a character outside the vocabulary is replaced by its accent-free
    form when that is in the vocabulary (é → e), else dropped. An empty result starts from
    `start` (a newline, as the lecture's generation does)."""
    index = {c: i for i, c in enumerate(vocab)}
    ids, kept, replaced, dropped = [], [], {}, []
    for ch in text:
        if ch not in index:
            plain = "".join(c for c in unicodedata.normalize("NFKD", ch) if not unicodedata.combining(c))
            if plain and all(c in index for c in plain):
                replaced[ch] = plain
                ch = plain
            else:
                if ch not in dropped:
                    dropped.append(ch)
                continue
        kept.append(ch)
        ids.extend(index[c] for c in ch)
    if not ids:
        first = start if start in index else vocab[0]
        return EncodedPrompt([index[first]], first, replaced, dropped)
    return EncodedPrompt(ids, "".join(kept), replaced, dropped)


class StopFilter:
    """Streams one row's characters, holding back any tail that could be the start of the
    stop string, so text shown while streaming never has to be taken back."""

    def __init__(self, stop: str | None):
        self.stop = stop or ""
        self.pending: list[tuple[str, float]] = []
        self.finished = False

    def push(self, ch: str, prob: float) -> list[tuple[str, float]]:
        """Add a character; return the (character, probability) pairs now safe to show."""
        if self.finished:
            return []
        self.pending.append((ch, prob))
        if not self.stop:
            return self.flush()
        tail = "".join(c for c, _ in self.pending)
        if tail.endswith(self.stop):
            self.finished = True
            kept = self.pending[: len(self.pending) - len(self.stop)]
            self.pending = []
            return kept
        hold = next((n for n in range(min(len(tail), len(self.stop) - 1), 0, -1) if self.stop.startswith(tail[-n:])), 0)
        out, self.pending = self.pending[: len(self.pending) - hold], self.pending[len(self.pending) - hold :]
        return out

    def flush(self) -> list[tuple[str, float]]:
        out, self.pending = self.pending, []
        return out


@dataclass
class Step:
    """What each row adds to its text: (character, probability the model gave it) pairs, and
    whether the row has finished (its stop string appeared); `ids` are the sampled ids (None
    on the last Step, which only releases what a stop filter held back)."""

    pieces: list[list[tuple[str, float]]]
    finished: list[bool]
    ids: np.ndarray | None = None


def next_budget(budget: int, drafted: int, written: int, max_draft: int) -> int:
    """The most characters the next draft may have: 2 more after a draft kept whole (a step
    of `drafted` characters that wrote drafted + 1), 1 fewer (at least 1) after one that was not."""
    if not drafted:
        return budget
    return min(budget + 2, max_draft) if written == drafted + 1 else max(budget - 1, 1)


def serving_threads(cores: int | None = None) -> int:
    """onnxruntime's threads for the web server's engine (in its model process): one per core but
    one (at least one), which is left to Gradio, the threads that stream each visitor's text and
    the visitors' connections. On this 2-core machine, with the model in its own process, two
    threads gave crowds of 32 visitors of 3.40 to 4.71 s against 3.02 to 4.04 s with one (8
    crowds each, in turn); in the server's process, one visitor 595 and 489 characters/s with one
    against 448 and 422 with two (python -m benchmarks.load, runs side by side)."""
    if cores is None:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, cores - 1)


class Engine(OnnxModel):
    """Text generation on an OnnxModel, in layers: `decode` is the plain loop over ids (prefill,
    then one cached step per character, as gpt-fast names the phases), `generate` adds
    characters and stop strings, `complete` collects the text.

    Cached steps run the model's ring file when it has one that agrees with it (webapp/ring.py:
    the same function; its bare step measured 1.9x as fast at batch 1 and 2.4x at batch 8 here,
    benchmarks/generation.py); `notice` says why one was not used. There, a step also runs up
    to `max_draft` drafted characters (webapp/drafting.py), from the model's draft table
    (MODEL.drafts.json) too when it has one."""

    def __init__(self, path, device: str = "cpu", threads: int | None = None, spinning: bool = True, ring: bool = True,
                 max_draft: int = MAX_DRAFT, table: bool = True):
        super().__init__(path, device, threads, spinning)
        self.max_draft = max_draft  # characters drafted per step (webapp/drafting.py); 0: one character a step
        self.ring, ring_notice = load_ring(self, **self.session_args) if ring else (None, "")
        # table=False: draft from the text's own repeats only, as a model without a draft table does.
        self.draft_table, table_notice = load_table(table_path(self.path), self.vocab) if self.ring and table else (None, "")
        self.notice = "; ".join(n for n in (self.notice, ring_notice, table_notice) if n)

    @classmethod
    def for_server(cls, path, device: str = "cpu") -> "Engine":
        """The web server's engine: serving_threads() threads that stop spinning after each run,
        as the server's cores are shared with the page (OnnxModel)."""
        return cls(path, device, threads=serving_threads(), spinning=False)

    def prefill(self, ids: np.ndarray) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Logits after the prompt [B, vocab] and the state of the cache: only its last
        receptive_field characters can change what comes next, so only those are run.

        Plain session.run with numpy arrays: keeping the cache inside onnxruntime with
        IOBinding was measured 10% slower per character here (binding 26 values a step in
        Python costs more than the copies it saves; benchmarks/generation.py)."""
        ids = ids[:, -self.receptive_field :]
        logits, past = self.forward(ids)
        return logits[:, -1], self.ring.state(past, ids.shape[1]) if self.ring else past

    def step(self, ids: np.ndarray, state: dict[str, np.ndarray]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """One cached step: the logits after `ids` [B] and the new state, to feed back as is
        (a ring state is updated in place)."""
        if self.ring:
            return self.ring.step(ids, state)
        logits, past = self.forward(ids[:, None], state)
        return logits[:, -1], past

    def decode(self, prompt_ids: list[int], settings: Settings) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """The plain loop at the level of ids: yields (ids [rows], the probability the model gave
        each) per new character, num_samples rows with seeds seed + row; no forward pass after
        the last character asked for.

        With the ring file, each step also runs the characters drafted from the text's own
        repeats or the draft table (webapp/drafting.py) and keeps them up to the first one that
        differs from what is drawn there, each draw using the row's next random number as the
        plain loop does: the same text, in fewer steps where the drafts guess well."""
        rows = settings.num_samples
        rngs = [SplitMix64(settings.seed + r) for r in range(rows)]
        logits, past = self.prefill(np.tile(np.array(prompt_ids, dtype=np.int64), (rows, 1)))
        histories = [as_text(prompt_ids)] * rows
        block, new, drafted = logits[:, None], None, np.zeros((rows, 0), np.int64)  # [rows, T, vocab], the step's caches, [rows, T - 1]
        left, budget = settings.max_new_tokens, self.max_draft  # budget: the next draft's most characters
        while True:
            # The drafted characters drawn as drafted, and one more.
            written = draw_drafted(block, drafted, settings.temperature, settings.top_k, settings.top_p, rngs, left)
            yield from written
            left -= len(written)
            if left == 0:
                return
            ids = written[-1][0]
            histories = [h + as_text(w) for h, w in zip(histories, np.stack([w for w, _ in written], axis=1).tolist())]
            if self.ring is None:
                logits, past = self.step(ids, past)
                block = logits[:, None]
                continue
            if new is not None:
                self.ring.keep(past, new, len(written))  # the characters this block ran and kept
            budget = next_budget(budget, drafted.shape[1], len(written), self.max_draft)
            # Never past the last character asked for, nor more new characters than the ring has slots.
            drafted = drafts(histories, min(budget, left - 1, self.ring.slots - 1), self.draft_table)
            block, new = self.ring.forward(np.concatenate((ids[:, None], drafted), axis=1), past)

    def generate(self, prompt: EncodedPrompt, settings: Settings, decode: Decode | None = None) -> Iterator[Step]:
        """Yield a Step per new character until max_new_tokens, or until every row has stopped.
        `decode` runs the loop over ids: this engine's own by default, or a Batcher's (the server)."""
        filters = [StopFilter(settings.stop) for _ in range(settings.num_samples)]
        steps = (decode or self.decode)(prompt.ids, settings)
        try:
            for ids, probs in steps:
                pieces = [f.push(self.vocab[i], p) for f, i, p in zip(filters, ids.tolist(), probs.tolist())]
                yield Step(pieces, [f.finished for f in filters], ids)
                if all(f.finished for f in filters):
                    return
        finally:
            steps.close()  # a Batcher frees the request's rows at once
        yield Step([f.flush() for f in filters], [f.finished for f in filters])

    def complete(self, prompt: str | EncodedPrompt, settings: Settings) -> list[str]:
        """The continuations of `prompt`, one per sample, without the stop string."""
        if isinstance(prompt, str):
            prompt = encode_prompt(prompt, self.vocab)
        texts = [""] * settings.num_samples
        for step in self.generate(prompt, settings):
            for r, piece in enumerate(step.pieces):
                texts[r] += "".join(c for c, _ in piece)
        return texts
