"""Many requests decoding at once, sharing forwards: continuous batching for the server.

`Batcher.decode` has the contract of `Engine.decode` (the loop at the level of ids), so
`Engine.generate(prompt, params, decode=batcher.decode)` streams text as alone. Behind it, one
thread runs the decoding loop (webapp/inference/loop.py) for every request that arrives; the web
server runs it in a process of its own (webapp/server/model_process.py). A request whose consumer
stops (Stop in the page, a closed tab, a stop string) leaves its batch before the next step.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterator

from .loop import Draw, Request, Scheduler, outputs
from .sampling import SamplingParams

# A request arriving while others decode waits up to this long for others to arrive, so that a
# crowd arriving together is prefilled in few forwards (and, without a ring file, starts as few
# cohorts: caches of one length only meet once their windows are full). It delays a first
# character by at most as much as one page update.
ADMIT_WINDOW_S = 0.05
# The server's defaults: requests decoding at once (one batch), and requests waiting beyond those.
CONCURRENCY, QUEUE_SIZE = 32, 32


class Batcher:
    """The decoding loop of `engine` in one thread (started on first use), for requests arriving
    from any thread. max_rows caps the rows of one forward; a larger batch steps in several.
    after_tick, when given, is called by that thread after each tick (after all its `put`s)."""

    def __init__(self, engine, max_rows: int = 64, after_tick: Callable[[], None] | None = None):
        self.loop = Scheduler(engine, max_rows)
        self.after_tick = after_tick
        self.arrivals: queue.SimpleQueue[Request] = queue.SimpleQueue()
        self.waiting: list[tuple[float, Request]] = []  # (arrival time, request), not yet prefilled
        self.lock = threading.Lock()
        self.thread: threading.Thread | None = None

    @property
    def ticks(self) -> int:
        """Forwards of cached steps so far, for tests and benchmarks."""
        return self.loop.ticks

    def decode(self, prompt_ids: list[int], params: SamplingParams) -> Iterator[Draw]:
        """As Engine.decode: yields a Draw per new character. Closing the iterator (or dropping
        it) takes the request out of its batch."""
        request = self.submit(prompt_ids, params)

        def delivered():
            while True:
                yield request.out.get()

        try:
            yield from outputs(delivered())
        finally:
            request.cancelled = True

    def submit(self, prompt_ids: list[int], params: SamplingParams, out=None) -> Request:
        """A new request, queued to join the next tick's batch; its characters go to `out` (a
        new queue by default), and setting its `cancelled` takes it out of its batch."""
        request = Request(list(prompt_ids), params, queue.SimpleQueue() if out is None else out)
        self._start()
        self.arrivals.put(request)
        return request

    def active_rows(self) -> int:
        return self.loop.active_rows()

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
                self.loop.fail(e)
            if self.after_tick is not None:
                self.after_tick()

    def _tick(self) -> None:
        # Block only when nothing is decoding; otherwise take whoever has arrived.
        self._admit(block=not self.loop.cohorts)
        self.loop.tick(crowded=bool(self.waiting) or not self.arrivals.empty())

    def _admit(self, block: bool) -> None:
        """Prefill the requests that have waited ADMIT_WINDOW_S (all of them when nothing else
        is decoding)."""
        while True:
            try:
                request = self.arrivals.get(block=block and not self.waiting)
                self.waiting.append((time.perf_counter(), request))
            except queue.Empty:
                break
        if not self.waiting or (self.loop.cohorts and time.perf_counter() - self.waiting[0][0] < ADMIT_WINDOW_S):
            return
        requests = [request for _, request in self.waiting]
        self.waiting = []
        self.loop.admit(requests)
