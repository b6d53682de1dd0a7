"""What the pages say about a model: its title, the name of its training text, a one-line
description and example prompts. `python -m export` records them in the model's metadata
(the `about` key), where flags override what is derived from the training text; the Gradio
page, the static page and the model card show them (webapp/inference/onnx_model.py reads them back).
Pure functions, no I/O.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

from train.text import SHAKESPEARE_SHA256

EXAMPLES = 6  # example prompts derived from a text
HEADING_CHARS = 30  # a repeated line up to this long reads as a speaker, a heading or a refrain
MAX_EXAMPLE_CHARS = 500


class AboutError(ValueError):
    """A title, description or example that a page cannot show; the message says which."""


def dataset_name(path: str, sha256: str) -> str:
    """A short name for a training text: Tiny Shakespeare by its checksum, else the file's name
    ("zen_of_python.txt" -> "zen of python")."""
    if sha256 == SHAKESPEARE_SHA256:
        return "Tiny Shakespeare"
    return re.sub(r"[_\-.]+", " ", Path(path).stem).strip() or "a text"


def has_letter(text: str) -> bool:
    return any(c.isalpha() for c in text)


def example_prompts(text: str, count: int = EXAMPLES) -> list[str]:
    """Prompts that occur in `text`, most frequent first: short lines that recur (a play's speaker
    names, a book's headings, a song's refrain), then the commonest two-word line openings."""
    lines = [line.strip() for line in text.splitlines()]
    recurring = Counter(line for line in lines if 2 <= len(line) <= HEADING_CHARS and has_letter(line))
    picked = [line for line, n in recurring.most_common() if n >= 3][:count]
    openings = Counter(" ".join(line.split()[:2]) for line in lines if len(line.split()) >= 3)
    picked += [s for s, _ in openings.most_common() if s not in picked and has_letter(s)][: count - len(picked)]
    if not picked:  # no recurring lines and no line of three words: the text's first characters
        picked = [text.strip()[:20] or text[:1]]
    return picked


def unescape_newlines(example: str) -> str:
    """A prompt typed on a command line: the two characters \\n stand for a newline."""
    return example.replace("\\n", "\n")


def default_title(dataset: str) -> str:
    return f"chargpt: {dataset}"


def default_description(dataset: str) -> str:
    return f"A small character-level GPT trained on {dataset}. Write the start of a text and let it continue."


def build(
    vocab: list[str],
    text_path: str,
    sha256: str,
    text: str,
    title: str | None = None,
    dataset: str | None = None,
    description: str | None = None,
    examples: list[str] | None = None,
) -> dict:
    """The `about` metadata: each value given, else derived from the training text. AboutError
    for an example with characters outside the vocabulary, or an empty or overlong value."""
    dataset = dataset if dataset is not None else dataset_name(text_path, sha256)
    return checked(
        {
            "title": title if title is not None else default_title(dataset),
            "dataset": dataset,
            "description": description if description is not None else default_description(dataset),
            "examples": [unescape_newlines(e) for e in examples] if examples else example_prompts(text),
        },
        vocab,
    )


def renamed(
    about: dict,
    vocab: list[str],
    title: str | None = None,
    dataset: str | None = None,
    description: str | None = None,
    examples: list[str] | None = None,
) -> dict:
    """An exported model's `about` with the values given replaced; a title or description that
    was derived from the old dataset name follows the new one. AboutError as for build."""
    new_dataset = dataset if dataset is not None else about["dataset"]
    derived_title = about["title"] == default_title(about["dataset"])
    derived_description = about["description"] == default_description(about["dataset"])
    return checked(
        {
            "title": title if title is not None else default_title(new_dataset) if derived_title else about["title"],
            "dataset": new_dataset,
            "description": (
                description
                if description is not None
                else default_description(new_dataset)
                if derived_description
                else about["description"]
            ),
            "examples": [unescape_newlines(e) for e in examples] if examples else list(about["examples"]),
        },
        vocab,
    )


def checked(about: dict, vocab: list[str]) -> dict:
    """`about` itself, if a page can show it; else AboutError naming the value."""
    for key in ("title", "dataset", "description"):
        if not about[key].strip() or "\n" in about[key] or len(about[key]) > 300:
            raise AboutError(f"the {key} must be one line of 1 to 300 characters, not {about[key]!r}.")
    known = set(vocab)
    for example in about["examples"]:
        outside = sorted(set(example) - known)
        if outside or not example or len(example) > MAX_EXAMPLE_CHARS:
            why = (
                f"has characters outside the model's vocabulary ({', '.join(map(repr, outside[:5]))})"
                if outside
                else f"must have 1 to {MAX_EXAMPLE_CHARS} characters"
            )
            raise AboutError(f"the example prompt {example[:40]!r} {why}.")
    return about
