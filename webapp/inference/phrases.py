"""How a model's training record reads in English, in the three places that show it: the model
card (export/metadata.py), the loss curve's label (export/writing.py) and the page's "About the
model" table (webapp/server/about.py). It lives in the inference library, the one layer that
both export and the server may import (tests/test_layout.py)."""

from __future__ import annotations


def steps_phrase(steps: list[int]) -> str:
    """[3750, 4000, 4180] -> '3,750, 4,000 and 4,180'."""
    words = [f"{n:,}" for n in steps]
    return ", ".join(words[:-1]) + " and " + words[-1] if len(words) > 1 else "".join(words)


def averaged_phrase(steps: list[int]) -> str:
    """How the card, the loss curve and the page name an averaged model's weights."""
    return f"the mean of the weights at steps {steps_phrase(steps)}"
