"""Drafts from the text's own repeats and from a draft table (webapp/inference/drafting.py), and the
engine's steps that check them: the text is the plain loop's, written in fewer steps where it
repeats itself or follows the training text's habits."""

import json
import shutil

import numpy as np
import pytest

from webapp.inference.drafting import (
    REPEAT_MATCH,
    DraftTable,
    DraftTableError,
    as_text,
    build_table,
    draft,
    drafts,
    load_table,
    read_table,
    table_json,
    table_path,
)
from webapp.inference.engine import Engine
from webapp.inference.onnx_model import SHIPPED_MODEL
from webapp.inference.sampling import SamplingParams


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


def test_a_table_keeps_the_most_frequent_continuation_of_each_context_less_those_its_shorter_one_gives():
    # "aab" three times: "" -> a (6 of 9), "a" -> a (3) or b (3): a, the lower id; "b" -> a, "aa" -> b,
    # "ab" -> a, "ba" -> a. All but "" and "aa" give what their next shorter context gives.
    assert build_table("aab" * 3, order=2, min_count=2) == DraftTable({"": "a", "aa": "b"}, 2)
    assert build_table("aab" * 3, order=2, min_count=4) == DraftTable({"": "a"}, 2)  # "aa" was followed 3 times
    assert build_table("ba", order=0, min_count=1) == DraftTable({"": "a"}, 0)  # a tie: the lowest id
    assert build_table("", order=3, min_count=1) == DraftTable({}, 3)


def test_a_table_drafts_by_following_its_longest_context_again_and_again():
    table = build_table("aab" * 3, order=2, min_count=2)
    assert table.follow("ab", 5) == "aabaa"
    assert table.follow("", 2) == "aa" and table.follow("xyz", 0) == ""
    assert DraftTable({}, 2).follow("abc", 4) == ""  # nothing to follow


def test_the_pruned_table_drafts_what_counting_the_text_gives():
    """A golden reference: for any text so far, the table's next id is the most frequent (lowest
    on ties) follower of its longest ending of at most `order` ids seen at least min_count times."""
    rng = np.random.default_rng(1)
    text = as_text(rng.choice(4, 3000, p=[0.4, 0.3, 0.2, 0.1]))
    order, min_count = 4, 3
    table = build_table(text, order, min_count)

    def counted(history: str) -> str:
        for k in range(min(order, len(history)), -1, -1):
            context = history[len(history) - k :]
            followers = [text[i + k] for i in range(len(text) - k) if text.startswith(context, i)]
            if len(followers) >= min_count:
                return min(set(followers), key=lambda c: (-followers.count(c), c))
        raise AssertionError("the empty context is always seen")

    for _ in range(150):
        history = as_text(rng.integers(0, 4, rng.integers(0, 9)))
        assert table.follow(history, 1) == counted(history), history
    assert len(table.next) < len(build_table(text, order, 1).next)  # min_count leaves contexts out


def test_with_a_table_the_texts_own_repeats_are_drafted_only_where_a_long_ending_occurred_before():
    table = DraftTable({"": "z"}, 1)
    assert draft("abcXabc", 4, table) == "zzzz"  # "abc" occurred before, but shorter than REPEAT_MATCH
    history = "0123456789" + "y" + "0123456789"[:REPEAT_MATCH]
    assert draft(history, 3, table) == "678"  # an ending of REPEAT_MATCH ids occurred: the text's own repeat
    assert draft("abc", 0, table) == "" and draft("", 2, table) == "zz"
    assert drafts(
        [as_text([1, 2]), as_text([3])], 3, DraftTable({as_text([2]): as_text([5]), "": as_text([1])}, 1)
    ).tolist() == [[5, 1, 1], [1, 1, 1]]


TINY_VOCAB = ["\n", " ", "a", "b", "é"]


def tiny_table_and_json():
    """A table built from a short text of TINY_VOCAB's characters, and its file's JSON."""
    table = build_table(as_text([2, 2, 1, 4, 0, 2, 2, 1, 4, 0, 3]), order=3, min_count=1)
    return table, json.loads(json.dumps(table_json(table, TINY_VOCAB, 1, {"split": "train"})))


def test_a_table_file_round_trips_in_the_models_characters():
    table, data = tiny_table_and_json()
    assert data["next"] == {"": "a", "\na": "a", " ": "é", "a": " ", "é": "\n"} and data["format"] == "chargpt-drafts/1"
    assert read_table(data, TINY_VOCAB) == table


