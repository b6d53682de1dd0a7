"""Many requests decoding at once, sharing session.run calls: continuous batching for the server.

`Batcher.decode` has the contract of `Engine.decode` (the plain loop at the level of ids), so
`Engine.generate(prompt, settings, decode=batcher.decode)` streams text as before. Behind it,
one thread runs every forward pass (the web server runs it in a process of its own:
webapp/model_process.py):

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
- with the ring file, steps also run drafted characters (webapp/drafting.py), each request
  keeping its own up to the first one its draw differs from, as `Engine.decode` does: a request
  decoding alone (nobody else decoding or waiting) drafts as far as its budget goes, so one
  visitor gets the engine's speed; in a crowd each request drafts CROWD_DRAFT characters, as a
  batch's steps cost by the character (see CROWD_DRAFT).
"""

from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Iterator

import numpy as np

from .drafting import as_text, drafts
from .engine import Engine, Settings, next_budget
from .sampling import SplitMix64, draw_blocks

FINISHED = object()  # put on a request's `out` after its last character
# A request arriving while others decode waits up to this long for others to arrive, so that a
# crowd arriving together is prefilled in few calls (and, without a ring file, starts as few
# cohorts: caches of one length only meet once their windows are full). It delays a first
# character by at most as much as one page update.
ADMIT_WINDOW_S = 0.05
PREFILL_CHARS = 2048  # prompt characters (rows × length) prefilled in one session.run
# The most characters each request of a crowd drafts per step. A ring step of the shipped model
# at batch 32 took (median of 5 x 30 calls) 8.5 ms for 1 character a row, 10.5 for 2, 11.5 for
# 3, 16.9 for 4; at temperature 0.8 (300 characters, seeds 0-15) drafts of at most 1, 2 and 3
# characters wrote 1.60, 1.78 and 1.96 characters a step: about 6.6, 6.5 and 5.9 ms a character
# row against 8.5, for 1, 2 and 3 (the last an estimate from 1.96 and T=3's cost). One keeps the
# blocks short when requests come and go.
CROWD_DRAFT = 1


