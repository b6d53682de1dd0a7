"""Many requests decoding at once, sharing session.run calls: continuous batching for the server.

`Batcher.decode` has the contract of `Engine.decode` (the plain loop at the level of ids), so
`Engine.generate(prompt, settings, decode=batcher.decode)` streams text as before. Behind it,
one thread runs every forward pass:

- new requests are prefilled together when their prompts have one length, and join the
  cohort of requests whose caches have the same shape: their caches are stacked along the
  batch axis and each tick runs one cached step for all of them;
- with the model's ring file (webapp/ring.py) every cache has one shape, a ring of
  block_size - 1 slots, so all requests decode in one cohort from their first step; with the
  model file alone, caches grow by one position a step until they hold block_size - 1, so
  requests of different lengths meet once their windows are full;
- each row samples with its own settings and SplitMix64 stream, so a request's text is exactly
  what it is alone (row r of a batch gives the same logits as a batch of one; a test checks it);
- a request whose consumer stops (Stop in the page, a closed tab, a stop string) leaves its
  cohort before the next step: nothing is computed for it after that;
- a request decoding alone (nobody else decoding or waiting) drafts as `Engine.decode` does
  (webapp/drafting.py): its steps also run drafted characters, kept up to the first one its draw
  differs from, so one visitor gets the engine's speed; a crowd steps one character a row (the
  rows of different texts rarely all keep a draft, and a batch's steps cost by the character).
"""

from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Iterator

import numpy as np

from .drafting import as_text, drafts
from .engine import Engine, Settings, next_budget
from .sampling import SplitMix64, draw_drafted

_FINISHED = object()  # put on a request's queue after its last character
# A request arriving while others decode waits up to this long for others to arrive, so that a
# crowd arriving together is prefilled in few calls (and, without a ring file, starts as few
# cohorts: caches of one length only meet once their windows are full). It delays a first
# character by at most as much as one page update.
ADMIT_WINDOW_S = 0.05
PREFILL_CHARS = 2048  # prompt characters (rows × length) prefilled in one session.run
FOLD_EVERY = 256  # characters a request keeps as arrays before they are folded into its texts (Request.histories)


@dataclass(eq=False)
class Request:
    prompt_ids: list[int]
    settings: Settings
    rngs: list[SplitMix64]
    out: queue.SimpleQueue = field(default_factory=queue.SimpleQueue)
    produced: int = 0
    next_ids: np.ndarray | None = None  # the ids its next cached step reads
    cancelled: bool = False
    budget: int = 0  # the most characters its next draft may have (next_budget)
    written: list[np.ndarray] = field(default_factory=list)  # ids [rows] per character not yet in `texts`
    texts: list[str] = field(default_factory=list)  # each row's text, as_text, up to `written`

    def histories(self) -> list[str]:
        """Each row's text so far (as_text), to draft from: folded from `written` only when a
        draft is asked for, so requests decoding in a crowd pay nothing for it."""
        if not self.texts:
            self.texts = [as_text(self.prompt_ids)] * self.rows
        if self.written:
            columns = np.stack(self.written, axis=1).tolist()
            self.texts, self.written = [h + as_text(c) for h, c in zip(self.texts, columns)], []
        return self.texts

    @property
    def rows(self) -> int:
        return self.settings.num_samples

    @property
    def done(self) -> bool:
        return self.cancelled or self.produced >= self.settings.max_new_tokens


def prefill_groups(requests: list[Request], length: int) -> list[list[Request]]:
    """Requests whose prompts have `length` characters, in groups of at most PREFILL_CHARS
    characters (one request at least): a prefill's attention scores grow with rows × length²,
    and 32 visitors with long prompts prefilled at once would hold half a gigabyte."""
    groups: list[list[Request]] = []
    chars = 0
    for request in requests:
        if groups and chars + request.rows * length <= PREFILL_CHARS:
            groups[-1].append(request)
            chars += request.rows * length
        else:
            groups.append([request])
            chars = request.rows * length
    return groups


