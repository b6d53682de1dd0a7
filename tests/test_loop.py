"""The decoding loop (webapp/inference/loop.py), driven tick by tick in this thread: requests that
share its steps get exactly the ids they get alone, whichever file steps (the shipped model's
ring file with drafts, the tiny model's model file with caches that grow), and leave it as soon
as they are done or cancelled. The Batcher's thread and the model process run this same loop
(tests/test_batching.py)."""

import numpy as np
import pytest

from webapp.inference.engine import Engine, encode_prompt
from webapp.inference.loop import CROWD_DRAFT, FINISHED, PREFILL_CHARS, Cohort, Request, Scheduler, prefill_groups
from webapp.inference.onnx_model import SHIPPED_MODEL, PlainSteps
from webapp.inference.sampling import SamplingParams

PROMPTS = ["ROMEO:\n", "", "To be, or not to be", "KING RICHARD III:\nNow is the winter of our discontent\n" * 20]


def cases() -> list[tuple[str, SamplingParams]]:
    """Prompts of four lengths (one longer than the receptive field), greedy and sampled, top-k,
    top-p and min-p, one and two samples."""
    found = []
    for i, prompt in enumerate(PROMPTS * 3):
        found.append(
            (
                prompt,
                SamplingParams(
                    max_new_tokens=30 + 9 * i,
                    temperature=(0, 0.8, 1.3)[i % 3],
                    top_k=(0, 12)[i % 2],
                    top_p=(1.0, 0.9)[i % 2],
                    min_p=(0.0, 0.05, 0.0)[i % 3],
                    seed=100 + i,
                    num_samples=1 + (i % 4 == 3),
                ),
            )
        )
    return found


@pytest.fixture(scope="module", params=["tiny", "shipped"])
def engine(request, exported):
    return Engine(exported[1] if request.param == "tiny" else SHIPPED_MODEL)


def alone(engine: Engine, prompt: str, params: SamplingParams) -> list[list[int]]:
    """Each row's ids from Engine.decode: the loop with this request alone."""
    return [
        list(row)
        for row in zip(*[draw.ids.tolist() for draw in engine.decode(encode_prompt(prompt, engine.vocab).ids, params)])
    ]


def received(request: Request) -> tuple[list[list[int]], bool]:
    """Each row's ids the loop put on the request's out so far, and whether FINISHED came."""
    items = list(request.out)
    rows = [[] for _ in range(request.rows)]
    for item in items:
        if item is not FINISHED:
            for r, i in enumerate(item[0].tolist()):
                rows[r].append(i)
    return rows, FINISHED in items


def counting(steps) -> list[tuple[int, int]]:
    """Wrap a step interface's forward to record the shape of each call's ids."""
    shapes, forward = [], steps.forward
    steps.forward = lambda ids, state: (shapes.append(ids.shape), forward(ids, state))[1]
    return shapes


def test_requests_arriving_at_different_ticks_get_exactly_their_ids_alone(engine):
    loop, todo = Scheduler(engine), cases()
    requests = [Request(encode_prompt(prompt, engine.vocab).ids, params) for prompt, params in todo]
    arrivals = {i: 3 * (i % 5) for i in range(len(requests))}  # in groups, a few steps apart
    tick = 0
    while tick < 400 and not all(received(r)[1] for r in requests):
        loop.admit([r for i, r in enumerate(requests) if arrivals[i] == tick])
        loop.tick()
        tick += 1
    for request, (prompt, params) in zip(requests, todo):
        ids, finished = received(request)
        assert finished and ids == alone(engine, prompt, params), (prompt, params)
    assert loop.active_rows() == 0 and loop.cohorts == []
    steps_alone = sum(params.max_new_tokens - 1 for _, params in todo)
    assert loop.ticks < 0.6 * steps_alone  # they shared forwards


def test_no_forward_runs_past_a_requests_last_character():
    engine = Engine(SHIPPED_MODEL, max_draft=0)  # one character a step
    shapes = counting(engine.steps)
    texts = engine.complete("ROMEO:", SamplingParams(max_new_tokens=25, temperature=0.8, seed=3, num_samples=2))
    assert shapes == [(2, 1)] * 24  # the prefill gives the first character; one step per character after it
    assert len(texts) == 2 and all(len(t) == 25 for t in texts) and texts[0] != texts[1]


def test_a_cancelled_request_leaves_before_the_next_step_and_the_others_go_on(engine):
    loop = Scheduler(engine)
    stays = Request(
        encode_prompt("JULIET:", engine.vocab).ids, SamplingParams(max_new_tokens=60, temperature=0.8, seed=2)
    )
    leaves = Request(
        encode_prompt("ROMEO:", engine.vocab).ids,
        SamplingParams(max_new_tokens=500, temperature=0.8, seed=1, num_samples=2),
    )
    loop.admit([stays, leaves])
    for _ in range(5):
        loop.tick()
    leaves.cancelled = True
    written = len(leaves.out)
    loop.tick()
    assert len(leaves.out) == written  # nothing more for it
    assert loop.active_rows() == 1
    while not received(stays)[1]:
        loop.tick()
    assert received(stays)[0] == alone(engine, "JULIET:", stays.params)


