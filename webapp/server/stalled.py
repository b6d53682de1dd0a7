"""Clients that join the queue and stop reading: their generation ends, their batch row and what
the server buffered for them go, within bounded time; clients that keep reading keep their
stream however many others come and go (docs/reliability.md).

Gradio decodes a request whether or not its client reads the stream, and keeps every message it
has not delivered in a per-session queue for as long as 2,000 newer sessions have not pushed it
out: a script that joined and never read held megabytes per request. end_stalled_streams cancels
a session whose oldest undelivered message has waited STALL_S (its generator is closed, so its
row leaves the batch) and drops its messages. A visitor's page and gradio_client read every
message as it comes, so this never touches them. (A client that reads its stream a byte a second
is handed its messages as fast as they come: they wait in its connection's buffer, not here.)
"""

from __future__ import annotations

import asyncio
import contextlib
import time

from webapp.server.api_input import LOG

STALL_S = 20.0
SWEEP_EVERY_S = 1.0


def stalled_sessions(
    heads: dict[str, object], seen: dict[str, tuple[object, float]], now: float, stall_s: float = STALL_S
) -> tuple[list[str], dict[str, tuple[object, float]]]:
    """heads: each session's oldest undelivered message (sessions with one). seen: the last
    sweep's record, session -> (that message, when it was first seen there). Returns the sessions
    whose oldest message has stayed the same for stall_s, and the new record."""
    record = {}
    for session, head in heads.items():
        message, since = seen.get(session, (None, now))
        record[session] = (head, since if message is head else now)
    return [s for s, (_, since) in record.items() if now - since >= stall_s], record


def orphaned_sessions(pending_ids: dict[str, set[str]], queued: set[str], live_events: set[str]) -> list[str]:
    """Sessions whose stream went away mid-request (a closed tab): Gradio dropped their message
    queue but keeps their event ids for good. pending_ids: each session's undelivered event ids;
    queued: the sessions with a message queue; live_events: the events waiting or running."""
    return [s for s, ids in pending_ids.items() if s not in queued and not ids & live_events]


def live_sessions(pending_ids: dict[str, set[str]], queued: set[str]) -> list[str]:
    """Sessions with a message queue and a request not yet answered."""
    return [s for s, ids in pending_ids.items() if ids and s in queued]


async def sweep(queue, seen: dict[str, tuple[object, float]], now: float, stall_s: float = STALL_S) -> dict:
    """One pass over Gradio's `queue`: end the sessions stalled_sessions names, forget orphaned
    ones, and keep live ones out of reach of Gradio's eviction. Returns the new `seen`."""
    pending = queue.pending_messages_per_session
    heads = {session: messages._queue[0] for session, messages in list(pending.items()) if not messages.empty()}
    stalled, seen = stalled_sessions(heads, seen, now, stall_s)
    for session in stalled:
        LOG.info("ended a stream nobody read for %g s (%d messages undelivered)", stall_s, pending[session].qsize())
        await queue.clean_events(session_hash=session)  # marks its events dead: Gradio closes their generators
        pending.pop(session, None)
        queue.pending_event_ids_session.pop(session, None)
        seen.pop(session, None)
    for session in orphaned_sessions(
        dict(queue.pending_event_ids_session), set(pending.keys()), set(queue.event_ids_to_events)
    ):
        queue.pending_event_ids_session.pop(session, None)
    # Gradio's message queues are an LRU of 2,000 sessions ordered by each one's first request: a
    # visitor who keeps a page (or a gradio_client) open while 2,000 others come lost its queue,
    # and its stream broke mid-answer. Answered sessions stay behind it in that order, so those
    # are the ones evicted.
    for session in live_sessions(dict(queue.pending_event_ids_session), set(pending.keys())):
        pending.move_to_end(session)
    return seen


async def end_stalled_streams(queue, stall_s: float = STALL_S, every_s: float = SWEEP_EVERY_S) -> None:
    """Forever: every every_s, sweep Gradio's `queue`."""
    seen: dict[str, tuple[object, float]] = {}
    while True:
        await asyncio.sleep(every_s)
        seen = await sweep(queue, seen, time.monotonic(), stall_s)


def stalled_stream_lifespan(stall_s: float = STALL_S):
    """A lifespan for Gradio's app (app_kwargs["lifespan"]) that runs end_stalled_streams."""

    @contextlib.asynccontextmanager
    async def lifespan(app):
        task = asyncio.create_task(end_stalled_streams(app.get_blocks()._queue, stall_s))
        try:
            yield
        finally:
            task.cancel()

    return lifespan
