"""The decoding loop, written once: a prefill, then one cached step after another, for one request
or for many at once (a request alone is a batch of one). Engine.decode runs it in the caller's
thread for one request; the server's Batcher (webapp/inference/batching.py) runs it in a thread of
its own for every request that arrives.

A tick of the loop:
  1. sample: every request draws its next characters from its rows of its cohort's logits, each
     row with its own settings and SplitMix64 stream (webapp/inference/sampling.py), and puts them
     on its `out`; finished and cancelled requests leave before anything more is computed for them;
  2. step: each cohort runs one forward for all its rows through the step interface (the ring
     file or the model file; webapp/inference/onnx_model.py, PlainSteps, says what it is): each
     row's next id and, where the file takes several a step, the characters drafted after it
     (webapp/inference/drafting.py);
  3. regroup: cohorts whose states have one shape become one.

Requests join after a prefill (those with prompts of one length together, PREFILL_CHARS at most
at a time). With the ring file every state has one shape, so all requests step together from
their first step; with the model file alone, caches grow by one position a step until they hold
the window, so requests of different lengths meet once their windows are full.

Each request keeps its drafted characters up to the first that a draw of its rows differs from,
each draw using the row's next random number as the plain loop does, so its text is the plain
loop's. A request decoding alone drafts as far as its budget goes (next_budget); in a crowd each
drafts CROWD_DRAFT characters a step, as a batch's step costs by the character (docs/serving.md).
A row's logits do not depend on the other rows (a test checks it bit for bit), so a request's
text is exactly what it is alone.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np

from .drafting import as_text, drafts, next_budget
from .sampling import Alternatives, SamplingParams, SplitMix64, draw_blocks, streams, top_alternatives

FINISHED = object()  # put on a request's `out` after its last character
PREFILL_CHARS = 2048  # prompt characters (rows × length) prefilled in one forward
CROWD_DRAFT = 1  # the most characters each request of a crowd drafts a step (docs/serving.md)


class Draw(NamedTuple):
    """One new character of each of a request's rows, as the loop puts it on the request's `out`."""

    ids: np.ndarray  # [rows]
    probs: np.ndarray  # [rows]: the probability the model gave each
    alternatives: Alternatives | None = None  # what the rows considered there, when the request asks


class Outbox(list):
    """A request's `out` when the loop runs in the consumer's own thread (Engine.decode)."""

    put = list.append

    def take(self) -> list:
        items = self[:]
        self.clear()
        return items


@dataclass(eq=False)
class Request:
    prompt_ids: list[int]
    params: SamplingParams
    # What the loop puts for the consumer: a Draw per character, then FINISHED, or an exception.
    # Anything with `put`: an Outbox, a queue (the Batcher), the model process's outlet
    # (webapp/server/model_process.py).
    out: Any = field(default_factory=Outbox)
    produced: int = 0
    input_ids: np.ndarray | None = None  # [rows]: the ids its next step reads
    cancelled: bool = False  # set by the consumer: the request leaves at the next tick
    budget: int = 0  # the most characters its next draft may have when alone (next_budget; max_draft to start)
    rngs: list[SplitMix64] = field(init=False)
    histories: list[str] = field(init=False)  # each row's ids so far, as text (as_text), to draft from

    def __post_init__(self):
        self.rngs = streams(self.params)
        self.histories = [as_text(self.prompt_ids)] * self.rows

    @property
    def rows(self) -> int:
        return self.params.num_samples

    @property
    def remaining(self) -> int:
        return self.params.max_new_tokens - self.produced

    @property
    def done(self) -> bool:
        return self.cancelled or self.remaining <= 0


def outputs(items: Iterable) -> Iterator[Draw]:
    """A request's characters from what the loop put on its `out`, up to FINISHED; an exception
    put there is raised."""
    for item in items:
        if item is FINISHED:
            return
        if isinstance(item, BaseException):
            raise item
        yield item


def prefill_groups(requests: list[Request], length: int) -> list[list[Request]]:
    """Requests whose prompts have `length` characters, in groups of at most PREFILL_CHARS
    characters (one request at least): a prefill's attention scores grow with rows × length²."""
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


