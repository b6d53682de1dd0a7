"""Generated text as HTML, each character coloured by the probability the model gave it.

Each character's colour is an inline style, so API clients get it too; the box around the text
(TEXT_STYLE) is the page's. The HTML only ever grows at its end while characters arrive, so
Gradio streams each update as the new spans alone, not the whole text again. The static page
draws the same colours (webapp/web/chargpt.js, `colour`).
"""

from __future__ import annotations

import html

TEXT_STYLE = ("font-family: ui-monospace, Menlo, Consolas, monospace; white-space: pre-wrap; line-height: 1.5; "
              "max-height: 30em; overflow-y: auto; padding: 0.5em; border-radius: 6px")
PROMPT_STYLE = "opacity: 0.6"


def colour(p: float) -> str:
    """Background for a character the model gave probability p: red (unlikely) to green (sure)."""
    return f"hsl({int(130 * p + 0.5)}, 75%, 82%)"  # halves round up, as JavaScript's Math.round


def char_span(ch: str, p: float) -> str:
    return f'<span style="background:{colour(p)}" title="p = {p:.2f}">{html.escape(ch)}</span>'


def legend() -> str:
    stops = "".join(f'<span style="background:{colour(p)}">&nbsp;{p:.1f}&nbsp;</span>' for p in (0.1, 0.3, 0.5, 0.7, 0.9))
    return f'<div style="font-size: 0.85em">Colour = probability the model gave each generated character: {stops}</div>'


class ColouredText:
    """The prompt (dimmed) and the generated characters as they arrive; `html()` at any time."""

    def __init__(self, prompt: str):
        self.parts = [f'<span style="{PROMPT_STYLE}">{html.escape(prompt)}</span>']

    def add(self, ch: str, p: float) -> None:
        self.parts.append(char_span(ch, p))

    def html(self) -> str:
        return "".join(self.parts)
