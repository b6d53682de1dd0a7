"""The Gradio page (its layout) and its API, built around one Engine: `/generate` (streaming) and
`/inspect` (the next character's distribution, and where each head looked); the page also
rewrites its text from a chosen alternative (a private event; webapp/server/streaming.py), and
shows /inspect's answer for the text before a character chosen to look at (another).

Run it with `python -m webapp`, or as a Space does: `python webapp/app.py` from the repo root.
"""

from __future__ import annotations

import functools
import html
import sys
import threading
from pathlib import Path

import gradio as gr

from webapp.inference.batching import CONCURRENCY, QUEUE_SIZE, Batcher
from webapp.inference.engine import MAX_PROMPT_CHARS, Engine
from webapp.inference.onnx_model import SHIPPED_MODEL, averaged_phrase
from webapp.inference.sampling import MAX_NEW_TOKENS
from webapp.server.about import read_about
from webapp.server.api_input import check_choices, check_inspect, check_request, check_undo, refuse, values_as_sent
from webapp.server.coloured import TEXT_STYLE, legend
from webapp.server.launch import STATIC_URL, static_site_built
from webapp.server.model_process import ModelProcess, ModelProcessError
from webapp.server.next_character import NextCharacter
from webapp.server.streaming import REQUEST_FIELDS, stream_generation

# The views' drawing code, which the static page shares (docs/views.md): loaded inline, before
# the generated text's own script (INSPECTOR) runs.
VIEWS_JS = Path(__file__).resolve().parents[1] / "web" / "views.js"
INSPECTOR = (
    "globalThis.chargptViews.inspectServerText(element, (data) => trigger('branch', data), "
    "(data) => trigger('look', data));"
)
# The attention view's clicks and keys; its HTML comes from /inspect's answer, drawn by views.js.
ATTENTION = (
    "(function attach() { const views = globalThis.chargptViews; "
    "if (views) views.attachAttention(element); else setTimeout(attach, 50); })();"
)
INSPECT_CONCURRENCY = 4  # /inspect's forwards at once, in the server's own process


class StopPresses:
    """The page's Stop button, by visitor session. Gradio's own cancel (`cancels=`) races a
    generation in flight: pressed just after Generate it can be lost, and pressed mid-stream it
    sometimes left "Error" on the three outputs and the plain text empty (seen in Chromium).
    Instead, Generate's click gives the session a fresh flag, Stop sets it, and the generation
    checks it at every character and ends as a finished one does, with what it wrote so far;
    a request still in the queue ends as soon as it starts. A Stop with nothing running is
    forgotten at the next Generate. A generation's end removes its session's flag; sessions
    whose request never ran (a full queue) are forgotten oldest first beyond MAX_SESSIONS (no
    `demo.unload` hook: it keeps a heartbeat connection open on every page)."""

    MAX_SESSIONS = 4096

    def __init__(self):
        self._lock = threading.Lock()
        self._flags: dict[str, threading.Event] = {}

    # The page's events (Gradio passes the visitor's request to a parameter annotated gr.Request).
    def generate_pressed(self, request: gr.Request) -> None:
        """A fresh flag, unless the session's is still unset: then a generation may be running
        (Gradio ignores Generate pressed again meanwhile), and Stop must still reach it."""
        if request.session_hash:
            with self._lock:
                flag = self._flags.pop(request.session_hash, None)  # re-inserted last: the newest
                self._flags[request.session_hash] = (
                    flag if flag is not None and not flag.is_set() else threading.Event()
                )
                while len(self._flags) > self.MAX_SESSIONS:
                    del self._flags[next(iter(self._flags))]

    def stop_pressed(self, request: gr.Request) -> None:
        with self._lock:
            flag = self._flags.get(request.session_hash or "")
        if flag is not None:
            flag.set()

    def flag(self, session: str | None) -> threading.Event:
        """The flag a generation for `session` checks (a fresh one for API callers, who stop
        by cancelling their job)."""
        if not session:
            return threading.Event()
        with self._lock:
            return self._flags.setdefault(session, threading.Event())

    def finished(self, session: str | None, flag: threading.Event) -> None:
        with self._lock:
            if session and self._flags.get(session) is flag:
                del self._flags[session]

    def __len__(self) -> int:
        return len(self._flags)


