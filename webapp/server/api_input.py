"""A /generate request's inputs, as any client may send them, turned into a prompt and
SamplingParams, or refused: one sentence to the client, one line in the server's log."""

from __future__ import annotations

import json
import logging
import math
import secrets

import gradio as gr

from webapp.inference.engine import MAX_PROMPT_CHARS
from webapp.inference.sampling import SamplingParams, SettingsError

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


def check_request(prompt, max_new_tokens, temperature, top_k, top_p, seed, min_p=0.0) -> tuple[str, SamplingParams]:
    """Turn the API inputs into a prompt and SamplingParams, or raise gr.Error with one sentence."""
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
        params = SamplingParams(max_new_tokens=_number(max_new_tokens), temperature=_number(temperature),
                                top_k=_number(top_k), top_p=_number(top_p),
                                min_p=0.0 if min_p is None else _number(min_p), seed=seed)
    except SettingsError as e:
        raise refuse(str(e)[0].upper() + str(e)[1:]) from None
    return prompt, params


def _number(x):
    """Numbers through the API may arrive as strings; anything unparseable stays as it is and
    is refused by SamplingParams with a sentence naming the field."""
    if isinstance(x, str):
        try:
            return float(x) if any(c in x.lower() for c in ".en") else int(x)
        except ValueError:
            return x
    if isinstance(x, float) and x.is_integer() and math.isfinite(x):
        return int(x)
    return x


class TrailingInputs:
    """ASGI middleware: a call of an endpoint over Gradio's plain HTTP API (`POST
    /gradio_api/call/NAME`) that sends fewer inputs than the endpoint takes, as calls written
    before a setting was added do, gets null for the missing trailing ones, which check_request
    reads as their defaults (gradio_client fills them in itself; Gradio refuses a short list).
    `inputs`: the endpoint's name and its number of inputs. Request bodies reach it already
    bounded (RequestSizeLimit runs before it)."""

    def __init__(self, app, inputs: dict[str, int]):
        self.app, self.inputs = app, inputs

    async def __call__(self, scope, receive, send):
        _, call, name = scope.get("path", "").rstrip("/").rpartition("/gradio_api/call/")
        if scope["type"] != "http" or scope.get("method") != "POST" or not call or name not in self.inputs:
            return await self.app(scope, receive, send)
        body, more = b"", True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                return await self.app(scope, receive, send)  # the client left: nothing to answer
            body, more = body + message.get("body", b""), message.get("more_body", False)
        try:
            payload = json.loads(body)
            if isinstance(payload, dict) and isinstance(payload.get("data"), list) and len(payload["data"]) < self.inputs[name]:
                payload["data"] += [None] * (self.inputs[name] - len(payload["data"]))
                body = json.dumps(payload).encode()
        except ValueError:
            pass  # not JSON: Gradio answers it as it answers any malformed body
        headers = [(k, v) for k, v in scope["headers"] if k != b"content-length"] + [(b"content-length", str(len(body)).encode())]
        sent = False

        async def replay():
            nonlocal sent
            if sent:
                return await receive()
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app({**scope, "headers": headers}, replay, send)
