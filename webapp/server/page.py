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
from dataclasses import dataclass
from pathlib import Path

import gradio as gr

from webapp.inference.batching import CONCURRENCY, QUEUE_SIZE, Batcher
from webapp.inference.engine import MAX_PROMPT_CHARS, Engine
from webapp.inference.onnx_model import SHIPPED_MODEL
from webapp.inference.sampling import MAX_NEW_TOKENS
from webapp.server.about import model_panel, read_about
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


def serving_batcher(engine: Engine) -> ModelProcess | Batcher:
    """The server's model loop: in a process of its own (webapp/server/model_process.py says why), or in
    this one when that process cannot start."""
    try:
        return ModelProcess.for_engine(engine)
    except ModelProcessError as e:
        print(f"note: {e} Decoding in the server's own process instead.", file=sys.stderr)
        return Batcher(engine)


class PageEvents:
    """What the page's events run, around one Engine: its API (`generate`, `inspect`) and its
    private events (`branch`, `look`). Gradio names the API's parameters after these signatures."""

    def __init__(self, engine: Engine):
        self.engine = engine
        self.batcher = serving_batcher(engine)
        self.stops = StopPresses()
        self.next_character = NextCharacter(engine)

    def generate(
        self, prompt, max_new_tokens, temperature, top_k, top_p, seed, min_p, alternatives, request: gr.Request
    ):
        prompt, params = check_request(prompt, max_new_tokens, temperature, top_k, top_p, seed, min_p, alternatives)
        yield from self.stream_stoppable(prompt, params, request)

    def branch(self, event: gr.EventData, request: gr.Request):
        """The page's text rewritten from a chosen alternative, or back to an earlier one (Undo):
        the request it sends is the one its text carries, with other choices."""
        data = getattr(event, "_data", None)
        asked = data.get("request") if isinstance(data, dict) else None
        if not isinstance(asked, dict):
            raise refuse("A choice must come with the request that wrote the text.")
        prompt, params = check_request(*(asked.get(field) for field in REQUEST_FIELDS), alternatives=True)
        self.stops.generate_pressed(request)
        choices, undo = check_choices(asked.get("choices")), check_undo(asked.get("undo"))
        yield from self.stream_stoppable(prompt, params, request, choices, undo)

    def stream_stoppable(self, prompt, params, request: gr.Request, choices=None, undo=None):
        flag = self.stops.flag(request.session_hash)
        try:
            yield from stream_generation(self.engine, self.batcher.decode, prompt, params, flag, choices, undo)
        finally:
            self.stops.finished(request.session_hash, flag)

    def look(self, event: gr.EventData) -> str:
        """The text before a character the visitor chose to look at: the chart and the attention
        view then show /inspect's answer for it."""
        data = getattr(event, "_data", None)
        text = data.get("text") if isinstance(data, dict) else None
        if not isinstance(text, str):
            raise refuse("A character to look at must come with the text before it.")
        return text

    def inspect(self, text, temperature, top_k, top_p, min_p) -> dict:
        """The next character's distribution after `text` (webapp/server/next_character.py)."""
        return self.next_character(*check_inspect(text, temperature, top_k, top_p, min_p))


@dataclass
class Settings:
    """The sampling settings' inputs, in the right-hand column."""

    max_new_tokens: gr.Slider
    temperature: gr.Slider
    top_k: gr.Slider
    top_p: gr.Slider
    min_p: gr.Slider
    seed: gr.Number
    alternatives: gr.Checkbox

    def generation_inputs(self, prompt: gr.Textbox) -> list:
        """/generate's inputs, in the order of its parameters."""
        return [
            prompt,
            self.max_new_tokens,
            self.temperature,
            self.top_k,
            self.top_p,
            self.seed,
            self.min_p,
            self.alternatives,
        ]

    def inspect_inputs(self, text: gr.Textbox) -> list:
        """/inspect's inputs, in the order of its parameters."""
        return [text, self.temperature, self.top_k, self.top_p, self.min_p]


@dataclass
class Views:
    """The outputs: the coloured text, its stats and plain copy, the next character's chart (with
    /inspect's answer and the text it is about) and the attention view."""

    colored: gr.HTML
    stats: gr.Markdown
    chart: gr.HTML
    next_json: gr.JSON
    inspected: gr.Textbox
    attention: gr.HTML
    output: gr.Textbox