@dataclass(eq=False)
class Cohort:
    """Requests whose caches have the same shape, stacked along the batch axis in the order
    of `requests` (each request's rows are one of `row_slices()`)."""

    requests: list[Request]
    block: np.ndarray  # [rows, T, vocab]: the logits after the fed character and after each drafted one
    past: dict[str, np.ndarray]  # [rows, heads, length, head_dim] each
    drafted: np.ndarray | None = None  # [rows, T - 1]: the ids drafted after the fed one
    # A drafted block's keys and values (webapp/ring.py), until the draws say how many to keep;
    # such a cohort has one request and a block no other has, so it merges with none (_regroup).
    new: list[np.ndarray] | None = None

    def __post_init__(self):
        if self.drafted is None:
            self.drafted = np.zeros((len(self.block), self.block.shape[1] - 1), np.int64)

    @property
    def length(self) -> int:
        """The cache's length: block_size - 1 for every ring."""
        return next(iter(self.past.values())).shape[2]

    def row_slices(self) -> list[slice]:
        slices, start = [], 0
        for request in self.requests:
            slices.append(slice(start, start + request.rows))
            start += request.rows
        return slices

    def keep(self, kept: list[Request]) -> None:
        """Drop the rows of the requests not in `kept` (one copy of the caches, only when needed)."""
        if len(kept) == len(self.requests):
            return
        rows = np.concatenate([np.arange(s.start, s.stop) for r, s in zip(self.requests, self.row_slices()) if r in kept]
                              or [np.zeros(0, np.int64)])
        self.requests, self.block, self.drafted = kept, self.block[rows], self.drafted[rows]
        self.past = {name: array[rows] for name, array in self.past.items()}

    @staticmethod
    def merge(cohorts: list["Cohort"]) -> "Cohort":
        if len(cohorts) == 1:
            return cohorts[0]
        return Cohort([r for c in cohorts for r in c.requests], np.concatenate([c.block for c in cohorts]),
                      {name: np.concatenate([c.past[name] for c in cohorts]) for name in cohorts[0].past},
                      np.concatenate([c.drafted for c in cohorts]))


