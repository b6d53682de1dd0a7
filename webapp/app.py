"""The Gradio page and its API (`/generate`), built around one Engine.

Run it with `python -m webapp`, or as a Space does: `python webapp/app.py` from the repo root.
`demo` is available as a module attribute (built on first access, for `gradio webapp/app.py`).
"""

from __future__ import annotations

import functools
import html
import json
import logging
import math
import secrets
import sys
import time
from pathlib import Path

if __name__ == "__main__" and __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `python webapp/app.py`, as Spaces run it

import gradio as gr

from webapp.about import read_about
from webapp.engine import MAX_NEW_TOKENS, MAX_PROMPT_CHARS, Engine, Settings, SettingsError, encode_prompt
from webapp.cli import CONCURRENCY, QUEUE_SIZE
from webapp.onnx_model import SHIPPED_MODEL

STATIC_SITE = Path(__file__).resolve().parent / "web" / "dist"  # built by `make web`
STATIC_URL = f"/gradio_api/file={STATIC_SITE}/"
STREAM_EVERY_S = 0.05  # how often the page is updated while characters arrive
# The largest request body the server reads: a prompt of MAX_PROMPT_CHARS characters is at most
# ~120 KB of JSON, so this leaves room for a clear "too long" answer to a long paste, and keeps
# a hostile client from making the server hold megabytes per request (or fill the upload folder).
MAX_REQUEST_BYTES = 2**20
# A refused body is read and dropped up to this many bytes, so that its sender gets the answer;
# a client that sends more is cut off (its connection reset) instead.
DRAIN_BYTES = 16 * MAX_REQUEST_BYTES
# Gradio keeps each session's last inputs (a copy of the prompt box) for this many sessions; its
# default, 10,000, let 1,000 fuzzed requests grow the server by 180 MB. Nothing here needs them.
SESSION_CAPACITY = 100
# Inline styles, so the coloured view looks the same wherever the HTML is shown (API clients too).
TEXT_STYLE = ("font-family: ui-monospace, Menlo, Consolas, monospace; white-space: pre-wrap; line-height: 1.5; "
              "max-height: 30em; overflow-y: auto; padding: 0.5em; border-radius: 6px")
PROMPT_STYLE = "opacity: 0.6"


def color(p: float) -> str:
    """Background for a character the model gave probability p: red (unlikely) to green (sure)."""
    return f"hsl({round(130 * p)}, 75%, 82%)"


def char_span(ch: str, p: float) -> str:
    return f'<span style="background:{color(p)}" title="p = {p:.2f}">{html.escape(ch)}</span>'


def legend() -> str:
    stops = "".join(f'<span style="background:{color(p)}">&nbsp;{p:.1f}&nbsp;</span>' for p in (0.1, 0.3, 0.5, 0.7, 0.9))
    return f'<div style="font-size: 0.85em">Colour = probability the model gave each generated character: {stops}</div>'


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


def stream_generation(engine: Engine, prompt, max_new_tokens, temperature, top_k, top_p, seed):
    """The /generate endpoint: yields (full text, coloured HTML, stats line) as characters arrive."""
    prompt, settings = check_request(prompt, max_new_tokens, temperature, top_k, top_p, seed)
    encoded = encode_prompt(prompt, engine.vocab)
    notices = [n for n in (engine.notice, encoded.notice()) if n]
    if len(encoded.ids) > engine.receptive_field:
        notices.append(f"the model reads the last {engine.receptive_field} characters of the prompt")
    text = prompt if prompt else encoded.text  # an empty prompt starts from a newline
    spans = [f'<div style="{TEXT_STYLE}"><span style="{PROMPT_STYLE}">{html.escape(text)}</span>']
    generated = 0
    start = last_yield = time.perf_counter()

    def stats() -> str:
        elapsed = time.perf_counter() - start
        rate = generated / elapsed if elapsed > 0 else 0.0
        line = (f"{generated} characters in {elapsed:.2f} s ({rate:,.0f} characters/s) · "
                f"{engine.provider} · seed {settings.seed}")
        return line + "".join(f" · {n}" for n in notices)

    for step in engine.generate(encoded, settings):
        for ch, p in step.pieces[0]:
            text += ch
            spans.append(char_span(ch, p))
            generated += 1
        now = time.perf_counter()
        if now - last_yield >= STREAM_EVERY_S:
            last_yield = now
            yield text, "".join(spans) + "</div>", stats()
    yield text, "".join(spans) + "</div>", stats()


