"""Generated text as HTML, each character coloured by the probability the model gave it.

Each character's colour is an inline style, so API clients get it too; the box around the text
(TEXT_STYLE) is the page's. The HTML only ever grows at its end while characters arrive, so
Gradio streams each update as the new spans alone, not the whole text again. The static page
draws the same colours (webapp/web/chargpt.js, `colour`).

Asked for alternatives (the page asks; docs/views.md), the prompt's span carries the request that
wrote the text (`data-request`, JSON) and, once the text is complete, each generated character's
span what the model considered there (`data-alternatives`, JSON), which the page's inspector
(webapp/web/views.js) reads to show them and to rewrite the text from a chosen alternative. While
the text streams its spans are the plain ones: the browser lays out the whole text again at every
update, and spans with alternatives, three times the size, would slow every one of them.
"""

from __future__ import annotations

import html
import json

from webapp.inference.engine import Piece

TEXT_STYLE = (
    "font-family: ui-monospace, Menlo, Consolas, monospace; white-space: pre-wrap; line-height: 1.5; "
    "max-height: 30em; overflow-y: auto; padding: 0.5em; border-radius: 6px"
)
PROMPT_STYLE = "opacity: 0.6"
DIGITS = 6  # a probability's decimals in the HTML: within 5e-7 of the engine's
CHOSEN, UNDO = "chargpt-chosen", "chargpt-undo"  # the classes views.js looks for


def colour(p: float) -> str:
    """Background for a character the model gave probability p: red (unlikely) to green (sure)."""
    return f"hsl({int(130 * p + 0.5)}, 75%, 82%)"  # halves round up, as JavaScript's Math.round


def attribute(value) -> str:
    """A JSON value as an HTML attribute's value, in single quotes: JSON's double quotes then
    need no escaping, which would have made each generated character's span longer."""
    text = html.escape(json.dumps(value, ensure_ascii=False, separators=(",", ":")), quote=False)
    return "'" + text.replace("'", "&#x27;") + "'"


def char_span(piece: Piece, tab_stop: bool = False, chosen: bool = False) -> str:
    title = f"p = {piece.prob:.2f}" + " · your choice" * chosen
    attributes = f'style="background:{colour(piece.prob)}" title="{title}"'
    if piece.alternatives is not None:
        found = [[c, round(m, DIGITS), round(s, DIGITS)] for c, m, s in piece.alternatives]
        attributes += f' tabindex="{0 if tab_stop else -1}" data-alternatives={attribute(found)}'
    if chosen:
        attributes += f' class="{CHOSEN}"'
    return f"<span {attributes}>{html.escape(piece.char)}</span>"


def legend() -> str:
    stops = "".join(
        f'<span style="background:{colour(p)}">&nbsp;{p:.1f}&nbsp;</span>' for p in (0.1, 0.3, 0.5, 0.7, 0.9)
    )
    return (
        f'<div style="font-size: 0.85em">Colour = probability the model gave each generated character: {stops}. '
        "Hover over, tap or Tab to a character to see what the model considered there; choose another to rewrite "
        "the text from it.</div>"
    )


class ColouredText:
    """The prompt (dimmed) and the generated characters as they arrive; `html()` at any time, with
    what the model considered at each character once `complete`. request: the request that
    writes the text, as the page sends it back to rewrite it (only when the characters come with
    alternatives); an Undo button leads when it has earlier choices to go back to."""

    def __init__(self, prompt: str, request: dict | None = None):
        undo = (
            f'<button type="button" class="{UNDO}">Undo the last choice</button> '
            if request and request["undo"]
            else ""
        )
        data = f" data-request={attribute(request)}" if request else ""
        self.start = f'{undo}<span style="{PROMPT_STYLE}"{data}>{html.escape(prompt)}</span>'
        self.pieces: list[tuple[Piece, bool]] = []
        self.streamed: list[str] = []  # the spans without alternatives, kept as the text grows

    def add(self, piece: Piece, chosen: bool = False) -> None:
        self.pieces.append((piece, chosen))
        self.streamed.append(char_span(piece._replace(alternatives=None), chosen=chosen))

    def html(self, complete: bool = False) -> str:
        if complete:
            return self.start + "".join(char_span(p, tab_stop=i == 0, chosen=c) for i, (p, c) in enumerate(self.pieces))
        return self.start + "".join(self.streamed)
