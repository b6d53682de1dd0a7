"""A /generate request's six inputs, as any client may send them, turned into a prompt and
Settings, or refused: one sentence to the client, one line in the server's log."""

from __future__ import annotations

import logging
import math
import secrets

import gradio as gr

from webapp.engine import MAX_PROMPT_CHARS, Settings, SettingsError

LOG = logging.getLogger("chargpt.webapp")


def refuse(message: str) -> gr.Error:
    """The error that answers a refused request: one sentence to the client, one line in the
    server's log (not Gradio's traceback: a refusal is not a fault of the server)."""
    LOG.warning("refused a request: %s", message)
    return gr.Error(message, print_exception=False)


def values_as_sent(component):
    """The component, with its API values passed to check_request as they were sent. Gradio's own
    check of a slider's range answers an out-of-range number with a traceback in the log for
    every such request; check_request refuses it with a sentence naming the field and one log
    line. (An instance attribute: a subclass of a Gradio component writes a .pyi file beside
    this one on import.)"""
    component.preprocess = lambda payload: payload
    return component


def check_request(prompt, max_new_tokens, temperature, top_k, top_p, seed) -> tuple[str, Settings]:
    """Turn the six API inputs into a prompt and Settings, or raise gr.Error with one sentence."""
    if prompt is None:
        prompt = ""
    if not isinstance(prompt, str):
        raise refuse("The prompt must be text.")
    if len(prompt) > MAX_PROMPT_CHARS:
        raise refuse(f"The prompt is {len(prompt):,} characters; the limit is {MAX_PROMPT_CHARS:,} "
                     "(the model reads only its last few hundred anyway).")
    # JSON may carry lone UTF-16 surrogates ("\ud800"), which no UTF-8 answer can hold: pair
    # what pairs, and replace the rest by U+FFFD (then dropped as outside the vocabulary).
    prompt = prompt.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")
    seed = _number(seed)
    if seed is None or seed == "" or seed == -1:
        seed = secrets.randbelow(2**31)  # reported in the stats line, so the text can be made again
    try:
        settings = Settings(max_new_tokens=_number(max_new_tokens), temperature=_number(temperature),
                            top_k=_number(top_k), top_p=_number(top_p), seed=seed)
    except SettingsError as e:
        raise refuse(str(e)[0].upper() + str(e)[1:]) from None
    return prompt, settings


def _number(x):
    """Numbers through the API may arrive as strings; anything unparseable stays as it is and
    is refused by Settings with a sentence naming the field."""
    if isinstance(x, str):
        try:
            return float(x) if any(c in x.lower() for c in ".en") else int(x)
        except ValueError:
            return x
    if isinstance(x, float) and x.is_integer() and math.isfinite(x):
        return int(x)
    return x