def model_panel(engine: Engine) -> str:
    c, t = engine.metadata["config"], engine.metadata["training"]
    val = f"{t['val_loss']:.4f}" if t.get("val_loss") is not None else "not recorded"
    rows = [
        ("file", f"`{engine.path.name}` ({engine.path.stat().st_size / 1e6:.2f} MB)"),
        ("parameters", f"{t['params']:,}"),
        ("validation loss", f"{val} nats/char (the whole validation split of its training text)"),
        ("shape", f"{c['n_layer']} layers, {c['n_head']} heads, width {c['n_embd']}, context {c['block_size']} characters"),
        ("architecture", f"{c['position']} positions, {c['activation']}, {c['norm']}"),
        ("training", f"{t['step']:,} steps, {t.get('tokens_seen') or 0:,} characters"),
        ("runtime", f"onnxruntime, {engine.provider}"),
    ]
    return "| model | |\n| --- | --- |\n" + "\n".join(f"| {k} | {v} |" for k, v in rows)


def build_demo(engine: Engine, concurrency: int = CONCURRENCY, queue_size: int = QUEUE_SIZE) -> gr.Blocks:
    """The page; `concurrency` requests generate at once, `queue_size` more wait, and any
    beyond are turned away at once with Gradio's "Queue is full" answer (HTTP 503)."""
    def generate(prompt, max_new_tokens, temperature, top_k, top_p, seed):
        yield from stream_generation(engine, prompt, max_new_tokens, temperature, top_k, top_p, seed)

    loss_curve = engine.path.with_suffix(".loss.png")
    about = read_about(engine.metadata)  # the model's own words (export records them), or neutral ones
    with gr.Blocks(title=about.title) as demo:
        # HTML with the model's words escaped: they are shown as written, never as markup.
        gr.HTML(f"<h1>{html.escape(about.title)}</h1><p>{html.escape(about.description)}</p>"
                f"<p>It runs on onnxruntime ({engine.provider}). {static_site_note()}</p>", elem_id="about")
        with gr.Row():
            with gr.Column(scale=2):
                prompt = gr.Textbox(label="Prompt", value=about.prompt, lines=3, max_length=MAX_PROMPT_CHARS)
                with gr.Row():
                    generate_btn = gr.Button("Generate", variant="primary")
                    stop_btn = gr.Button("Stop")
                if about.examples:
                    gr.Examples([[e] for e in about.examples], inputs=prompt, cache_examples=False)
            with gr.Column(scale=1):
                max_new_tokens = values_as_sent(gr.Slider(1, MAX_NEW_TOKENS, value=300, step=1, label="Characters to generate"))
                temperature = values_as_sent(gr.Slider(0, 2, value=0.8, step=0.05, label="Temperature (0 = greedy)"))
                top_k = values_as_sent(gr.Slider(0, len(engine.vocab), value=0, step=1, label="Top-k (0 = off)"))
                top_p = values_as_sent(gr.Slider(0.05, 1, value=1.0, step=0.01, label="Top-p (1 = off)"))
                seed = values_as_sent(gr.Number(value=-1, precision=None, label="Seed (-1 = random)"))
        gr.HTML(legend())
        colored = gr.HTML(elem_id="colored", label="Generated text")
        stats = gr.Markdown(elem_id="stats", label="Stats")
        output = gr.Textbox(label="Plain text", lines=6, interactive=False, elem_id="output")
        with gr.Accordion("About the model", open=False):
            gr.Markdown(model_panel(engine))
            if loss_curve.is_file():
                gr.Image(str(loss_curve), label="Loss curve", show_label=True, interactive=False)
        event = generate_btn.click(generate, [prompt, max_new_tokens, temperature, top_k, top_p, seed],
                                   [output, colored, stats], api_name="generate")
        stop_btn.click(None, None, None, cancels=[event], api_visibility="private")
    demo.queue(default_concurrency_limit=concurrency, max_size=queue_size)
    return demo