@dataclass(eq=False)
class Request:
    prompt_ids: list[int]
    settings: Settings
    rngs: list[SplitMix64]
    # What the batcher thread puts for the consumer: (ids [rows], probabilities) per character,
    # then FINISHED, or an exception. A queue, or anything with `put` (webapp/model_process.py).
    out: queue.SimpleQueue = field(default_factory=queue.SimpleQueue)
    produced: int = 0
    next_ids: np.ndarray | None = None  # the ids its next cached step reads
    cancelled: bool = False
    budget: int = 0  # the most characters its next draft may have when alone (next_budget)
    texts: list[str] = field(init=False)  # each row's text so far (as_text), to draft from

    def __post_init__(self):
        self.texts = [as_text(self.prompt_ids)] * self.rows

    @property
    def rows(self) -> int:
        return self.settings.num_samples

    @property
    def left(self) -> int:
        return self.settings.max_new_tokens - self.produced

    @property
    def done(self) -> bool:
        return self.cancelled or self.left <= 0


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
    drafted: np.ndarray | None = None  # [rows, T - 1]: the ids drafted after the fed one (-1 past a shorter draft)
    # A drafted block's keys and values per layer [rows, H, T, D] (webapp/ring.py), until the
    # draws say how many of each row's to keep.
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
        """Drop the rows of the requests not in `kept` (a subsequence of `requests`)."""
        if len(kept) == len(self.requests):
            return
        if len({r.rows for r in self.requests}) == 1:
            self._fill_holes(kept)
            return
        rows = np.concatenate([np.arange(s.start, s.stop) for r, s in zip(self.requests, self.row_slices()) if r in kept]
                              or [np.zeros(0, np.int64)])
        self.requests, self.block, self.drafted = kept, self.block[rows], self.drafted[rows]
        self.past = {name: array[rows] for name, array in self.past.items()}

    def _fill_holes(self, kept: list[Request]) -> None:
        """keep() when every request has as many rows: the kept requests past the first
        len(kept) move into the places of the dropped ones before them, and the arrays become
        views of their first rows: one row copied per finished request, where a copy of every row
        of the rings (37 MB at 32 rows) was made for each. A crowd's requests finish a few steps
        apart, and those copies stayed with the allocator: the server's memory grew by 43 and 68 MB
        under a crowd of 32, against 11 and 36 with this (benchmarks/load.py, in turn; no
        measurable change in speed)."""
        live, n, size = set(kept), len(kept), self.requests[0].rows
        holes = [i for i in range(n) if self.requests[i] not in live]
        movers = [i for i in range(n, len(self.requests)) if self.requests[i] in live]  # as many as holes
        order = list(self.requests[:n])
        for hole, mover in zip(holes, movers):
            order[hole] = self.requests[mover]
        if holes:
            to = (np.array(holes)[:, None] * size + np.arange(size)).ravel()
            source = (np.array(movers)[:, None] * size + np.arange(size)).ravel()
            for array in (self.block, self.drafted, *self.past.values()):
                array[to] = array[source]  # rows below n from rows at or past it: never overlapping
        self.requests, self.block, self.drafted = order, self.block[: n * size], self.drafted[: n * size]
        self.past = {name: array[: n * size] for name, array in self.past.items()}

    @staticmethod
    def merge(cohorts: list["Cohort"]) -> "Cohort":
        if len(cohorts) == 1:
            return cohorts[0]
        new = None if cohorts[0].new is None else [np.concatenate(arrays) for arrays in zip(*(c.new for c in cohorts))]
        return Cohort([r for c in cohorts for r in c.requests], np.concatenate([c.block for c in cohorts]),
                      {name: np.concatenate([c.past[name] for c in cohorts]) for name in cohorts[0].past},
                      np.concatenate([c.drafted for c in cohorts]), new)


