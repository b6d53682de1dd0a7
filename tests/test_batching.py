"""The server's batching: requests decoding at once share session.run calls, and each gets
exactly the text it gets alone."""

import threading
import time

import numpy as np
import pytest

from webapp.batching import CROWD_DRAFT, PREFILL_CHARS, Batcher, Cohort, Request, prefill_groups
from webapp.engine import Engine, Settings, encode_prompt
from webapp.model_process import ModelProcess
from webapp.onnx_model import SHIPPED_MODEL

PROMPTS = ["ROMEO:\n", "", "To be, or not to be", "KING RICHARD III:\nNow is the winter of our discontent\n" * 20]


def requests():
    """Prompts of four lengths (one longer than the receptive field), greedy and sampled
    settings, one and two samples, each case twice with other seeds."""
    cases = []
    for i, prompt in enumerate(PROMPTS * 3):
        settings = Settings(max_new_tokens=40 + 11 * i, temperature=(0, 0.8, 1.3)[i % 3], top_k=(0, 12)[i % 2],
                            top_p=(1.0, 0.9)[i % 2], seed=100 + i, num_samples=1 + (i % 4 == 3), stop="\n\n" if i == 5 else None)
        cases.append((prompt, settings))
    return cases


def complete_with(engine: Engine, batcher: Batcher | ModelProcess, prompt: str, settings: Settings) -> list[str]:
    texts = [""] * settings.num_samples
    for step in engine.generate(encode_prompt(prompt, engine.vocab), settings, batcher.decode):
        for r, piece in enumerate(step.pieces):
            texts[r] += "".join(c for c, _ in piece)
    return texts