# A table file spoiled in each way read_table refuses, and the words of its refusal.
SPOILED_TABLES = [
    ("not a draft table", lambda data: []),
    ("not a draft table", lambda data: {**data, "format": "chargpt-drafts/0"}),
    ("malformed", lambda data: {**data, "order": "3"}),
    ("malformed", lambda data: {**data, "next": ["a"]}),
    ("not in the model's vocabulary", lambda data: {**data, "next": {"ax": "a"}}),
    ("not in the model's vocabulary", lambda data: {**data, "next": {"a": "ab"}}),
    ("not in the model's vocabulary", lambda data: {**data, "next": {"a": 3}}),
]


@pytest.mark.parametrize("why, spoil", SPOILED_TABLES)
def test_a_bad_table_is_refused_with_its_reason(why, spoil):
    _, data = tiny_table_and_json()
    with pytest.raises(DraftTableError, match=why):
        read_table(spoil(data), TINY_VOCAB)


def test_a_model_without_a_table_file_drafts_without_a_notice(tmp_path):
    assert load_table(table_path(tmp_path / "model.onnx"), TINY_VOCAB) == (None, "")


@pytest.mark.parametrize("kind", ["not JSON", "not UTF-8", "another vocabulary"])
def test_a_table_file_that_cannot_be_used_is_named_in_a_notice(tmp_path, kind):
    _, data = tiny_table_and_json()
    text = {"not JSON": "{", "not UTF-8": "\udcff", "another vocabulary": json.dumps({**data, "next": {"q": "a"}})}[
        kind
    ]
    path = table_path(tmp_path / "model.onnx")
    path.write_text(text, encoding="utf-8", errors="surrogateescape")
    found, notice = load_table(path, TINY_VOCAB)
    assert found is None
    assert notice.startswith("model.drafts.json was not used (") and notice.endswith("repeats only.")


@pytest.fixture(scope="module")
def shipped():
    """The engine as it runs, and the model file's plain loop (no ring file, nothing drafted)."""
    return Engine(SHIPPED_MODEL), Engine(SHIPPED_MODEL, ring=False)


def count_steps(engine: Engine, prompt: str, settings: SamplingParams) -> tuple[list[str], list[int]]:
    """The texts, and the characters each ring step ran (one per row of its block)."""
    ring, sizes = engine.ring, []
    forward = ring.forward
    ring.forward = lambda ids, state: (sizes.append(ids.shape[1]), forward(ids, state))[1]
    try:
        return engine.complete(prompt, settings), sizes
    finally:
        del ring.forward


@pytest.mark.parametrize(
    "prompt, settings",
    [
        ("ROMEO:\n", SamplingParams(max_new_tokens=400, temperature=0)),  # greedy falls into loops: long drafts kept
        (
            "To be, or not to be, to be, or not to be, to be",
            SamplingParams(max_new_tokens=150, temperature=0.8, seed=3),
        ),
        ("JULIET:\n", SamplingParams(max_new_tokens=200, temperature=1.0, top_k=10, top_p=0.9, seed=7, num_samples=3)),
        ("ab", SamplingParams(max_new_tokens=2, temperature=0)),
        ("the the the the", SamplingParams(max_new_tokens=1, temperature=0.5, seed=1)),
    ],
)
def test_drafted_steps_write_the_plain_loops_text(shipped, prompt, settings):
    drafting, plain = shipped
    texts, sizes = count_steps(drafting, prompt, settings)
    assert texts == plain.complete(prompt, settings)
    assert all(len(t) == settings.max_new_tokens for t in texts)
    assert len(sizes) <= settings.max_new_tokens - 1  # no step after the last character asked for
    if settings.max_new_tokens >= 150 and settings.num_samples == 1:
        assert max(sizes) > 1 and len(sizes) < settings.max_new_tokens - 1  # drafts were run and some were kept


def test_a_spoiled_draft_table_is_named_and_the_text_is_unchanged(shipped, tmp_path):
    _, plain = shipped
    folder = tmp_path / "chargpt"
    shutil.copytree(SHIPPED_MODEL, folder)
    (folder / "onnx" / "model.drafts.json").write_text(
        '{"format": "chargpt-drafts/1", "order": 5, "next": {"ROMEO": "Ω"}}'
    )
    engine = Engine(folder)
    assert engine.ring is not None and engine.draft_table is None
    assert engine.notice == (
        "model.drafts.json was not used (it holds characters that are not in the model's vocabulary); "
        "drafting from the text's own repeats only."
    )
    settings = SamplingParams(max_new_tokens=100, temperature=0.8, seed=5)
    assert engine.complete("ROMEO:", settings) == plain.complete("ROMEO:", settings)


def test_greedy_repeats_are_written_several_characters_a_step(shipped):
    drafting, _ = shipped
    _, sizes = count_steps(drafting, "ROMEO:\n", SamplingParams(max_new_tokens=500, temperature=0))
    assert len(sizes) < 0.6 * 500, len(
        sizes
    )  # greedy text repeats its phrases: the shipped model's 500 characters took 78 steps
