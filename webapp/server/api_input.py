"""The API's inputs, as any client may send them (/generate's, /inspect's, and the page's choices
of alternatives), turned into a prompt and SamplingParams, or refused: one sentence to the
client, one line in the server's log."""

from __future__ import annotations

import json
import logging
import math
import secrets

import gradio as gr

from webapp.inference.engine import MAX_PROMPT_CHARS
from webapp.inference.sampling import PAGE_ALTERNATIVES, SamplingParams, SettingsError

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


MAX_CHOICES = (
    16  # alternatives chosen in one text (each one regenerates the text before it: webapp/server/streaming.py)
)
MAX_UNDO = 16  # earlier texts the page's Undo can go back to


def check_prompt(prompt) -> str:
    """The prompt (or /inspect's text) as the model may read it, or gr.Error with one sentence."""
    if prompt is None:
        prompt = ""
    if not isinstance(prompt, str):
        raise refuse("The prompt must be text.")
    if len(prompt) > MAX_PROMPT_CHARS:
        raise refuse(
            f"The prompt is {len(prompt):,} characters; the limit is {MAX_PROMPT_CHARS:,} "
            "(the model reads only its last few hundred anyway)."
        )
    return without_lone_surrogates(prompt)


def without_lone_surrogates(text: str) -> str:
    """JSON may carry lone UTF-16 surrogates ("\ud800"), which no UTF-8 answer can hold (the
    answer echoes the text): pair what pairs, and replace the rest by U+FFFD (then dropped as
    outside the vocabulary)."""
    return text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")


def check_request(
    prompt, max_new_tokens, temperature, top_k, top_p, seed, min_p=0.0, alternatives=False
) -> tuple[str, SamplingParams]:
    """Turn /generate's inputs into a prompt and SamplingParams, or raise gr.Error with one
    sentence. alternatives: whether each new character comes with what the model considered
    there (PAGE_ALTERNATIVES of them)."""
    prompt = check_prompt(prompt)
    seed = _number(seed)
    if seed is None or seed == "" or seed == -1:
        seed = secrets.randbelow(2**31)  # reported in the stats line, so the text can be made again
    if alternatives not in (None, False, True, 0, 1, "false", "true"):
        raise refuse(f"Alternatives must be true or false, not {alternatives!r}.")
    return prompt, settings(
        max_new_tokens=_number(max_new_tokens),
        temperature=_number(temperature),
        top_k=_number(top_k),
        top_p=_number(top_p),
        min_p=0.0 if min_p is None else _number(min_p),
        seed=seed,
        alternatives=PAGE_ALTERNATIVES if alternatives in (True, 1, "true") else 0,
    )


def check_inspect(text, temperature, top_k, top_p, min_p=0.0) -> tuple[str, SamplingParams]:
    """Turn /inspect's inputs into a text and the settings of a draw after it, or raise gr.Error
    with the sentences /generate's checks use."""
    return check_prompt(text), settings(
        temperature=_number(temperature),
        top_k=_number(top_k),
        top_p=_number(top_p),
        min_p=0.0 if min_p is None else _number(min_p),
    )


def check_choices(choices) -> list[tuple[int, str]]:
    """The page's chosen alternatives, [[position, character], ...] with positions counted in the
    generated text and increasing, or gr.Error with one sentence."""
    if not isinstance(choices, list) or len(choices) > MAX_CHOICES:
        raise refuse(f"Choices must be a list of at most {MAX_CHOICES} [position, character] pairs.")
    checked = []
    for choice in choices:
        if not (
            isinstance(choice, list)
            and len(choice) == 2
            and isinstance(choice[0], int)
            and not isinstance(choice[0], bool)
            and isinstance(choice[1], str)
            and len(choice[1]) == 1
        ):
            raise refuse(f"Each choice must be a [position, character] pair, not {str(choice)[:80]}.")
        if choice[0] < (checked[-1][0] + 1 if checked else 0):
            raise refuse("The choices' positions must be whole numbers from 0, each after the one before.")
        checked.append((choice[0], without_lone_surrogates(choice[1])))
    return checked


def check_undo(undo) -> list[list[tuple[int, str]]]:
    """The choices of the texts before the page's (what its Undo asks for), at most MAX_UNDO
    (the latest last, older ones forgotten), or gr.Error with one sentence."""
    if not isinstance(undo, list):
        raise refuse("Undo must be a list of earlier choices.")
    return [check_choices(choices) for choices in undo[-MAX_UNDO:]]


def settings(**values) -> SamplingParams:
    """SamplingParams, or gr.Error with its sentence (capitalised: it starts the message)."""
    try:
        return SamplingParams(**values)
    except SettingsError as e:
        raise refuse(str(e)[0].upper() + str(e)[1:]) from None


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
    """ASGI middleware: a call that sends fewer inputs than its endpoint takes, as calls written
    before a setting was added do, gets null for the missing trailing ones, which the checks read
    as their defaults (gradio_client fills them in itself; Gradio refuses a short list). Both of
    Gradio's ways in: its plain HTTP API (`POST /gradio_api/call/NAME`; `inputs`: each endpoint's
    name and number of inputs) and its queue (`POST /gradio_api/queue/join`, which names the
    event by index; `by_index`: each event's index and number of inputs). Request bodies reach it
    already bounded (RequestSizeLimit runs before it)."""

    def __init__(self, app, inputs: dict[str, int], by_index: dict[int, int] | None = None):
        self.app, self.inputs, self.by_index = app, inputs, by_index or {}

    def expected(self, path: str, payload: dict) -> int | None:
        """How many inputs the call's endpoint takes (None: a call that is not padded)."""
        _, call, name = path.rstrip("/").rpartition("/gradio_api/call/")
        if call:
            return self.inputs.get(name)
        index = payload.get("fn_index")
        return (
            self.by_index.get(index)
            if isinstance(index, int) and path.rstrip("/").endswith("/gradio_api/queue/join")
            else None
        )

    def padded(self, scope) -> bool:
        path = scope.get("path", "").rstrip("/")
        return (
            scope["type"] == "http"
            and scope.get("method") == "POST"
            and (path.endswith("/gradio_api/queue/join") or path.rpartition("/gradio_api/call/")[2] in self.inputs)
        )

    async def __call__(self, scope, receive, send):
        if not self.padded(scope):
            return await self.app(scope, receive, send)
        body, more = b"", True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                return await self.app(scope, receive, send)  # the client left: nothing to answer
            body, more = body + message.get("body", b""), message.get("more_body", False)
        try:
            payload = json.loads(body)
            expected = self.expected(scope["path"], payload) if isinstance(payload, dict) else None
            if expected is not None and isinstance(payload.get("data"), list) and len(payload["data"]) < expected:
                payload["data"] += [None] * (expected - len(payload["data"]))
                body = json.dumps(payload).encode()
        except ValueError:
            pass  # not JSON: Gradio answers it as it answers any malformed body
        headers = [(k, v) for k, v in scope["headers"] if k != b"content-length"] + [
            (b"content-length", str(len(body)).encode())
        ]
        sent = False

        async def replay():
            nonlocal sent
            if sent:
                return await receive()
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app({**scope, "headers": headers}, replay, send)
