"""What a page says about the model it serves (title, description, default and example prompts),
read from the model's metadata (`about`, written by `python -m export`: export/about.py), and the
page's "About the model" table.

A model exported before `about` existed, or with a damaged one, gets neutral words that fit any
model. Example prompts with characters outside the vocabulary are left out, so that an example
never meets the "dropped characters" notice. The JavaScript page (webapp/web/chargpt.js) reads
the same key with the same rules.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from webapp.inference.phrases import averaged_phrase

if TYPE_CHECKING:
    from webapp.inference.engine import Engine

NEUTRAL_TITLE = "chargpt"
NEUTRAL_DESCRIPTION = "A small character-level GPT. Write the start of a text and let it continue."
MAX_EXAMPLES = 12


@dataclass(frozen=True)
class About:
    title: str = NEUTRAL_TITLE
    description: str = NEUTRAL_DESCRIPTION
    examples: list[str] = field(default_factory=list)

    @property
    def prompt(self) -> str:
        """The default prompt: the first example, or none (the model then starts from a newline)."""
        return self.examples[0] if self.examples else ""


def read_about(metadata: dict) -> About:
    about = metadata.get("about")
    if not isinstance(about, dict):
        return About()
    vocab = set(metadata["vocab"])

    def line(key: str, default: str) -> str:
        value = about.get(key)
        return value.strip() if isinstance(value, str) and value.strip() else default

    examples = about.get("examples") if isinstance(about.get("examples"), list) else []
    usable = [e for e in examples if isinstance(e, str) and e and set(e) <= vocab]
    return About(line("title", NEUTRAL_TITLE), line("description", NEUTRAL_DESCRIPTION), usable[:MAX_EXAMPLES])


def model_panel(engine: Engine) -> str:
    """The page's "About the model" table: the file, its shape and how it was trained."""
    c, t = engine.metadata["config"], engine.metadata["training"]
    val = f"{t['val_loss']:.4f}" if t.get("val_loss") is not None else "not recorded"
    steps = t.get("averaged_steps")
    averaged = f"; {averaged_phrase(steps)}" if steps else ""
    rows = [
        ("file", f"`{engine.path.name}` ({engine.path.stat().st_size / 1e6:.2f} MB)"),
        ("parameters", f"{t['params']:,}"),
        ("validation loss", f"{val} nats/char (the whole validation split of its training text)"),
        (
            "shape",
            f"{c['n_layer']} layers, {c['n_head']} heads, width {c['n_embd']}, context {c['block_size']} characters",
        ),
        ("architecture", f"{c['position']} positions, {c['activation']}, {c['norm']}"),
        ("training", f"{t['step']:,} steps, {t.get('tokens_seen') or 0:,} characters" + averaged),
        ("runtime", f"onnxruntime, {engine.provider}"),
    ]
    return "| model | |\n| --- | --- |\n" + "\n".join(f"| {k} | {v} |" for k, v in rows)