def considered(logits: np.ndarray, ids: np.ndarray, params: SamplingParams) -> list[Alternatives | None]:
    """What a request's rows considered at each position they wrote this tick, from its part of
    the logits [rows, count, vocab] and the ids drawn there [rows, count]; None at each position
    when its settings do not ask (the cost falls only on requests that ask)."""
    rows, count = ids.shape
    if not params.alternatives:
        return [None] * count
    alternatives = top_alternatives(
        logits.transpose(1, 0, 2).reshape(rows * count, -1),
        [params] * (rows * count),
        ids.T.ravel(),
        params.alternatives,
    )
    by_position = [a.reshape(count, rows, *a.shape[1:]) for a in alternatives]
    return [Alternatives(*(a[j] for a in by_position)) for j in range(count)]


def concat(parts: list[list[np.ndarray]]) -> list[np.ndarray]:
    """Lists of batch-first arrays, joined along the batch axis array by array."""
    return parts[0] if len(parts) == 1 else [np.concatenate(arrays) for arrays in zip(*parts)]


@dataclass(eq=False)
class Cohort:
    """Requests whose states have the same shape, stacked along the batch axis in the order
    of `requests` (each request's rows are one of `row_slices()`)."""

    requests: list[Request]
    logits: np.ndarray  # [rows, T, vocab]: the logits after the fed character and after each drafted one
    state: dict[str, np.ndarray]  # the step interface's state, batch-first arrays
    drafted: np.ndarray | None = None  # [rows, T - 1]: the ids drafted after the fed one (-1 past a shorter draft)
    uncommitted: list[np.ndarray] | None = None  # a drafted block's forward, kept once the draws say how much of it

    def __post_init__(self):
        if self.drafted is None:
            self.drafted = np.zeros((len(self.logits), self.logits.shape[1] - 1), np.int64)

    @property
    def shape(self) -> tuple:
        """What cohorts that step together share: each row's state shapes and how many positions their logits hold."""
        return tuple(a.shape[1:] for a in self.state.values()), self.logits.shape[1]

    def row_slices(self) -> list[slice]:
        slices, start = [], 0
        for request in self.requests:
            slices.append(slice(start, start + request.rows))
            start += request.rows
        return slices

    def retain(self, kept: list[Request]) -> None:
        """Drop the rows of the requests not in `kept` (a subsequence of `requests`)."""
        if len(kept) == len(self.requests):
            return
        if len({r.rows for r in self.requests}) == 1:
            self._fill_holes(kept)
            return
        rows = np.concatenate(
            [np.arange(s.start, s.stop) for r, s in zip(self.requests, self.row_slices()) if r in kept]
            or [np.zeros(0, np.int64)]
        )
        self.requests, self.logits, self.drafted = kept, self.logits[rows], self.drafted[rows]
        self.state = {name: array[rows] for name, array in self.state.items()}

    def _fill_holes(self, kept: list[Request]) -> None:
        """retain() when every request has as many rows: the kept requests past the first
        len(kept) move into the places of the dropped ones before them, and the arrays become
        views of their first rows. One row is copied per finished request instead of every row of
        every array, and a crowd's requests finish a few steps apart: the copies would stay with
        the allocator and grow the server's memory (docs/serving.md)."""
        live, n, size = set(kept), len(kept), self.requests[0].rows
        holes = [i for i in range(n) if self.requests[i] not in live]
        movers = [i for i in range(n, len(self.requests)) if self.requests[i] in live]  # as many as holes
        order = list(self.requests[:n])
        for hole, mover in zip(holes, movers):
            order[hole] = self.requests[mover]
        if holes:
            to = (np.array(holes)[:, None] * size + np.arange(size)).ravel()
            source = (np.array(movers)[:, None] * size + np.arange(size)).ravel()
            for array in (self.logits, self.drafted, *self.state.values()):
                array[to] = array[source]  # rows below n from rows at or past it: never overlapping
        self.requests, self.logits, self.drafted = order, self.logits[: n * size], self.drafted[: n * size]
        self.state = {name: array[: n * size] for name, array in self.state.items()}

    @staticmethod
    def merge(cohorts: list[Cohort]) -> Cohort:
        if len(cohorts) == 1:
            return cohorts[0]
        uncommitted = None if cohorts[0].uncommitted is None else concat([c.uncommitted for c in cohorts])
        return Cohort(
            [r for c in cohorts for r in c.requests],
            np.concatenate([c.logits for c in cohorts]),
            {name: np.concatenate([c.state[name] for c in cohorts]) for name in cohorts[0].state},
            np.concatenate([c.drafted for c in cohorts]),
            uncommitted,
        )


