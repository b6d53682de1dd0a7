"""Other programs run a model folder: transformers.js (in Node), onnxruntime-genai (Python) and
optimum with transformers' generate() (in an environment of its own, requirements-optimum.txt), each
on the shipped folder and on a folder exported here from a small model of French text (learned
positions, QK-norm). Their tokenizers give exactly the model's ids, and their greedy 300
characters (900 for optimum; more than twice the window, with nothing but their own plain loop)
are exactly the web app's engine's text.
Two other ONNX runtimes, tract (Sonos, Rust) and OpenVINO (Intel), run the same plain loop on
both folders: logits within 1e-4 of onnxruntime's, and the same text.

The README's snippets are export/folder.py's, verbatim (a test checks that), and these tests run them."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from conftest import IN_CI, REPO, SCREENSHOTS, SHAKESPEARE, chromium_or_skip
from helpers import static_server

from benchmarks.page import CHROMIUM_ARGS
from export.folder import ONNXRUNTIME_GENAI, OPTIMUM, TRANSFORMERS_JS, TRANSFORMERS_JS_PAGE, with_model
from webapp.inference.engine import Engine, encode_prompt
from webapp.inference.onnx_model import SHIPPED_MODEL
from webapp.inference.sampling import SamplingParams

WEB = REPO / "webapp" / "web"
NEW_CHARS = 300
OPTIMUM_CHARS = 900
OPTIMUM_PYTHON = REPO / ".venv-optimum" / "bin" / "python"  # make .venv-optimum/.installed

# transformers.js's tokenizer on a text: its ids, and its decoding of them.
TRANSFORMERS_JS_TOKENIZER = """\
import { AutoTokenizer, env } from "@huggingface/transformers";
import { readFileSync } from "node:fs";

env.localModelPath = ".";
env.allowRemoteModels = false;
const tokenizer = await AutoTokenizer.from_pretrained("models/chargpt");
const ids = tokenizer.encode(readFileSync(0, "utf8"), { add_special_tokens: false });
console.log(JSON.stringify({ ids, text: tokenizer.decode(ids) }));
"""


@pytest.fixture(scope="module")
def node() -> str:
    import shutil

    node = shutil.which("node")
    if node is None or not (WEB / "node_modules" / "@huggingface" / "transformers").is_dir():
        if IN_CI:
            pytest.fail("CI must have node and webapp/web/node_modules (npm ci --ignore-scripts; see .ci/run)")
        pytest.skip("no node or no transformers.js: cd webapp/web && npm ci --ignore-scripts")
    return node


def shakespeare_tail() -> str:
    return SHAKESPEARE.read_text(encoding="utf-8")[-3000:]


def folder_cases(french_folder) -> dict[str, tuple]:
    """name -> (model folder, a prompt it can spell, a text to tokenize): the shipped Tiny
    Shakespeare model (rotary, a sliding window) and a small French one (learned positions), each
    with a prompt longer than its window."""
    shipped = shakespeare_tail()
    folder, data = french_folder
    french = data.read_text(encoding="utf-8")[-3000:]
    return {"shipped": (SHIPPED_MODEL, shipped[:200], shipped), "french": (folder, french[:60], french)}


@pytest.fixture(scope="module", params=["shipped", "french"])
def folder_and_prompt(request, french_folder):
    return folder_cases(french_folder)[request.param]


def expected_text(folder, prompt: str, chars: int = NEW_CHARS) -> str:
    engine = Engine(folder)
    assert encode_prompt(prompt, engine.vocab).ids == [engine.vocab.index(c) for c in prompt]  # no stand-ins
    return engine.complete(prompt, SamplingParams(max_new_tokens=chars, temperature=0))[0]


def run_node(node: str, tmp_path, script: str, folder, stdin: str = "") -> str:
    """Run a JavaScript module with the folder at ./models/chargpt and webapp/web's packages."""
    (tmp_path / "node_modules").symlink_to(WEB / "node_modules")
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "chargpt").symlink_to(folder.resolve())
    (tmp_path / "run.mjs").write_text(script, encoding="utf-8")
    result = subprocess.run(
        [node, "run.mjs"], cwd=tmp_path, input=stdin, capture_output=True, text=True, encoding="utf-8", timeout=600
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_transformers_js_writes_the_engines_text(node, folder_and_prompt, tmp_path):
    folder, prompt, _ = folder_and_prompt
    out = run_node(node, tmp_path, with_model(TRANSFORMERS_JS, "models/chargpt", prompt), folder)
    assert out == prompt + expected_text(folder, prompt) + "\n"


def test_transformers_js_in_a_browser_page_writes_the_engines_text(node, tmp_path):
    """The snippet's page, served as it is beside the shipped folder, in Chromium (the French
    folder runs through the same library in Node, above). The page imports transformers.js (and
    it onnxruntime-web's WebAssembly) from the jsDelivr CDN: the test answers those requests from
    webapp/web/node_modules, the same packages, without a network."""
    from playwright.sync_api import sync_playwright

    folder, prompt = SHIPPED_MODEL, shakespeare_tail()[:200]
    chromium = chromium_or_skip()
    package = WEB / "node_modules" / "@huggingface" / "transformers"
    page_html = with_model(TRANSFORMERS_JS_PAGE, "models/chargpt", prompt)
    (tmp_path / "index.html").write_text(
        f"<!doctype html><meta charset=utf-8>{page_html}<body></body>", encoding="utf-8"
    )
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "chargpt").symlink_to(folder.resolve())

    def from_node_modules(route):
        path = route.request.url.split("cdn.jsdelivr.net/npm/", 1)[1]
        if path.startswith("@huggingface/transformers@"):
            file = package / "dist" / "transformers.min.js"  # the package's jsdelivr entry
        elif path.startswith("onnxruntime-web@"):
            file = package / "node_modules" / "onnxruntime-web" / path.split("/", 1)[1]
        else:
            return route.abort()
        kind = "application/wasm" if file.suffix == ".wasm" else "text/javascript"
        route.fulfill(path=str(file), headers={"Content-Type": kind, "Access-Control-Allow-Origin": "*"})

    with static_server(tmp_path) as url, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            errors = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.route("https://cdn.jsdelivr.net/**", from_node_modules)
            page.goto(url)
            page.wait_for_function("document.body.textContent.length > 0", timeout=180_000)
            text = page.evaluate("document.body.textContent")
            SCREENSHOTS.mkdir(exist_ok=True)
            page.screenshot(path=str(SCREENSHOTS / "transformers-js.png"), full_page=True)
        finally:
            browser.close()
    assert not errors
    assert text == prompt + expected_text(folder, prompt)