class Batcher:
    """Runs the forward passes of every request on `engine` in one thread (started on first use).
    max_rows caps the rows of one session.run; a larger cohort runs in several calls.
    after_tick, when given, is called by that thread after each tick (after all its `put`s)."""

    def __init__(self, engine: Engine, max_rows: int = 64, after_tick: Callable[[], None] | None = None):
        self.engine = engine
        self.max_rows = max_rows
        self.after_tick = after_tick
        self.arrivals: queue.SimpleQueue[Request] = queue.SimpleQueue()
        self.waiting: list[tuple[float, Request]] = []  # (arrival time, request), not yet prefilled
        self.cohorts: list[Cohort] = []
        self.lock = threading.Lock()
        self.thread: threading.Thread | None = None
        self.ticks = 0  # session.run calls for cached steps, for tests and benchmarks

    def decode(self, prompt_ids: list[int], settings: Settings) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """As Engine.decode: yields (ids [rows], the probability the model gave each) per new
        character. Closing the iterator (or dropping it) takes the request out of its batch."""
        request = self.submit(prompt_ids, settings)
        try:
            while True:
                item = request.out.get()
                if item is FINISHED:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            request.cancelled = True

    def submit(self, prompt_ids: list[int], settings: Settings, out=None) -> Request:
        """A new request, queued to join the next tick's batch; its characters go to `out` (a
        new queue by default), and setting its `cancelled` takes it out of its batch."""
        request = Request(list(prompt_ids), settings, [SplitMix64(settings.seed + r) for r in range(settings.num_samples)])
        if out is not None:
            request.out = out
        self._start()
        self.arrivals.put(request)
        return request

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
            if self.after_tick is not None:
                self.after_tick()

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
        with its own stream, so this is what each would draw alone). Each request writes its
        drafted characters up to the first that a draw of its rows differs from, and one more;
        the ring keeps what each row wrote."""
        slices = cohort.row_slices()
        live = [not request.cancelled for request in cohort.requests]  # read once: a consumer may cancel meanwhile
        groups: dict[tuple, list[int]] = {}  # settings -> the requests' places in the cohort
        for i, request in enumerate(cohort.requests):
            if live[i]:
                s = request.settings
                groups.setdefault((s.temperature, s.top_k, s.top_p), []).append(i)
        ids = np.zeros(cohort.block.shape[:2], np.int64)
        probs, counts = np.zeros(ids.shape), np.zeros(len(ids), np.int64)  # cancelled requests' rows keep nothing
        for (temperature, top_k, top_p), members in groups.items():
            rows = np.concatenate([np.arange(slices[i].start, slices[i].stop) for i in members])
            owner = np.repeat(members, [cohort.requests[i].rows for i in members])
            left = np.array([cohort.requests[i].left for i in owner])
            ids[rows], probs[rows], counts[rows] = draw_blocks(cohort.block[rows], cohort.drafted[rows], temperature, top_k, top_p,
                                                               [rng for i in members for rng in cohort.requests[i].rngs], owner, left)
        if cohort.new is not None:
            self.engine.ring.keep(cohort.past, cohort.new, counts)  # every row's: rows are dropped below
            cohort.new = None
        kept = []
        # As lists once for the cohort: numpy calls per request were most of a crowd's sampling time.
        id_rows, row_counts, drafted_lengths = ids.tolist(), counts.tolist(), (cohort.drafted >= 0).sum(axis=1).tolist()
        for request, rows, drawn in zip(cohort.requests, slices, live):  # kept in the cohort's order, as cohort.keep asks
            if not drawn:
                continue
            count = row_counts[rows.start]
            for j in range(count):
                request.out.put((ids[rows, j], probs[rows, j]))
            request.next_ids = ids[rows, count - 1]
            request.produced += count
            request.budget = next_budget(request.budget, drafted_lengths[rows.start], count, self.engine.max_draft)
            request.texts = [h + as_text(c[:count]) for h, c in zip(request.texts, id_rows[rows])]
            if request.done:
                request.out.put(FINISHED)
            else:
                kept.append(request)
        cohort.keep(kept)

    def _step(self, cohort: Cohort) -> None:
        """One step for every row: the ring file's, with drafts (as far as its budget goes for a
        request decoding alone, CROWD_DRAFT characters each in a crowd), or the model file's."""
        ids = np.concatenate([r.next_ids for r in cohort.requests])[:, None]
        ring = self.engine.ring
        if ring and self.engine.max_draft:
            alone = len(self.cohorts) == 1 and len(cohort.requests) == 1 and not self.waiting and self.arrivals.empty()
            found = []
            for request in cohort.requests:
                request.budget = request.budget or self.engine.max_draft
                most = min(request.budget if alone else CROWD_DRAFT, request.left - 1, ring.slots - 1)
                found.append(drafts(request.texts, most, self.engine.draft_table))
            drafted = np.full((len(ids), max(d.shape[1] for d in found)), -1, np.int64)
            for d, rows in zip(found, cohort.row_slices()):
                drafted[rows, : d.shape[1]] = d
            ids = np.concatenate((ids, np.maximum(drafted, 0)), axis=1)  # a padded place runs any id; its draw is never kept
        else:
            drafted = np.zeros((len(ids), 0), np.int64)
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
        cohort.drafted = drafted
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
        """One cohort per cache length and block length (requests step together once their
        blocks have one length: a prefill's block is one character, a crowd's steps 1 + CROWD_DRAFT)."""
        by_shape: dict[tuple[int, int], list[Cohort]] = {}
        for cohort in self.cohorts:
            if cohort.requests:
                by_shape.setdefault((cohort.length, cohort.block.shape[1]), []).append(cohort)
        self.cohorts = [Cohort.merge(group) for group in by_shape.values()]