class Scheduler:
    """The loop's state and its tick, on an engine's steps (Engine: its step interface, receptive
    field, drafting settings and draft table). max_rows caps the rows of one forward; a larger
    cohort steps in several."""

    def __init__(self, engine, max_rows: int = 64):
        self.steps, self.receptive_field = engine.steps, engine.receptive_field
        self.max_draft, self.draft_table = engine.max_draft, engine.draft_table
        self.max_rows = max_rows
        self.cohorts: list[Cohort] = []
        self.ticks = 0  # forwards of cached steps, for tests and benchmarks

    def active_rows(self) -> int:
        return sum(r.rows for c in self.cohorts for r in c.requests)

    def admit(self, requests: list[Request]) -> None:
        """Prefill the requests (those of one prompt length together) and add them as cohorts."""
        by_length: dict[int, list[Request]] = {}
        for request in requests:
            if not request.cancelled:
                request.budget = self.max_draft
                by_length.setdefault(min(len(request.prompt_ids), self.receptive_field), []).append(request)
        for length, same_length in by_length.items():
            for group in prefill_groups(same_length, length):
                ids = np.concatenate([np.tile(np.array(r.prompt_ids[-length:], np.int64), (r.rows, 1)) for r in group])
                try:
                    logits, state = self.steps.prefill(ids)
                except Exception as e:  # a failure of the runtime: these requests' consumers raise it
                    for request in group:
                        request.out.put(e)
                    continue
                self.cohorts.append(Cohort(group, logits[:, None], state))
        self._regroup()

    def tick(self, crowded: bool = False) -> None:
        """Sample, step and regroup every cohort once. crowded: more requests are on their way,
        so a request decoding now is not alone."""
        for cohort in self.cohorts:
            self._sample(cohort)
        self.cohorts = [c for c in self.cohorts if c.requests]
        alone = not crowded and len(self.cohorts) == 1 and len(self.cohorts[0].requests) == 1
        for cohort in self.cohorts:
            self._step(cohort, alone)
        self._regroup()

    def fail(self, error: BaseException) -> None:
        """End every request with `error` (a fault must not leave consumers waiting)."""
        for request in (r for c in self.cohorts for r in c.requests):
            request.out.put(error)
        self.cohorts = []

    def _sample(self, cohort: Cohort) -> None:
        """Each request's next characters from its rows of the cohort's logits, every row with its
        own settings and stream: its drafted characters up to the first that a draw of its rows
        differs from, and one more, at most what it has left."""
        slices = cohort.row_slices()
        live = [not request.cancelled for request in cohort.requests]  # read once: a consumer may cancel meanwhile
        members = [request for request, alive in zip(cohort.requests, live) if alive]
        ids = np.zeros(cohort.logits.shape[:2], np.int64)
        probs, counts = np.zeros(ids.shape), np.zeros(len(ids), np.int64)  # cancelled requests' rows keep nothing
        if members:
            rows = np.concatenate([np.arange(s.start, s.stop) for s, alive in zip(slices, live) if alive])
            sizes = [m.rows for m in members]
            row_params = [m.params for m in members for _ in range(m.rows)]
            row_rngs = [rng for m in members for rng in m.rngs]
            row_request = np.repeat(np.arange(len(members)), sizes)  # rows of one request advance together
            row_remaining = np.repeat([m.remaining for m in members], sizes)
            ids[rows], probs[rows], counts[rows] = draw_blocks(
                cohort.logits[rows], cohort.drafted[rows], row_params, row_rngs, row_request, row_remaining
            )
        if cohort.uncommitted is not None:
            # Every row's, the cancelled ones' too: their rows are dropped below.
            cohort.state = self.steps.commit(cohort.state, cohort.uncommitted, counts)
            cohort.uncommitted = None
        kept = []
        # As lists once for the cohort: numpy calls per request were most of a crowd's sampling time.
        id_rows, row_counts, drafted_lengths = ids.tolist(), counts.tolist(), (cohort.drafted >= 0).sum(axis=1).tolist()
        for request, rows, alive in zip(cohort.requests, slices, live):  # in the cohort's order, as retain asks
            if not alive:
                continue
            count = row_counts[rows.start]
            for j, alternatives in enumerate(
                considered(cohort.logits[rows, :count], ids[rows, :count], request.params)
            ):
                request.out.put(Draw(ids[rows, j], probs[rows, j], alternatives))
            request.input_ids = ids[rows, count - 1]
            request.produced += count
            request.budget = next_budget(request.budget, drafted_lengths[rows.start], count, self.max_draft)
            request.histories = [h + as_text(c[:count]) for h, c in zip(request.histories, id_rows[rows])]
            if request.done:
                request.out.put(FINISHED)
            else:
                kept.append(request)
        cohort.retain(kept)

    def _step(self, cohort: Cohort, alone: bool) -> None:
        """One forward for every row: its next id, and the characters drafted after it where the
        file takes several a step (as far as its budget goes for a request alone, CROWD_DRAFT in
        a crowd; never past its last character, nor past what one step takes)."""
        ids = np.concatenate([r.input_ids for r in cohort.requests])[:, None]
        drafted = np.zeros((len(ids), 0), np.int64)
        if self.steps.max_block > 1 and self.max_draft:
            row_drafts = []
            for request in cohort.requests:
                max_chars = min(
                    request.budget if alone else CROWD_DRAFT, request.remaining - 1, self.steps.max_block - 1
                )
                row_drafts.append(drafts(request.histories, max_chars, self.draft_table))
            width = max(d.shape[1] for d in row_drafts)
            if width:
                drafted = np.full((len(ids), width), -1, np.int64)
                for d, rows in zip(row_drafts, cohort.row_slices()):
                    drafted[rows, : d.shape[1]] = d
                # A padded place runs any id; its draw is never kept.
                ids = np.concatenate((ids, np.maximum(drafted, 0)), axis=1)
        chunks = [slice(i, i + self.max_rows) for i in range(0, len(ids), self.max_rows)]
        try:
            parts = [self.steps.forward(ids[rows], {n: a[rows] for n, a in cohort.state.items()}) for rows in chunks]
        except Exception as e:
            for request in cohort.requests:
                request.out.put(e)
            cohort.requests = []
            return
        self.ticks += len(parts)
        cohort.logits = parts[0][0] if len(parts) == 1 else np.concatenate([logits for logits, _ in parts])
        cohort.drafted = drafted
        uncommitted = concat([p for _, p in parts])
        if ids.shape[1] == 1:
            cohort.state = self.steps.commit(cohort.state, uncommitted, 1)  # the fed character is always kept
        else:
            cohort.uncommitted = uncommitted  # kept once the draws say how much of each row's block to keep (_sample)

    def _regroup(self) -> None:
        by_shape: dict[tuple, list[Cohort]] = {}
        for cohort in self.cohorts:
            if cohort.requests:
                by_shape.setdefault(cohort.shape, []).append(cohort)
        self.cohorts = [Cohort.merge(group) for group in by_shape.values()]
