"""A generation as the page and /generate stream it: (full text, coloured HTML, stats line) as
characters arrive, its forward passes in the server's batches; and the same text rewritten from
alternatives the page's visitor chose (docs/views.md).

A text with choices is a pure function of its request: the prompt's continuation up to the first
choice's position, the chosen character there, then the continuation of everything so far (as if
it were the prompt, with the same settings and seed), and so on. So a choice gives what
`python -m webapp generate` writes for the text up to it. The request also carries the choices
of the texts before it (`undo`), which Undo asks for again; nothing is kept between requests.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator

from webapp.inference.engine import Decode, Engine, Piece, encode_prompt
from webapp.inference.sampling import SamplingParams
from webapp.server.api_input import refuse
from webapp.server.coloured import ColouredText

# The page is updated while characters arrive, at most every STREAM_EVERY_S, and only once
# UPDATE_CHARS new characters have come or STREAM_MAX_WAIT_S has passed. Each update costs the
# server the same whatever it carries: when a crowd shares the model, each visitor's characters
# come slower, and fewer, fuller updates leave the cores to the model.
STREAM_EVERY_S, UPDATE_CHARS, STREAM_MAX_WAIT_S = 0.05, 16, 0.5
# A request as the page's text carries it and sends it back: /generate's inputs, in their order.
REQUEST_FIELDS = ("prompt", "max_new_tokens", "temperature", "top_k", "top_p", "seed", "min_p")


def written_pieces(
    engine: Engine, decode: Decode, start: str, params: SamplingParams, choices: list[tuple[int, str]]
) -> Iterator[tuple[Piece, bool]]:
    """The text after `start` (the prompt, or a newline for an empty one) as (piece, chosen):
    generated with `params`, and at each choice's position (counted after `start`) the chosen
    character instead of the drawn one, with what the model considered there. gr.Error when a
    choice is not there to make."""
    written = ""
    for at, char in [*choices, (None, None)]:
        with contextlib.closing(engine.generate(encode_prompt(start + written, engine.vocab), params, decode)) as steps:
            for piece in (p for step in steps for p in step.pieces[0]):  # closed: the batch row is freed
                if len(written) == at:
                    considered = next((c for c in piece.alternatives or () if c[0] == char), None)
                    if considered is None:
                        raise refuse(
                            f"{char!r} is not among the characters the model considered at character {at + 1}."
                        )
                    written += char
                    yield Piece(char, considered[1], piece.alternatives), True
                    break
                written += piece.char
                yield piece, False
        if at is not None and len(written) <= at:
            raise refuse(
                f"There is no character {at + 1} to choose at: the text before it has {len(written)} characters."
            )


def stream_generation(
    engine: Engine,
    decode: Decode,
    prompt: str,
    params: SamplingParams,
    stop: threading.Event | None = None,
    choices: list[tuple[int, str]] | None = None,
    undo: list[list[tuple[int, str]]] | None = None,
    clock: Callable[[], float] = time.perf_counter,
) -> Iterator[tuple[str, str, str]]:
    """Yields (full text, coloured HTML, stats line) as characters arrive. With alternatives in
    `params`, the last HTML carries them (webapp/server/coloured.py says why the last), and every
    HTML the request that wrote the text, with `undo`, the choices of the texts before it (for the
    page's choices and Undo). Once `stop` is set, it ends with the text so far (its batch row freed
    at once) and says so on the stats line."""
    encoded = encode_prompt(prompt, engine.vocab)
    notices = [n for n in (engine.notice, encoded.notice()) if n]
    if len(encoded.ids) > engine.receptive_field:
        notices.append(f"the model reads the last {engine.receptive_field} characters of the prompt")
    if choices:
        notices.append(f"{len(choices)} chosen character{'s' * (len(choices) > 1)}")
    start = prompt if prompt else encoded.text  # an empty prompt starts from a newline
    request = {
        "prompt": prompt,
        **{field: getattr(params, field) for field in REQUEST_FIELDS[1:]},
        "choices": [list(c) for c in choices or []],
        "undo": [[list(c) for c in earlier] for earlier in undo or []],
    }
    coloured = ColouredText(start, request if params.alternatives else None)
    text, generated, shown, stopped = start, 0, 0, False
    began = last_yield = clock()

    def stats() -> str:
        elapsed = clock() - began
        rate = generated / elapsed if elapsed > 0 else 0.0
        line = f"{generated} characters in {elapsed:.2f} s ({rate:,.0f} characters/s)"
        line += f" · {engine.provider} · seed {params.seed}"
        return line + " · stopped" * stopped + "".join(f" · {n}" for n in notices)

    with contextlib.closing(written_pieces(engine, decode, start, params, choices or [])) as pieces:
        for piece, chosen in pieces:
            if stop is not None and stop.is_set():
                stopped = True
                break
            text += piece.char
            coloured.add(piece, chosen)
            generated += 1
            now = clock()
            waited = now - last_yield
            if waited >= STREAM_MAX_WAIT_S or (waited >= STREAM_EVERY_S and generated - shown >= UPDATE_CHARS):
                last_yield, shown = now, generated
                yield text, coloured.html(), stats()
    yield text, coloured.html(complete=True), stats()
