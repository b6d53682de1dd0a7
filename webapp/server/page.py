"""The Gradio page (its layout) and its API (`/generate`, streaming), built around one Engine.

Run it with `python -m webapp`, or as a Space does: `python webapp/app.py` from the repo root.
"""

from __future__ import annotations

import contextlib
import functools
import html
import sys
import threading
import time

import gradio as gr

from webapp.inference.batching import CONCURRENCY, QUEUE_SIZE, Batcher
from webapp.inference.engine import MAX_PROMPT_CHARS, Engine, encode_prompt
from webapp.inference.onnx_model import SHIPPED_MODEL, averaged_phrase
from webapp.inference.sampling import MAX_NEW_TOKENS
from webapp.server.about import read_about
from webapp.server.api_input import check_request, values_as_sent
from webapp.server.coloured import TEXT_STYLE, ColouredText, legend
from webapp.server.launch import STATIC_URL, static_site_built
from webapp.server.model_process import ModelProcess, ModelProcessError

# The page is updated while characters arrive, at most every STREAM_EVERY_S, and only once
# UPDATE_CHARS new characters have come or STREAM_MAX_WAIT_S has passed. Each update costs the
# server the same whatever it carries: when a crowd shares the model, each visitor's characters
# come slower, and fewer, fuller updates leave the cores to the model.
STREAM_EVERY_S, UPDATE_CHARS, STREAM_MAX_WAIT_S = 0.05, 16, 0.5


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
                self._flags[request.session_hash] = flag if flag is not None and not flag.is_set() else threading.Event()
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


def stream_generation(engine: Engine, batcher: ModelProcess | Batcher, inputs: tuple, stop: threading.Event | None = None):
    """The /generate endpoint: yields (full text, coloured HTML, stats line) as characters
    arrive; its forward passes run in `batcher`'s batches. `inputs`: the API's inputs after the
    prompt, as sent (check_request). Once `stop` is set, it ends with the text so far (its batch
    row freed at once) and says so on the stats line."""
    prompt, params = check_request(*inputs)
    encoded = encode_prompt(prompt, engine.vocab)
    notices = [n for n in (engine.notice, encoded.notice()) if n]
    if len(encoded.ids) > engine.receptive_field:
        notices.append(f"the model reads the last {engine.receptive_field} characters of the prompt")
    text = prompt if prompt else encoded.text  # an empty prompt starts from a newline
    coloured = ColouredText(text)
    generated = shown = 0
    stopped = False
    start = last_yield = time.perf_counter()

    def stats() -> str:
        elapsed = time.perf_counter() - start
        rate = generated / elapsed if elapsed > 0 else 0.0
        line = (f"{generated} characters in {elapsed:.2f} s ({rate:,.0f} characters/s) · "
                f"{engine.provider} · seed {params.seed}")
        return line + " · stopped" * stopped + "".join(f" · {n}" for n in notices)

    with contextlib.closing(engine.generate(encoded, params, batcher.decode)) as steps:  # closed: the row is freed
        for step in steps:
            if stop is not None and stop.is_set():
                stopped = True
                break
            for ch, p in step.pieces[0]:
                text += ch
                coloured.add(ch, p)
                generated += 1
            now = time.perf_counter()
            waited = now - last_yield
            if waited >= STREAM_MAX_WAIT_S or (waited >= STREAM_EVERY_S and generated - shown >= UPDATE_CHARS):
                last_yield, shown = now, generated
                yield text, coloured.html(), stats()
    yield text, coloured.html(), stats()


def model_panel(engine: Engine) -> str:
    c, t = engine.metadata["config"], engine.metadata["training"]
    val = f"{t['val_loss']:.4f}" if t.get("val_loss") is not None else "not recorded"
    steps = t.get("averaged_steps")
    averaged = f"; {averaged_phrase(steps)}" if steps else ""
    rows = [
        ("file", f"`{engine.path.name}` ({engine.path.stat().st_size / 1e6:.2f} MB)"),
        ("parameters", f"{t['params']:,}"),
        ("validation loss", f"{val} nats/char (the whole validation split of its training text)"),
        ("shape", f"{c['n_layer']} layers, {c['n_head']} heads, width {c['n_embd']}, context {c['block_size']} characters"),
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

    def generate(prompt, max_new_tokens, temperature, top_k, top_p, seed, min_p, request: gr.Request):
        flag = stops.flag(request.session_hash)
        try:
            inputs = (prompt, max_new_tokens, temperature, top_k, top_p, seed, min_p)
            yield from stream_generation(engine, batcher, inputs, flag)
        finally:
            stops.finished(request.session_hash, flag)

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
                min_p = values_as_sent(gr.Slider(0, 1, value=0.0, step=0.01, label="Min-p (0 = off)"))
                seed = values_as_sent(gr.Number(value=-1, precision=None, label="Seed (-1 = random)"))
        gr.HTML(legend())
        colored = gr.HTML(elem_id="colored", label="Generated text", html_template=f'<div style="{TEXT_STYLE}">${{value}}</div>')
        stats = gr.Markdown(elem_id="stats", label="Stats")
        output = gr.Textbox(label="Plain text", lines=6, interactive=False, elem_id="output")
        with gr.Accordion("About the model", open=False):
            gr.Markdown(model_panel(engine))
            if loss_curve.is_file():
                gr.Image(str(loss_curve), label="Loss curve", show_label=True, interactive=False)
        # Generate's click first gives the session a fresh stop flag (not queued: at once), then
        # queues the generation; Stop sets the flag (StopPresses says why not `cancels=`).
        generate_btn.click(stops.generate_pressed, None, None, queue=False, api_visibility="private").then(
            generate, [prompt, max_new_tokens, temperature, top_k, top_p, seed, min_p], [output, colored, stats], api_name="generate")
        stop_btn.click(stops.stop_pressed, None, None, queue=False, api_visibility="private")
    demo.queue(default_concurrency_limit=concurrency, max_size=queue_size)
    return demo


def static_site_note() -> str:
    """A link to the static page (the model in the visitor's browser) when it has been built."""
    if static_site_built():
        return f'The same model also runs <a href="{html.escape(STATIC_URL)}index.html">in your browser</a>, with no server.'
    return "The same model also runs in your browser with onnxruntime-web: see <code>docs/serving.md</code>."


@functools.cache
def default_demo() -> gr.Blocks:
    return build_demo(Engine.for_server(SHIPPED_MODEL))
