"""The engine: text generation from an exported chargpt model, with a KV cache.

onnxruntime and numpy only (no torch, no `train`): this is what a hosted Space runs.

Decoding is the plain loop that any runtime runs on the graph (format 2 keeps the window in
it): one prefill of the prompt's last `receptive_field` characters (the earlier ones cannot
change what comes next), then one cached step per new character, each step's cache fed back as
the next one's past. So the engine writes the same text as onnxruntime-genai, transformers.js
or the JavaScript page given the same prompt, at a constant cost per character. Its steps run
on the model's ring file where it has one, and there also check characters drafted from the
text's own repeats or the draft table: still the plain loop's text, in fewer steps
(webapp/inference/loop.py has the loop; ring.py and drafting.py the rest).
"""

from __future__ import annotations

import os
import unicodedata
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np

from .drafting import MAX_DRAFT, load_table, table_path
from .loop import Draw, Request, Scheduler, outputs
from .onnx_model import OnnxModel, PlainSteps
from .ring import load_ring
from .sampling import Alternatives, SamplingParams

MAX_PROMPT_CHARS = 10_000  # per request, on the server (webapp/web/chargpt.js's LIMITS keeps the same)

# The loop over ids: (prompt ids, settings) -> a Draw per new character.
Decode = Callable[[list[int], SamplingParams], Iterator[Draw]]
# What the model considered at a character: (character, the model's probability, its probability
# in the distribution the character was drawn from) for the likeliest, most likely first.
Considered = tuple[tuple[str, float, float], ...]


class Piece(NamedTuple):
    """A character of a row's text: the probability the model gave it and, when the request asks
    (SamplingParams.alternatives), what the model considered there, the drawn character last when
    it is not among the likeliest."""

    char: str
    prob: float
    alternatives: Considered | None = None


def spell_alternatives(
    alternatives: Alternatives | None, row: int, drawn: int, prob: float, vocab: list[str]
) -> Considered | None:
    """Row `row` of the loop's Alternatives in characters, with the drawn id's entry added when it
    is not among the likeliest (prob: the probability the model gave it)."""
    if alternatives is None:
        return None
    ids = alternatives.ids[row].tolist()
    found = [
        (vocab[i], m, s) for i, m, s in zip(ids, alternatives.model[row].tolist(), alternatives.sampled[row].tolist())
    ]
    if drawn not in ids:
        found.append((vocab[drawn], prob, float(alternatives.drawn[row])))
    return tuple(found)


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
        self.pending: list[Piece] = []
        self.finished = False

    def push(self, piece: Piece) -> list[Piece]:
        """Add a character; return the pieces now safe to show."""
        if self.finished:
            return []
        self.pending.append(piece)
        if not self.stop:
            return self.flush()
        tail = "".join(p.char for p in self.pending)
        if tail.endswith(self.stop):
            self.finished = True
            kept = self.pending[: len(self.pending) - len(self.stop)]
            self.pending = []
            return kept
        hold = next((n for n in range(min(len(tail), len(self.stop) - 1), 0, -1) if self.stop.startswith(tail[-n:])), 0)
        out, self.pending = self.pending[: len(self.pending) - hold], self.pending[len(self.pending) - hold :]
        return out

    def flush(self) -> list[Piece]:
        out, self.pending = self.pending, []
        return out


@dataclass
class Step:
    """What each row adds to its text (Pieces), and whether the row has finished (its stop string
    appeared); `ids` are the sampled ids (None on the last Step, which only releases what a stop
    filter held back)."""

    pieces: list[list[Piece]]
    finished: list[bool]
    ids: np.ndarray | None = None


def serving_threads(cores: int | None = None) -> int:
    """onnxruntime's threads for the web server's engine (in its model process): one per core but
    one (at least one), which is left to Gradio, the threads that stream each visitor's text and
    the visitors' connections (docs/serving.md compares it with a thread per core)."""
    if cores is None:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, cores - 1)


