"""Drafts from the text's own repeats (webapp/drafting.py), and the engine's steps that check
them: the text is the plain loop's, written in fewer steps where it repeats itself."""

import numpy as np
import pytest

from webapp.drafting import as_text, draft, drafts
from webapp.engine import Engine, Settings
from webapp.onnx_model import SHIPPED_MODEL


def test_a_draft_is_what_followed_the_latest_earlier_occurrence_of_the_longest_ending():
    assert draft("the cat; the dog; the c", 7) == "at; the"  # "the c" (5) beats the later "the " (4)
    assert draft("abcXabcYabc", 3) == "Yab"  # the latest of two equal matches
    assert draft("abcab", 1) == "c"
    assert draft("abcab", 0) == ""
    assert draft("abcd", 5) == ""  # no ending of MIN_MATCH characters occurred before
    assert draft("", 3) == draft("a", 3) == ""
    assert draft("abab", 3, min_match=3) == ""


def test_a_draft_that_runs_into_the_end_goes_on_repeating_the_loop():
    assert draft("abcab", 10) == "cabcabcabc"  # "ab" then "c", and the loop "cab" again
    assert draft("xa" + "b" * 3, 4) == "bbbb"  # "bb" occurred, ending just before the last "b"
    assert draft("so so so", 7) == " so so "
    loop = "And then you have seen the state of your honour,\n"
    assert draft("LADY ANNE:\n" + loop + loop[:20], 40) == (loop[20:] + loop)[:40]


def test_drafts_are_cut_to_the_shortest_row_and_ids_of_any_vocabulary_size_survive():  # a row with none: none for all
    big = [300, 7, 300, 7, 300]  # ids beyond one byte
    found = drafts([as_text(big), as_text([1, 2, 3, 1, 2])], 5)
    assert found.dtype == np.int64 and found.tolist() == [[7, 300, 7, 300, 7], [3, 1, 2, 3, 1]]
    assert drafts([as_text([1, 2, 1, 2]), as_text([4, 5, 6])], 5).shape == (2, 0)


@pytest.fixture(scope="module")
def shipped():
    """The engine as it runs, and the model file's plain loop (no ring file, nothing drafted)."""
    return Engine(SHIPPED_MODEL), Engine(SHIPPED_MODEL, ring=False)


def count_steps(engine: Engine, prompt: str, settings: Settings) -> tuple[list[str], list[int]]:
    """The texts, and the characters each ring step ran (one per row of its block)."""
    ring, sizes = engine.ring, []
    forward = ring.forward
    ring.forward = lambda ids, state: (sizes.append(ids.shape[1]), forward(ids, state))[1]
    try:
        return engine.complete(prompt, settings), sizes
    finally:
        del ring.forward


@pytest.mark.parametrize("prompt, settings", [
    ("ROMEO:\n", Settings(max_new_tokens=400, temperature=0)),  # greedy falls into loops: long drafts kept
    ("To be, or not to be, to be, or not to be, to be", Settings(max_new_tokens=150, temperature=0.8, seed=3)),
    ("JULIET:\n", Settings(max_new_tokens=200, temperature=1.0, top_k=10, top_p=0.9, seed=7, num_samples=3)),
    ("ab", Settings(max_new_tokens=2, temperature=0)),
    ("the the the the", Settings(max_new_tokens=1, temperature=0.5, seed=1)),
])
def test_drafted_steps_write_the_plain_loops_text(shipped, prompt, settings):
    drafting, plain = shipped
    texts, sizes = count_steps(drafting, prompt, settings)
    assert texts == plain.complete(prompt, settings)
    assert all(len(t) == settings.max_new_tokens for t in texts)
    assert len(sizes) <= settings.max_new_tokens - 1  # no step after the last character asked for
    if settings.max_new_tokens >= 150 and settings.num_samples == 1:
        assert max(sizes) > 1 and len(sizes) < settings.max_new_tokens - 1  # drafts were run and some were kept


def test_greedy_repeats_are_written_several_characters_a_step(shipped):
    drafting, _ = shipped
    _, sizes = count_steps(drafting, "ROMEO:\n", Settings(max_new_tokens=500, temperature=0))
    assert len(sizes) < 0.6 * 500, len(sizes)  # the shipped model's greedy text loops within its first 500 characters (263 steps)