def settings_column(vocab_size: int) -> Settings:
    return Settings(
        max_new_tokens=values_as_sent(gr.Slider(1, MAX_NEW_TOKENS, value=300, step=1, label="Characters to generate")),
        temperature=values_as_sent(gr.Slider(0, 2, value=0.8, step=0.05, label="Temperature (0 = greedy)")),
        top_k=values_as_sent(gr.Slider(0, vocab_size, value=0, step=1, label="Top-k (0 = off)")),
        top_p=values_as_sent(gr.Slider(0.05, 1, value=1.0, step=0.01, label="Top-p (1 = off)")),
        min_p=values_as_sent(gr.Slider(0, 1, value=0.0, step=0.01, label="Min-p (0 = off)")),
        seed=values_as_sent(gr.Number(value=-1, precision=None, label="Seed (-1 = random)")),
        # /generate's last input: the page asks for alternatives (the js of its click), API callers
        # only when they say so.
        alternatives=values_as_sent(gr.Checkbox(value=False, visible=False, label="alternatives")),
    )


def text_views(prompt_text: str) -> Views:
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
            inspected = gr.Textbox(value=prompt_text, visible=False, label="text")
    attention = gr.HTML(elem_id="attention", label="Where each head looked", js_on_load=ATTENTION)
    output = gr.Textbox(label="Plain text", lines=6, interactive=False, elem_id="output")
    return Views(colored, stats, chart, next_json, inspected, attention, output)


def about_the_model(engine: Engine) -> None:
    loss_curve = engine.path.with_suffix(".loss.png")
    with gr.Accordion("About the model", open=False):
        gr.Markdown(model_panel(engine))
        if loss_curve.is_file():
            gr.Image(str(loss_curve), label="Loss curve", show_label=True, interactive=False)


def wire_generation(events: PageEvents, prompt, settings: Settings, views: Views, generate_btn, stop_btn) -> None:
    """Generate's click first gives the session a fresh stop flag (not queued: at once), then
    queues the generation; Stop sets the flag (StopPresses says why not `cancels=`). A branch
    (an alternative chosen in the text) streams into the same outputs."""
    texts = [views.output, views.colored, views.stats]
    generate_btn.click(events.stops.generate_pressed, None, None, queue=False, api_visibility="private").then(
        events.generate,
        settings.generation_inputs(prompt),
        texts,
        api_name="generate",
        concurrency_id="generate",
        js="(...values) => [...values.slice(0, 7), true]",
    ).then(None, views.output, views.inspected, js="(text) => text")
    views.colored.branch(events.branch, None, texts, api_visibility="private", concurrency_id="generate").then(
        None, views.output, views.inspected, js="(text) => text"
    )
    views.colored.look(events.look, None, views.inspected, api_visibility="private", queue=False)
    stop_btn.click(events.stops.stop_pressed, None, None, queue=False, api_visibility="private")


def wire_inspection(demo: gr.Blocks, events: PageEvents, prompt, settings: Settings, views: Views) -> None:
    """The chart and the attention view: one forward per text (kept for the next settings),
    drawn in the browser by views.js."""
    prompt.change(None, prompt, views.inspected, js="(text) => text")
    gr.on(
        [
            demo.load,
            views.inspected.change,
            *(s.change for s in (settings.temperature, settings.top_k, settings.top_p, settings.min_p)),
        ],
        events.inspect,
        settings.inspect_inputs(views.inspected),
        views.next_json,
        api_name="inspect",
        trigger_mode="always_last",
        concurrency_limit=INSPECT_CONCURRENCY,
        show_progress="hidden",
    )
    views.next_json.change(
        None,
        views.next_json,
        [views.chart, views.attention],
        js="(answer) => [globalThis.chargptViews.chartHtml(answer), globalThis.chargptViews.attentionHtml(answer)]",
    )


def build_demo(engine: Engine, concurrency: int = CONCURRENCY, queue_size: int = QUEUE_SIZE) -> gr.Blocks:
    """The page; `concurrency` requests decode at once (batched), `queue_size` more wait, and any
    beyond are turned away at once with Gradio's "Queue is full" answer (HTTP 503)."""
    events = PageEvents(engine)
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
                settings = settings_column(len(engine.vocab))
        views = text_views(about.prompt)
        about_the_model(engine)
        wire_generation(events, prompt, settings, views, generate_btn, stop_btn)
        wire_inspection(demo, events, prompt, settings, views)
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