def crowd(engine: Engine, batcher: Batcher | ModelProcess, cases: list[tuple[str, Settings]], spread_s: float = 0.0) -> list[list[str]]:
    """Each case's texts, all asked for at once through `batcher`, one thread each; with
    spread_s, arrivals spread over a few steps (0 to 4 × spread_s late), as a crowd's are."""
    got = [None] * len(cases)
    start = threading.Barrier(len(cases))

    def visit(i):
        start.wait()
        time.sleep(spread_s * (i % 5))
        got[i] = complete_with(engine, batcher, *cases[i])

    threads = [threading.Thread(target=visit, args=(i,)) for i in range(len(cases))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    return got


@pytest.fixture(scope="module", params=["tiny", "shipped"])
def engine(request, exported):
    return Engine(exported[1] if request.param == "tiny" else SHIPPED_MODEL)


@pytest.fixture(params=["thread", "process"])
def batcher(request, engine):
    """The batcher in this process (a thread), and in a process of its own, as the server runs it."""
    if request.param == "thread":
        yield Batcher(engine)
        return
    process = ModelProcess(engine.path)
    yield process
    process.close()


def test_batched_requests_get_exactly_their_text_alone(engine, batcher):
    """Prompts of four lengths, greedy and sampled, top-k and top-p, two samples, a stop string."""
    cases = requests()
    alone = [engine.complete(prompt, settings) for prompt, settings in cases]
    got = crowd(engine, batcher, cases, spread_s=0.002)
    for i, (want, have) in enumerate(zip(alone, got)):
        assert have == want, f"request {i} ({cases[i][1]}) differs from its text alone"
    if isinstance(batcher, Batcher):  # the model process keeps its count to itself
        steps_alone = sum(s.max_new_tokens - 1 for _, s in cases)
        assert batcher.ticks < 0.75 * steps_alone  # the steps were shared (alone: one run per step)


def test_one_request_runs_no_step_past_its_last_character(engine):
    settings = Settings(max_new_tokens=25, temperature=0.8, seed=3)
    plain = Engine(engine.path, max_draft=0)  # the same model, one character a step
    batcher = Batcher(plain)
    complete_with(plain, batcher, "ROMEO:", settings)
    assert batcher.ticks == 24  # a prefill gives the first character; one step per character after it


def test_a_request_alone_drafts_as_far_as_its_budget_and_a_crowd_drafts_crowd_draft_characters(engine):
    """Alone, a request's steps also check drafts (webapp/drafting.py), as Engine.decode's do;
    when a second request arrives, both step together with drafts of CROWD_DRAFT characters
    (each request keeping its own), and each text is its own."""
    if engine.ring is None:
        return  # drafts need the ring file (the tiny model has learned positions)
    sizes, forward = [], engine.ring.forward
    engine.ring.forward = lambda ids, state: (sizes.append(ids.shape), forward(ids, state))[1]
    try:
        batcher = Batcher(engine)
        first = Settings(max_new_tokens=400, temperature=0.8, seed=11)
        second = Settings(max_new_tokens=150, temperature=0.5, seed=12, num_samples=2)
        alone = complete_with(engine, batcher, "JULIET:\n", first)
        drafted_alone = list(sizes)
        sizes.clear()
        result = {}
        stream = engine.generate(encode_prompt("ROMEO:", engine.vocab), first, batcher.decode)
        texts = ["".join(c for c, _ in next(stream).pieces[0]) for _ in range(3)]  # the first request is decoding alone
        worker = threading.Thread(target=lambda: result.update(text=complete_with(engine, batcher, "KING RICHARD III:", second)))
        worker.start()
        for step in stream:
            texts.append("".join(c for c, _ in step.pieces[0]))
        worker.join(timeout=60)
    finally:
        del engine.ring.forward
    assert alone == engine.complete("JULIET:\n", first)
    assert len(drafted_alone) < 0.7 * 399 and max(t for _, t in drafted_alone) > 1  # drafts were run and kept
    assert ["".join(texts)] == engine.complete("ROMEO:", first)
    assert result["text"] == engine.complete("KING RICHARD III:", second)
    assert (3, 1 + CROWD_DRAFT) in sizes  # the two requests' three rows stepped together, with drafts
    assert all(t <= 1 + CROWD_DRAFT for rows, t in sizes if rows > 2)  # a batch of several requests drafts CROWD_DRAFT


def test_a_cancelled_request_leaves_the_batch_and_the_others_go_on(engine, batcher):
    long = Settings(max_new_tokens=2000, temperature=0.8, seed=1)
    cancelled = engine.generate(encode_prompt("ROMEO:", engine.vocab), long, batcher.decode)
    for _ in range(5):
        next(cancelled)
    other = Settings(max_new_tokens=300, temperature=0.8, seed=2)
    result = {}
    worker = threading.Thread(target=lambda: result.update(text=complete_with(engine, batcher, "JULIET:", other)))
    worker.start()
    while batcher.active_rows() < 2 and worker.is_alive():
        time.sleep(0.001)
    cancelled.close()  # what Gradio does on Stop or a closed tab
    deadline = time.time() + 10
    while batcher.active_rows() > 1 and time.time() < deadline:
        time.sleep(0.001)
    left = batcher.active_rows()
    worker.join(timeout=60)
    assert left <= 1  # only the other request, if it has not finished yet
    assert result["text"] == engine.complete("JULIET:", other)
    assert batcher.active_rows() == 0


def test_row_r_of_a_step_is_the_step_of_row_r_alone(engine):
    """What the batching rests on: a row's logits and cache do not depend on the other rows
    (the shipped model steps with its ring file, the tiny one with its model file)."""
    rng = np.random.default_rng(0)
    for length in (3, engine.block_size + 20):  # a cache, or ring, part-filled and full
        _, state = engine.prefill(rng.integers(0, len(engine.vocab), (6, length)))
        alone = [{n: a[r : r + 1].copy() for n, a in state.items()} for r in range(6)]  # a ring state changes in place
        ids = rng.integers(0, len(engine.vocab), 6)
        logits, after = engine.step(ids, state)
        for r in range(6):
            row_logits, row_after = engine.step(ids[r : r + 1], alone[r])
            assert np.array_equal(row_logits[0], logits[r])
            for n in row_after:
                assert np.array_equal(row_after[n][0], after[n][r])


def test_the_shipped_model_steps_with_its_ring_file(engine):
    if engine.metadata["config"]["position"] != "rotary":
        assert engine.ring is None and engine.notice == ""  # learned positions: no ring file
        return
    assert engine.ring is not None, engine.notice


def test_long_prompts_are_prefilled_a_few_at_a_time():
    """A prefill's attention scores grow with rows × length²: a crowd of long prompts is split."""
    long = [Request([1] * 763, Settings(), []) for _ in range(5)]
    assert [len(g) for g in prefill_groups(long, 763)] == [2, 2, 1]
    assert all(sum(r.rows for r in g) * 763 <= PREFILL_CHARS for g in prefill_groups(long, 763))
    short = [Request([1] * 7, Settings(num_samples=2), []) for _ in range(300)]
    groups = prefill_groups(short, 7)
    assert [r for g in groups for r in g] == short  # all of them, in arrival order
    assert len(groups) == 3
    huge = [Request([1] * 3000, Settings(), [])]  # longer than the budget alone: still prefilled
    assert prefill_groups(huge, 3000) == [huge]


@pytest.mark.parametrize("samples", [[1] * 7, [1, 2, 1, 2, 1, 2, 1]])
def test_a_cohort_keeps_each_kept_requests_own_rows(samples):
    """Dropping requests from a cohort: each kept request's rows of every array are still its
    own (one row each: the places of the dropped are filled from the end; otherwise copied)."""
    members = [Request([1], Settings(num_samples=n), []) for n in samples]
    total = sum(samples)
    owner = np.repeat(np.arange(len(members)), samples)  # each row's request, written into every array
    cohort = Cohort(members, np.broadcast_to(owner[:, None, None], (total, 2, 5)).astype(np.float32),
                    {"ring.0.key": np.broadcast_to(owner[:, None, None, None], (total, 2, 3, 4)).astype(np.float32),
                     "position": owner * 10},
                    np.broadcast_to(owner[:, None], (total, 1)).copy())
    for dropped in ([0, 3], [4], [1, 2]):  # three rounds, 7 requests, then 5, then 4: the front and middle, the end, the middle
        gone = {id(cohort.requests[i]) for i in dropped}
        cohort.keep([r for r in cohort.requests if id(r) not in gone])
        assert sum(r.rows for r in cohort.requests) == len(cohort.block) == len(cohort.drafted) == len(cohort.past["position"])
        for request, rows in zip(cohort.requests, cohort.row_slices()):
            i = members.index(request)
            assert (cohort.block[rows] == i).all() and (cohort.drafted[rows] == i).all()
            assert (cohort.past["ring.0.key"][rows] == i).all() and (cohort.past["position"][rows] == i * 10).all()
        if len(set(samples)) == 1:
            assert all(a.base is not None for a in cohort.past.values())  # views: no copy of the rest


def test_a_crowd_finishing_a_few_steps_apart_gets_exactly_its_text_alone(engine, batcher):
    """Requests of one sample each and different lengths: as each finishes, the cohort fills its
    place with a later request's rows (Cohort.keep), and every text stays its own."""
    cases = [("ROMEO:\n", Settings(max_new_tokens=20 + 17 * (i % 5), temperature=0.8, seed=i)) for i in range(12)]
    alone = [engine.complete(prompt, settings) for prompt, settings in cases]
    assert crowd(engine, batcher, cases) == alone