def static_site_note() -> str:
    """A link to the static page (the model in the visitor's browser) when it has been built."""
    if (STATIC_SITE / "index.html").is_file():
        return f'The same model also runs <a href="{html.escape(STATIC_URL)}index.html">in your browser</a>, with no server.'
    return "The same model also runs in your browser with onnxruntime-web: see <code>webapp/web</code> in the README."


class RequestSizeLimit:
    """ASGI middleware: a request body over max_bytes is answered 413 with one sentence, before
    it is read into memory (declared by Content-Length, or counted as it streams in)."""

    def __init__(self, app, max_bytes: int = MAX_REQUEST_BYTES):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length", b"0")
        if not declared.isdigit() or int(declared) > self.max_bytes:
            return await self.refuse(receive, send)
        received = 0

        async def counted():
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.max_bytes:
                raise RequestTooLarge
            return message

        async def unless_too_large(message):
            if received <= self.max_bytes:  # past the limit, the app's own answer (a 400: body unreadable) is dropped
                await send(message)

        try:
            await self.app(scope, counted, unless_too_large)
        except RequestTooLarge:
            pass
        if received > self.max_bytes:
            await self.refuse(receive, send)

    async def refuse(self, receive, send):
        # Read what the client is still sending and drop it (memory stays flat), so that it gets
        # the answer instead of a broken connection; a client sending without end is cut off.
        dropped = 0
        while dropped < DRAIN_BYTES:
            message = await receive()
            dropped += len(message.get("body", b""))
            if message["type"] != "http.request" or not message.get("more_body"):
                break
        body = json.dumps({"detail": f"The request is larger than {self.max_bytes / 2**20:g} MB; a prompt may have at most "
                                     f"{MAX_PROMPT_CHARS:,} characters."}).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})


class RequestTooLarge(Exception):
    pass


def launch(demo: gr.Blocks, engine: Engine, host: str | None = None, port: int | None = None, share: bool = False, **kwargs):
    """Serve: 127.0.0.1 unless a host is given (or GRADIO_SERVER_NAME is set, as on Spaces).
    The only files served are the model's loss curve and the built static page: not the rest
    of the model's folder, which may hold anything (SECURITY.md)."""
    loss_curve = engine.path.with_suffix(".loss.png")
    allowed = [str(loss_curve)] if loss_curve.is_file() else []
    if (STATIC_SITE / "index.html").is_file():
        allowed.append(str(STATIC_SITE))
    from starlette.middleware import Middleware

    if not LOG.handlers:  # refusals, one line each, beside Gradio's own output
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s chargpt: %(message)s"))
        LOG.addHandler(handler)
        LOG.setLevel(logging.INFO)
        LOG.propagate = False

    return demo.launch(server_name=host, server_port=port, share=share, allowed_paths=allowed, show_error=True,
                       max_file_size=MAX_REQUEST_BYTES, app_kwargs={"middleware": [Middleware(RequestSizeLimit)]},
                       state_session_capacity=SESSION_CAPACITY, **kwargs)


@functools.cache
def default_demo() -> gr.Blocks:
    return build_demo(Engine(SHIPPED_MODEL))


def __getattr__(name: str):
    if name == "demo":  # built on first use, not at import
        return default_demo()
    raise AttributeError(name)


if __name__ == "__main__":
    from webapp.cli import main

    sys.exit(main())