class Engine(OnnxModel):
    """Text generation on an OnnxModel, in layers: `decode` is the loop over ids (prefill, then
    cached steps; webapp/inference/loop.py), `generate` adds characters and stop strings,
    `complete` collects the text.

    `steps` is the step interface the loop runs: the model's ring file when it has one that agrees
    with the model file (webapp/inference/ring.py; `ring`), else the model file itself; `notice`
    says why a ring file or draft table was not used. With the ring file, a step also runs up to
    `max_draft` drafted characters (webapp/inference/drafting.py), from the model's draft table
    (MODEL.drafts.json) too when it has one.

    Its onnxruntime threads stop spinning after each run (spinning=False), unlike a bare
    OnnxModel's: between two steps the loop runs Python (sampling, drafts, the ring's slots) and a
    prefill runs another session, and threads left spinning would compete with that work
    (docs/speed.md, "Threads that stop spinning after each run")."""

    def __init__(
        self,
        path,
        device: str = "cpu",
        threads: int | None = None,
        spinning: bool = False,
        ring: bool = True,
        max_draft: int = MAX_DRAFT,
        table: bool = True,
        ring_file: Path | None = None,
    ):
        super().__init__(path, device, threads, spinning)
        self.max_draft = max_draft  # characters drafted per step; 0: one character a step
        # ring_file: another file than the one beside the model's (export checks one before placing it).
        self.ring, ring_notice = load_ring(self, ring_file, **self.session_args) if ring else (None, "")
        self.steps = self.ring or PlainSteps(self)
        # table=False: draft from the text's own repeats only, as a model without a draft table does.
        self.draft_table, table_notice = (
            load_table(table_path(self.path), self.vocab) if self.ring and table else (None, "")
        )
        self.notice = "; ".join(n for n in (self.notice, ring_notice, table_notice) if n)

    @classmethod
    def for_server(cls, path, device: str = "cpu") -> Engine:
        """The web server's engine: serving_threads() threads, leaving a core to the server's own."""
        return cls(path, device, threads=serving_threads())

    def decode(self, prompt_ids: list[int], params: SamplingParams) -> Iterator[Draw]:
        """The loop at the level of ids, for one request in this thread: yields a Draw per new
        character, num_samples rows with seeds seed + row; no forward pass after the last
        character asked for."""
        request, loop = Request(list(prompt_ids), params), Scheduler(self)
        loop.admit([request])

        def ticks():
            while True:
                yield from request.out.take()
                loop.tick()

        yield from outputs(ticks())

    def next_logits(self, prompt_ids: list[int]) -> np.ndarray:
        """The logits [vocab] that the first character after these ids is drawn from: decode's
        prefill, one forward of the last receptive_field ids, and no generation."""
        logits, _ = PlainSteps(self).prefill(np.array([prompt_ids], np.int64))
        return logits[0]

    def generate(self, prompt: EncodedPrompt, params: SamplingParams, decode: Decode | None = None) -> Iterator[Step]:
        """Yield a Step per new character until max_new_tokens, or until every row has stopped.
        `decode` runs the loop over ids: this engine's own by default, or a Batcher's (the server)."""
        filters = [StopFilter(params.stop) for _ in range(params.num_samples)]
        decoded = (decode or self.decode)(prompt.ids, params)
        try:
            for draw in decoded:
                pieces = [
                    f.push(Piece(self.vocab[i], p, spell_alternatives(draw.alternatives, r, i, p, self.vocab)))
                    for r, (f, i, p) in enumerate(zip(filters, draw.ids.tolist(), draw.probs.tolist()))
                ]
                yield Step(pieces, [f.finished for f in filters], draw.ids)
                if all(f.finished for f in filters):
                    return
        finally:
            decoded.close()  # a Batcher frees the request's rows at once
        yield Step([f.flush() for f in filters], [f.finished for f in filters])

    def complete(self, prompt: str | EncodedPrompt, params: SamplingParams) -> list[str]:
        """The continuations of `prompt`, one per sample, without the stop string."""
        if isinstance(prompt, str):
            prompt = encode_prompt(prompt, self.vocab)
        texts = [""] * params.num_samples
        for step in self.generate(prompt, params):
            for r, piece in enumerate(step.pieces):
                texts[r] += "".join(p.char for p in piece)
        return texts