def test_transformers_js_tokenizer_gives_the_models_ids(node, folder_and_prompt, tmp_path):
    folder, _, text = folder_and_prompt
    out = json.loads(run_node(node, tmp_path, TRANSFORMERS_JS_TOKENIZER, folder, stdin=text))
    vocab = Engine(folder).vocab
    assert out["ids"] == [vocab.index(c) for c in text]
    assert out["text"] == text


def run_python(python: str, code: str, stdin: str | None = None) -> str:
    """What `python -c code` prints (in UTF-8), asserting that it succeeds."""
    env = {**os.environ, "PYTHONIOENCODING": "utf-8"}
    result = subprocess.run(
        [python, "-c", code], input=stdin, capture_output=True, text=True, encoding="utf-8", timeout=600, env=env
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_onnxruntime_genai_writes_the_engines_text(folder_and_prompt):
    folder, prompt, _ = folder_and_prompt
    printed = run_python(sys.executable, with_model(ONNXRUNTIME_GENAI, str(folder), prompt))
    assert printed == prompt + expected_text(folder, prompt) + "\n"


# Runs snippets (a JSON list on stdin) one after the other in one process, each as a script of its
# own, and prints what each printed (a JSON list): torch's and transformers' imports, most of a run, once.
RUN_EACH = """\
import contextlib, io, json, sys
printed = []
for snippet in json.load(sys.stdin):
    with contextlib.redirect_stdout(io.StringIO()) as out:
        exec(snippet, {"__name__": "__main__"})
    printed.append(out.getvalue())
print(json.dumps(printed))
"""


@pytest.fixture(scope="module")
def optimum_printed(french_folder) -> dict[str, str]:
    """What the README's optimum snippet prints for each folder, for 900 characters, run as a new
    user runs it (optimum-onnx from PyPI, in its own environment): folder -> its output."""
    if not OPTIMUM_PYTHON.is_file():
        if IN_CI:
            pytest.fail("CI must have .venv-optimum (make .venv-optimum/.installed; see .ci/run)")
        pytest.skip("no .venv-optimum with optimum: make .venv-optimum/.installed")
    cases = list(folder_cases(french_folder).values())
    snippets = [
        with_model(OPTIMUM, str(folder), prompt).replace("max_new_tokens=300", f"max_new_tokens={OPTIMUM_CHARS}")
        for folder, prompt, _ in cases
    ]
    printed = json.loads(run_python(str(OPTIMUM_PYTHON), RUN_EACH, json.dumps(snippets)))
    return {str(folder): text for (folder, _, _), text in zip(cases, printed)}


def test_optimum_writes_the_engines_text(optimum_printed, folder_and_prompt):
    """ORTModelForCausalLM's cache, fed back by transformers' generate(), holds the window the
    graph keeps: its greedy 900 characters are the engine's."""
    folder, prompt, _ = folder_and_prompt
    assert optimum_printed[str(folder)] == prompt + expected_text(folder, prompt, OPTIMUM_CHARS) + "\n"


def test_onnxruntime_genai_tokenizer_gives_the_models_ids(folder_and_prompt):
    import onnxruntime_genai as og

    folder, _, text = folder_and_prompt
    tokenizer = og.Tokenizer(og.Model(str(folder)))
    ids = [int(i) for i in tokenizer.encode(text)]
    vocab = Engine(folder).vocab
    assert ids == [vocab.index(c) for c in text]
    assert tokenizer.decode(ids) == text


def onnxruntime_step(model_file):
    import onnxruntime as ort

    session = ort.InferenceSession(str(model_file), providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    return lambda feeds: session.run(None, dict(zip(names, feeds)))


def tract_step(model_file):
    tract = pytest.importorskip("tract")
    runnable = tract.onnx().load(str(model_file)).into_model().into_runnable()
    return lambda feeds: [out.to_numpy() for out in runnable.run(feeds)]


OPENVINO_FLOAT32 = {
    "INFERENCE_PRECISION_HINT": "f32",
    "DYNAMIC_QUANTIZATION_GROUP_SIZE": "0",
}  # as docs/model-folder.md says


def openvino_step(model_file):
    ov = pytest.importorskip("openvino")
    # The graph's own precision: on a CPU with bfloat16 and VNNI instructions OpenVINO by default
    # computes in bfloat16 and rounds the activations to int8 for int8 weights, and its text then
    # leaves the engine's (docs/model-folder.md).
    compiled = ov.Core().compile_model(str(model_file), "CPU", OPENVINO_FLOAT32)
    request = compiled.create_infer_request()

    def step(feeds):
        results = request.infer(feeds)
        return [results[out] for out in compiled.outputs]

    return step


def greedy_plain_loop(step, prompt_ids: list[int], config: dict, new: int) -> tuple[list[int], list]:
    """A generation library's plain loop on the graph's inputs (input_ids, then every layer's
    past key and value): the prompt at once, then one id a step, each step's presents fed back
    as the next step's past. -> (the new ids, the logits of every step)."""
    import numpy as np

    head_dim = config["n_embd"] // config["n_head"]
    past = [np.zeros((1, config["n_head"], 0, head_dim), np.float32) for _ in range(2 * config["n_layer"])]
    ids, out, logits = np.array([prompt_ids], np.int64), [], []
    for _ in range(new):
        logits_now, *past = step([ids, *past])
        logits.append(logits_now[0, -1])
        out.append(int(logits_now[0, -1].argmax()))
        ids = np.array([[out[-1]]], np.int64)
    return out, logits


@pytest.mark.parametrize("runtime", [tract_step, openvino_step], ids=["tract", "openvino"])
def test_other_onnx_runtimes_write_the_engines_text(runtime, folder_and_prompt):
    """From a prompt shorter than the window: the cache then holds fewer positions than the
    window keeps, where the graph's slices must not start before 0 (tract does not clamp)."""
    import numpy as np

    folder, prompt, _ = folder_and_prompt
    prompt = prompt[:5]
    model_file = folder / "onnx" / "model.onnx"
    engine = Engine(folder)
    prompt_ids = encode_prompt(prompt, engine.vocab).ids
    config = engine.metadata["config"]
    ids, logits = greedy_plain_loop(runtime(model_file), prompt_ids, config, NEW_CHARS)
    reference_ids, reference = greedy_plain_loop(onnxruntime_step(model_file), prompt_ids, config, NEW_CHARS)
    assert ids == reference_ids
    assert max(float(np.abs(a - b)[: len(engine.vocab)].max()) for a, b in zip(logits, reference)) <= 1e-4
    assert "".join(engine.vocab[i] for i in ids) == expected_text(folder, prompt)


def test_the_readme_shows_these_snippets_verbatim():
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    for snippet in (TRANSFORMERS_JS, TRANSFORMERS_JS_PAGE, ONNXRUNTIME_GENAI, OPTIMUM):
        assert snippet in readme
    assert sum(1 for line in ONNXRUNTIME_GENAI.splitlines() if line.strip()) <= 11  # an import and 10 lines


def test_the_model_card_and_the_docs_give_openvino_the_settings_tested_here():
    for page in (SHIPPED_MODEL / "README.md", REPO / "docs" / "model-folder.md"):
        text = page.read_text(encoding="utf-8")
        assert all(f'"{key}": "{value}"' in text for key, value in OPENVINO_FLOAT32.items()), page
