"""The Gradio page and its API (`/generate`), built around one Engine.

Run it with `python -m webapp`, or as a Space does: `python webapp/app.py` from the repo root.
`demo` is available as a module attribute (built on first access, for `gradio webapp/app.py`).
"""

from __future__ import annotations

import functools
import html
import logging
import sys
import time
from pathlib import Path

if __name__ == "__main__" and __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `python webapp/app.py`, as Spaces run it

import gradio as gr

from webapp.about import read_about
from webapp.engine import MAX_NEW_TOKENS, MAX_PROMPT_CHARS, Engine, encode_prompt
from webapp.size_limit import MAX_REQUEST_BYTES, RequestSizeLimit
from webapp.onnx_model import SHIPPED_MODEL
from webapp.api_input import LOG, check_request, values_as_sent

STATIC_SITE = Path(__file__).resolve().parent / "web" / "dist"  # built by `make web`
STATIC_URL = f"/gradio_api/file={STATIC_SITE}/"
STREAM_EVERY_S = 0.05  # how often the page is updated while characters arrive
CONCURRENCY, QUEUE_SIZE = 2, 32  # requests generating at once (2 cores), and waiting
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