def model_panel(engine: Engine) -> str:
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


def serving_batcher(engine: Engine) -> ModelProcess | Batcher:
    """The server's model loop: in a process of its own (webapp/server/model_process.py says why), or in
    this one when that process cannot start."""
    try:
        return ModelProcess.for_engine(engine)
    except ModelProcessError as e:
        print(f"note: {e} Decoding in the server's own process instead.", file=sys.stderr)
        return Batcher(engine)


def build_demo(engine: Engine, concurrency: int = CONCURRENCY, queue_size: int = QUEUE_SIZE) -> gr.Blocks:
    """The page; `concurrency` requests decode at once (batched), `queue_size` more wait, and any
    beyond are turned away at once with Gradio's "Queue is full" answer (HTTP 503)."""
    batcher = serving_batcher(engine)
    stops = StopPresses()
    next_character = NextCharacter(engine)

    def generate(prompt, max_new_tokens, temperature, top_k, top_p, seed, min_p, alternatives, request: gr.Request):
        prompt, params = check_request(prompt, max_new_tokens, temperature, top_k, top_p, seed, min_p, alternatives)
        yield from stream_stoppable(prompt, params, request)

    def branch(event: gr.EventData, request: gr.Request):
        """The page's text rewritten from a chosen alternative, or back to an earlier one (Undo):
        the request it sends is the one its text carries, with other choices."""
        data = getattr(event, "_data", None)
        asked = data.get("request") if isinstance(data, dict) else None
        if not isinstance(asked, dict):
            raise refuse("A choice must come with the request that wrote the text.")
        prompt, params = check_request(*(asked.get(field) for field in REQUEST_FIELDS), alternatives=True)
        stops.generate_pressed(request)
        yield from stream_stoppable(
            prompt, params, request, check_choices(asked.get("choices")), check_undo(asked.get("undo"))
        )

    def stream_stoppable(prompt, params, request: gr.Request, choices=None, undo=None):
        flag = stops.flag(request.session_hash)
        try:
            yield from stream_generation(engine, batcher.decode, prompt, params, flag, choices, undo)
        finally:
            stops.finished(request.session_hash, flag)

    def look(event: gr.EventData) -> str:
        """The text before a character the visitor chose to look at: the chart and the attention
        view then show /inspect's answer for it."""
        data = getattr(event, "_data", None)
        text = data.get("text") if isinstance(data, dict) else None
        if not isinstance(text, str):
            raise refuse("A character to look at must come with the text before it.")
        return text

    def inspect(text, temperature, top_k, top_p, min_p) -> dict:
        """The next character's distribution after `text` (webapp/server/next_character.py)."""
        return next_character(*check_inspect(text, temperature, top_k, top_p, min_p))

    loss_curve = engine.path.with_suffix(".loss.png")
    about = read_about(engine.metadata)  # the model's own words (export records them), or neutral ones
    with gr.Blocks(title=about.title) as demo:
        # HTML with the model's words escaped: they are shown as written, never as markup.
        gr.HTML(
            f"<h1>{html.escape(about.title)}</h1><p>{html.escape(about.description)}</p>"
            f"<p>It runs on onnxruntime ({engine.provider}). {static_site_note()}</p>",
            elem_id="about",
        )
        with gr.Row():
            with gr.Column(scale=2):
                prompt = gr.Textbox(label="Prompt", value=about.prompt, lines=3, max_length=MAX_PROMPT_CHARS)
                with gr.Row():
                    generate_btn = gr.Button("Generate", variant="primary")
                    stop_btn = gr.Button("Stop")
                if about.examples:
                    gr.Examples([[e] for e in about.examples], inputs=prompt, cache_examples=False)
            with gr.Column(scale=1):
                max_new_tokens = values_as_sent(
                    gr.Slider(1, MAX_NEW_TOKENS, value=300, step=1, label="Characters to generate")
                )
                temperature = values_as_sent(gr.Slider(0, 2, value=0.8, step=0.05, label="Temperature (0 = greedy)"))
                top_k = values_as_sent(gr.Slider(0, len(engine.vocab), value=0, step=1, label="Top-k (0 = off)"))
                top_p = values_as_sent(gr.Slider(0.05, 1, value=1.0, step=0.01, label="Top-p (1 = off)"))
                min_p = values_as_sent(gr.Slider(0, 1, value=0.0, step=0.01, label="Min-p (0 = off)"))
                seed = values_as_sent(gr.Number(value=-1, precision=None, label="Seed (-1 = random)"))
                # /generate's last input: the page asks for alternatives (the js of its click), API callers
                # only when they say so.
                alternatives = values_as_sent(gr.Checkbox(value=False, visible=False, label="alternatives"))
        with gr.Row():
            with gr.Column(scale=2):
                gr.HTML(legend())
                colored = gr.HTML(
                    elem_id="colored",
                    label="Generated text",
                    html_template=f'<div style="{TEXT_STYLE}">${{value}}</div>',
                    head=f"<script>{VIEWS_JS.read_text(encoding='utf-8')}</script>",
                    js_on_load=INSPECTOR,
                )
                stats = gr.Markdown(elem_id="stats", label="Stats")
            with gr.Column(scale=1):
                chart = gr.HTML(elem_id="next-char", label="The next character")
                with gr.Accordion("The next character as /inspect returns it", open=False):
                    next_json = gr.JSON(elem_id="next-char-json", label="/inspect")
                # The text the chart is about: the prompt, the text so far, or the text before a character looked at.
                inspected = gr.Textbox(value=about.prompt, visible=False, label="text")
        attention = gr.HTML(elem_id="attention", label="Where each head looked", js_on_load=ATTENTION)
        output = gr.Textbox(label="Plain text", lines=6, interactive=False, elem_id="output")
        with gr.Accordion("About the model", open=False):
            gr.Markdown(model_panel(engine))
            if loss_curve.is_file():
                gr.Image(str(loss_curve), label="Loss curve", show_label=True, interactive=False)
        # Generate's click first gives the session a fresh stop flag (not queued: at once), then
        # queues the generation; Stop sets the flag (StopPresses says why not `cancels=`).
        generation_inputs = [prompt, max_new_tokens, temperature, top_k, top_p, seed, min_p, alternatives]
        generate_btn.click(stops.generate_pressed, None, None, queue=False, api_visibility="private").then(
            generate,
            generation_inputs,
            [output, colored, stats],
            api_name="generate",
            concurrency_id="generate",
            js="(...values) => [...values.slice(0, 7), true]",
        ).then(None, output, inspected, js="(text) => text")
        colored.branch(
            branch, None, [output, colored, stats], api_visibility="private", concurrency_id="generate"
        ).then(None, output, inspected, js="(text) => text")
        colored.look(look, None, inspected, api_visibility="private", queue=False)
        stop_btn.click(stops.stop_pressed, None, None, queue=False, api_visibility="private")
        # The chart: one forward per text (kept for the next settings), drawn in the browser by views.js.
        prompt.change(None, prompt, inspected, js="(text) => text")
        gr.on(
            [demo.load, inspected.change, temperature.change, top_k.change, top_p.change, min_p.change],
            inspect,
            [inspected, temperature, top_k, top_p, min_p],
            next_json,
            api_name="inspect",
            trigger_mode="always_last",
            concurrency_limit=INSPECT_CONCURRENCY,
            show_progress="hidden",
        )
        next_json.change(
            None,
            next_json,
            [chart, attention],
            js="(answer) => [globalThis.chargptViews.chartHtml(answer), globalThis.chargptViews.attentionHtml(answer)]",
        )
    demo.queue(default_concurrency_limit=concurrency, max_size=queue_size)
    return demo


def static_site_note() -> str:
    """A link to the static page (the model in the visitor's browser) when it has been built."""
    if static_site_built():
        link = f'<a href="{html.escape(STATIC_URL)}index.html">in your browser</a>'
        return f"The same model also runs {link}, with no server."
    return "The same model also runs in your browser with onnxruntime-web: see <code>docs/serving.md</code>."


@functools.cache
def default_demo() -> gr.Blocks:
    return build_demo(Engine.for_server(SHIPPED_MODEL))
