"""What the pages say about a model: derived from its training text at export, read back with
neutral words where the metadata lacks them, the same in Python and JavaScript."""

from __future__ import annotations

import json
import shutil

import pytest
from helpers import node_json

from export.about import AboutError, build, dataset_name, example_prompts
from train.text import SHAKESPEARE_SHA256
from webapp.server.about import NEUTRAL_DESCRIPTION, NEUTRAL_TITLE, About, read_about

PLAY = "FAUST:\nHabe nun, ach! Philosophie,\n\nMEPHISTOPHELES:\nIch bin der Geist, der stets verneint!\n\n" * 3


def test_examples_are_recurring_short_lines_then_common_openings_and_occur_in_the_text(shakespeare):
    text = shakespeare.read_text(encoding="utf-8")
    assert example_prompts(text) == [
        "GLOUCESTER:",
        "DUKE VINCENTIO:",
        "ROMEO:",
        "MENENIUS:",
        "PETRUCHIO:",
        "CORIOLANUS:",
    ]
    assert {"FAUST:", "MEPHISTOPHELES:"} <= set(example_prompts(PLAY))
    prose = "Il était une fois une fille.\nIl était une fois un loup.\nLe loup dit bonjour.\n"
    assert example_prompts(prose) == ["Il était", "Le loup"]
    assert example_prompts("x" * 500) == ["x" * 20]  # nothing recurs, no line has three words
    for text in (PLAY, prose):
        assert all(e in text for e in example_prompts(text))


def test_names_descriptions_and_flags():
    assert dataset_name("/data/tinyshakespeare.txt", SHAKESPEARE_SHA256) == "Tiny Shakespeare"
    assert dataset_name("runs/zen_of-python.txt", "0" * 64) == "zen of python"
    vocab = sorted(set(PLAY))
    derived = build(vocab, "faust.txt", "0" * 64, PLAY)
    assert derived == {
        "title": "chargpt: faust",
        "dataset": "faust",
        "examples": example_prompts(PLAY),
        "description": "A small character-level GPT trained on faust. Write the start of a text and let it continue.",
    }
    given = build(
        vocab, "faust.txt", "0" * 64, PLAY, title="T", dataset="Faust I", description="D.", examples=["FAUST:\\nHabe"]
    )
    assert given == {"title": "T", "dataset": "Faust I", "description": "D.", "examples": ["FAUST:\nHabe"]}
    with pytest.raises(AboutError, match="outside the model's vocabulary"):
        build(vocab, "faust.txt", "0" * 64, PLAY, examples=["ROMEO:"])
    with pytest.raises(AboutError, match="the title must be one line"):
        build(vocab, "faust.txt", "0" * 64, PLAY, title="two\nlines")


ABOUTS = [  # (metadata's about, what the pages show)
    (None, About()),
    ("not a dict", About()),
    ({"title": " ", "description": 7, "examples": "FAUST:"}, About()),
    (
        {"title": "Faust", "description": "Ein GPT.", "examples": ["FAUST:", "ROMEO:", "", 3, "FAST"]},
        About("Faust", "Ein GPT.", ["FAUST:", "FAST"]),
    ),
]


@pytest.mark.parametrize("about, shown", ABOUTS)
def test_the_pages_read_the_models_words_or_neutral_ones(about, shown):
    metadata = {"vocab": sorted(set(PLAY)), **({} if about is None else {"about": about})}
    assert read_about(metadata) == shown
    assert shown.prompt == (shown.examples[0] if shown.examples else "")
    if about is None:
        assert (shown.title, shown.description) == (NEUTRAL_TITLE, NEUTRAL_DESCRIPTION)


def test_the_javascript_page_reads_them_the_same_way():
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed")
    cases = [{"vocab": sorted(set(PLAY)), **({} if about is None else {"about": about})} for about, _ in ABOUTS]
    script = (
        f"import {{ readAbout }} from './chargpt.js';\nconsole.log(JSON.stringify({json.dumps(cases)}.map(readAbout)));"
    )
    out = node_json(node, script)
    expected = [
        {"title": s.title, "description": s.description, "examples": s.examples, "prompt": s.prompt} for _, s in ABOUTS
    ]
    assert out == expected