def test_alone_a_request_drafts_as_far_as_its_budget_and_in_a_crowd_crowd_draft_characters():
    engine = Engine(SHIPPED_MODEL)
    shapes = counting(engine.steps)
    first = Request(
        encode_prompt("JULIET:\n", engine.vocab).ids, SamplingParams(max_new_tokens=200, temperature=0.8, seed=11)
    )
    loop = Scheduler(engine)
    loop.admit([first])
    for _ in range(20):
        loop.tick()
    assert max(t for _, t in shapes) > 1 + CROWD_DRAFT  # alone: long drafts
    shapes.clear()
    second = Request(
        encode_prompt("KING RICHARD III:", engine.vocab).ids,
        SamplingParams(max_new_tokens=150, temperature=0.5, seed=12, num_samples=2),
    )
    loop.admit([second])
    loop.tick()  # the second request's first step: they step together from here
    while not (received(first)[1] and received(second)[1]):
        loop.tick(crowded=True)
    assert (3, 1 + CROWD_DRAFT) in shapes  # three rows, the fed character and a one-character draft each
    assert all(t <= 1 + CROWD_DRAFT for rows, t in shapes if rows == 3)
    assert received(first)[0] == alone(engine, "JULIET:\n", first.params)
    assert received(second)[0] == alone(engine, "KING RICHARD III:", second.params)


@pytest.mark.parametrize("steps", ["ring", "model file"])
def test_row_r_of_a_step_is_row_r_stepped_alone(steps):
    """What the batching rests on: a row's logits and state do not depend on the other rows."""
    engine = Engine(SHIPPED_MODEL)
    interface, rng = engine.ring if steps == "ring" else PlainSteps(engine), np.random.default_rng(0)
    for length in (3, engine.block_size + 20):  # a cache, or ring, part-filled and full
        _, state = interface.prefill(rng.integers(0, len(engine.vocab), (6, length)))
        rows = [{n: a[r : r + 1].copy() for n, a in state.items()} for r in range(6)]  # a ring state changes in place
        ids = rng.integers(0, len(engine.vocab), (6, 1))
        logits, uncommitted = interface.forward(ids, state)
        after = interface.commit(state, uncommitted, 1)
        for r in range(6):
            row_logits, row_uncommitted = interface.forward(ids[r : r + 1], rows[r])
            row_after = interface.commit(rows[r], row_uncommitted, 1)
            assert np.array_equal(row_logits[0], logits[r])
            assert all(np.array_equal(row_after[n][0], after[n][r]) for n in row_after)


def test_the_ring_keeps_a_count_per_row_as_each_row_would_keep_alone():
    """A crowd's drafted step keeps a different number of characters in each row: rows at
    different positions, one wrapping round its ring, keeping 0, 2 and 3 of 3."""
    ring, rng = Engine(SHIPPED_MODEL).ring, np.random.default_rng(1)
    states = [ring.prefill(rng.integers(0, 65, (1, n)))[1] for n in (5, ring.slots - 1, ring.slots + 40)]
    crowd = {name: np.concatenate([s[name] for s in states]) for name in states[0]}
    ids = rng.integers(0, 65, (3, 3))
    _, new = ring.forward(ids, crowd)
    ring.commit(crowd, new, np.array([0, 2, 3]))
    for r, (state, count) in enumerate(zip(states, (0, 2, 3))):
        _, own = ring.forward(ids[r : r + 1], state)
        ring.commit(state, own, count)
        for name in state:
            assert np.allclose(crowd[name][r], state[name][0], atol=1e-5), name


def test_long_prompts_are_prefilled_a_few_at_a_time():
    """A prefill's attention scores grow with rows × length²: a crowd of long prompts is split."""
    long = [Request([1] * 763, SamplingParams()) for _ in range(5)]
    assert [len(g) for g in prefill_groups(long, 763)] == [2, 2, 1]
    assert all(sum(r.rows for r in g) * 763 <= PREFILL_CHARS for g in prefill_groups(long, 763))
    short = [Request([1] * 7, SamplingParams(num_samples=2)) for _ in range(300)]
    groups = prefill_groups(short, 7)
    assert [r for g in groups for r in g] == short  # all of them, in arrival order
    assert len(groups) == 3
    huge = [Request([1] * 3000, SamplingParams())]  # longer than the budget alone: still prefilled
    assert prefill_groups(huge, 3000) == [huge]


@pytest.mark.parametrize("samples", [[1] * 7, [1, 2, 1, 2, 1, 2, 1]])
def test_a_cohort_keeps_each_kept_requests_own_rows(samples):
    """Dropping requests from a cohort: each kept request's rows of every array are still its
    own (one row each: the places of the dropped are filled from the end; otherwise copied)."""
    members = [Request([1], SamplingParams(num_samples=n)) for n in samples]
    total = sum(samples)
    owner = np.repeat(np.arange(len(members)), samples)  # each row's request, written into every array
    cohort = Cohort(
        members,
        np.broadcast_to(owner[:, None, None], (total, 2, 5)).astype(np.float32),
        {
            "ring.0.key": np.broadcast_to(owner[:, None, None, None], (total, 2, 3, 4)).astype(np.float32),
            "position": owner * 10,
        },
        np.broadcast_to(owner[:, None], (total, 1)).copy(),
    )
    for dropped in (
        [0, 3],
        [4],
        [1, 2],
    ):  # three rounds, 7 requests, then 5, then 4: the front and middle, the end, the middle
        gone = {id(cohort.requests[i]) for i in dropped}
        cohort.retain([r for r in cohort.requests if id(r) not in gone])
        assert (
            sum(r.rows for r in cohort.requests)
            == len(cohort.logits)
            == len(cohort.drafted)
            == len(cohort.state["position"])
        )
        for request, rows in zip(cohort.requests, cohort.row_slices()):
            i = members.index(request)
            assert (cohort.logits[rows] == i).all() and (cohort.drafted[rows] == i).all()
            assert (cohort.state["ring.0.key"][rows] == i).all() and (cohort.state["position"][rows] == i * 10).all()
        if len(set(samples)) == 1:
            assert all(a.base is not None for a in cohort.state.values())  # views: no copy of the rest