class Batcher:
    """Runs the forward passes of every request on `engine` in one thread (started on first use).
    max_rows caps the rows of one session.run; a larger cohort runs in several calls."""

    def __init__(self, engine: Engine, max_rows: int = 64):
        self.engine = engine
        self.max_rows = max_rows
        self.arrivals: queue.SimpleQueue[Request] = queue.SimpleQueue()
        self.waiting: list[tuple[float, Request]] = []  # (arrival time, request), not yet prefilled
        self.cohorts: list[Cohort] = []
        self.lock = threading.Lock()
        self.thread: threading.Thread | None = None
        self.ticks = 0  # session.run calls for cached steps, for tests and benchmarks

    def decode(self, prompt_ids: list[int], settings: Settings) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """As Engine.decode: yields (ids [rows], the probability the model gave each) per new
        character. Closing the iterator (or dropping it) takes the request out of its batch."""
        request = Request(list(prompt_ids), settings, [SplitMix64(settings.seed + r) for r in range(settings.num_samples)])
        self._start()
        self.arrivals.put(request)
        try:
            while True:
                item = request.out.get()
                if item is _FINISHED:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            request.cancelled = True

    def active_rows(self) -> int:
        return sum(r.rows for c in self.cohorts for r in c.requests)

    def _start(self) -> None:
        with self.lock:
            if self.thread is None:
                self.thread = threading.Thread(target=self._run, name="chargpt-batcher", daemon=True)
                self.thread.start()

    def _run(self) -> None:
        while True:
            try:
                self._tick()
            except Exception as e:  # a fault here must not leave consumers waiting forever
                for request in (r for c in self.cohorts for r in c.requests):
                    request.out.put(e)
                self.cohorts = []

    def _tick(self) -> None:
        # Block only when nothing is decoding; otherwise take whoever has arrived.
        self._admit(block=not self.cohorts)
        for cohort in self.cohorts:
            self._sample(cohort)
        self.cohorts = [c for c in self.cohorts if c.requests]
        for cohort in self.cohorts:
            self._step(cohort)
        self._regroup()

    def _admit(self, block: bool) -> None:
        """Prefill the requests that have waited ADMIT_WINDOW_S (all of them when nothing else
        is decoding), those of one prompt length together, and add them as a cohort."""
        while True:
            try:
                request = self.arrivals.get(block=block and not self.waiting)
                self.waiting.append((time.perf_counter(), request))
                continue
            except queue.Empty:
                break
        if not self.waiting or (self.cohorts and time.perf_counter() - self.waiting[0][0] < ADMIT_WINDOW_S):
            return
        by_length: dict[int, list[Request]] = {}
        for _, request in self.waiting:
            if not request.cancelled:
                by_length.setdefault(min(len(request.prompt_ids), self.engine.receptive_field), []).append(request)
        self.waiting = []
        for length, requests in by_length.items():
            for group in prefill_groups(requests, length):
                ids = np.concatenate([np.tile(np.array(r.prompt_ids[-length:], dtype=np.int64), (r.rows, 1)) for r in group])
                try:
                    logits, past = self.engine.prefill(ids)
                except Exception as e:  # a failure of the runtime: these requests' consumers raise it
                    for request in group:
                        request.out.put(e)
                    continue
                self.cohorts.append(Cohort(group, logits[:, None], past))
        self._regroup()

    def _sample(self, cohort: Cohort) -> None:
        """Each request's next character(s), from its rows of the cohort's block: the rows of
        requests with the same settings are sampled together (sampling is row by row, each row
        with its own stream, so this is what each would draw alone). A drafted block (one
        request's) writes its drafted characters up to the first that a draw differs from, and
        one more; the ring keeps what the block wrote."""
        live = [(r, rows) for r, rows in zip(cohort.requests, cohort.row_slices()) if not r.cancelled]
        groups: dict[tuple, list[tuple[Request, slice]]] = {}
        for request, rows in live:
            s = request.settings
            groups.setdefault((s.temperature, s.top_k, s.top_p), []).append((request, rows))
        drawn: dict[int, list[tuple[np.ndarray, np.ndarray]]] = {}  # per request (its id()): (ids, probs) per character
        for (temperature, top_k, top_p), members in groups.items():
            rows = np.concatenate([np.arange(r.start, r.stop) for _, r in members])
            limit = min(request.settings.max_new_tokens - request.produced for request, _ in members)
            group = draw_drafted(cohort.block[rows], cohort.drafted[rows], temperature, top_k, top_p,
                                 [rng for request, _ in members for rng in request.rngs], limit)
            start = 0
            for request, _ in members:
                mine = slice(start, start + request.rows)
                drawn[id(request)] = [(ids[mine], probs[mine]) for ids, probs in group]
                start += request.rows
        count = len(next(iter(drawn.values()))) if drawn else 1  # one unless the block was drafted (one request)
        if cohort.new is not None:
            self.engine.ring.keep(cohort.past, cohort.new, count)  # every row's: rows are dropped below
            cohort.new = None
        kept = []
        for request, _ in live:
            for ids, probs in drawn[id(request)]:
                request.out.put((ids, probs))
            request.next_ids = drawn[id(request)][-1][0]
            request.produced += count
            request.budget = next_budget(request.budget, cohort.drafted.shape[1], count, self.engine.max_draft)
            request.written += [ids for ids, _ in drawn[id(request)]]
            if len(request.written) >= FOLD_EVERY:
                request.histories()  # bounded memory for long texts in a crowd
            if request.done:
                request.out.put(_FINISHED)
            else:
                kept.append(request)
        cohort.keep(kept)

    def _step(self, cohort: Cohort) -> None:
        """One step for every row: the ring file's (with a draft when the cohort's one request
        decodes alone), or the model file's."""
        ids = np.concatenate([r.next_ids for r in cohort.requests])[:, None]
        ring = self.engine.ring
        if ring and self.engine.max_draft and len(self.cohorts) == 1 and len(cohort.requests) == 1 \
                and not self.waiting and self.arrivals.empty():
            request = cohort.requests[0]
            request.budget = request.budget or self.engine.max_draft
            left = request.settings.max_new_tokens - request.produced
            drafted = drafts(request.histories(), min(request.budget, left - 1, ring.slots - 1), self.engine.draft_table)
            ids = np.concatenate((ids, drafted), axis=1)
        chunks = [slice(i, i + self.max_rows) for i in range(0, len(ids), self.max_rows)]
        try:
            if ring:
                parts = [ring.forward(ids[rows], {n: a[rows] for n, a in cohort.past.items()}) for rows in chunks]
            else:
                parts = [self.engine.step(ids[rows, 0], {n: a[rows] for n, a in cohort.past.items()}) for rows in chunks]
        except Exception as e:
            for request in cohort.requests:
                request.out.put(e)
            cohort.requests = []
            return
        self.ticks += len(parts)
        cohort.drafted = ids[:, 1:]
        if ring:
            cohort.block = np.concatenate([p[0] for p in parts])
            new = [np.concatenate(arrays) for arrays in zip(*(p[1] for p in parts))]
            if ids.shape[1] == 1:  # the fed character is always kept
                ring.keep(cohort.past, new, 1)
            else:  # a drafted block's ring is written once the draws say how much of it to keep (_sample)
                cohort.new = new
        else:
            cohort.block = np.concatenate([p[0] for p in parts])[:, None]
            cohort.past = ({n: np.concatenate([p[1][n] for p in parts]) for n in cohort.past} if len(parts) > 1 else parts[0][1])

    def _regroup(self) -> None:
        """One cohort per cache length (and block length: a drafted block joins the others
        after its draws, when its next step is one character)."""
        by_shape: dict[tuple[int, int], list[Cohort]] = {}
        for cohort in self.cohorts:
            if cohort.requests:
                by_shape.setdefault((cohort.length, cohort.block.shape[1]), []).append(cohort)
        self.cohorts = [Cohort.merge(group) for group in by_shape.values()]
