"""The model in JavaScript: onnxruntime-node against Python's onnxruntime, the JS sampler against
the Python one, and the static page (onnxruntime-web) in a headless Chromium."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from dataclasses import dataclass

import numpy as np
import pytest
from conftest import IN_CI, REPO, SCREENSHOTS, chromium_or_skip
from helpers import node_json, spoil_ring, static_server

from benchmarks.page import CHROMIUM_ARGS
from webapp.inference.engine import Engine, encode_prompt
from webapp.inference.onnx_model import SHIPPED_MODEL
from webapp.inference.sampling import SamplingParams
from webapp.server.about import read_about

WEB = REPO / "webapp" / "web"


@pytest.fixture(scope="module")
def node() -> str:
    node = shutil.which("node")
    if node is None or not (WEB / "node_modules" / "onnxruntime-node").is_dir():
        if IN_CI:
            pytest.fail("CI must have node and webapp/web/node_modules (npm ci --ignore-scripts; see .ci/run)")
        pytest.skip("no node or no webapp/web/node_modules: cd webapp/web && npm ci --ignore-scripts")
    return node


def node_check(node: str, *args: str, expect: int = 0) -> subprocess.CompletedProcess:
    result = subprocess.run([node, "node_check.mjs", *args], cwd=WEB, capture_output=True, text=True, timeout=300)
    assert result.returncode == expect, result.stderr
    return result


@pytest.fixture(scope="module", params=["shipped", "tiny"])
def model_path(request, exported):
    return SHIPPED_MODEL if request.param == "shipped" else exported[1]


def test_node_logits_and_greedy_text_equal_python_onnxruntime(node, model_path):
    prompt = "ROMEO:\nBut soft, what light through yonder window breaks?"
    out = json.loads(node_check(node, str(model_path), "--prompt", prompt, "--chars", "200", "--json").stdout)
    engine = Engine(model_path)
    ids = encode_prompt(prompt, engine.vocab).ids[-engine.receptive_field :]
    assert out["prompt_ids"] == ids
    want, _ = engine.forward(np.array([ids]))
    got = np.array(out["logits"], dtype=np.float32).reshape(out["dims"])[
        ..., : len(engine.vocab)
    ]  # less the end-of-text id
    assert got.shape == want.shape
    assert np.abs(got - want).max() <= 1e-4
    assert out["text"] == engine.complete(prompt, SamplingParams(max_new_tokens=200, temperature=0))[0]


@pytest.mark.parametrize(
    "temperature, top_k, top_p, min_p, seed",
    [
        (0.8, 0, 1.0, 0, 0),
        (1.0, 20, 0.9, 0, 12345),
        (0.5, 5, 1.0, 0.02, 2**63 - 1),
        (1.3, 0, 0.5, 0, 7),
        (1.5, 0, 1.0, 0.1, 3),
        (1.0, 30, 0.95, 0.05, 9),
    ],
)
def test_js_sampler_writes_the_python_text(node, model_path, temperature, top_k, top_p, min_p, seed):
    args = [
        "--prompt",
        "JULIET:",
        "--chars",
        "150",
        "--temperature",
        str(temperature),
        "--top-k",
        str(top_k),
        "--top-p",
        str(top_p),
        "--min-p",
        str(min_p),
        "--seed",
        str(seed),
        "--json",
    ]
    out = json.loads(node_check(node, str(model_path), *args).stdout)
    settings = SamplingParams(
        max_new_tokens=150, temperature=temperature, top_k=top_k, top_p=top_p, min_p=min_p, seed=seed
    )
    assert out["text"] == Engine(model_path).complete("JULIET:", settings)[0]


def test_node_check_refuses_bad_input(node, tmp_path, small_text):
    result = node_check(node, str(tmp_path / "missing.onnx"), expect=2)
    assert "cannot read the model's metadata" in result.stderr
    assert "missing/onnx/model.json" in node_check(node, str(tmp_path / "missing"), expect=2).stderr  # a folder
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not onnx")
    (tmp_path / "bad.json").write_text((SHIPPED_MODEL / "onnx" / "model.json").read_text())
    assert "not a readable chargpt model" in node_check(node, str(bad), expect=2).stderr
    old = json.loads((SHIPPED_MODEL / "onnx" / "model.json").read_text())
    (tmp_path / "old.onnx").write_bytes((SHIPPED_MODEL / "onnx" / "model.onnx").read_bytes())
    (tmp_path / "old.json").write_text(json.dumps({**old, "chargpt.format": "1"}))
    assert "export its checkpoint again" in node_check(node, str(tmp_path / "old.onnx"), expect=2).stderr
    assert "temperature must be between 0" in node_check(node, "--temperature", "11", expect=2).stderr
    assert "unknown option --frobnicate" in node_check(node, "--frobnicate", expect=2).stderr
    assert "--seed needs a whole number" in node_check(node, "--seed", "-3", expect=2).stderr


def set_field(data: dict, key: str, value) -> None:
    *parents, last = key.split(".")
    for part in parents:
        data = data[part]
    data[last] = value


@pytest.mark.parametrize(
    "file, key, value",
    [
        ("config.json", "n_head", 8),
        ("config.json", "vocab_size", "66"),
        ("generation_config.json", "eos_token_id", 0),
        ("genai_config.json", "model.decoder.head_size", 16),
        ("genai_config.json", "model.decoder.num_hidden_layers", True),
        ("genai_config.json", "model.pad_token_id", None),
        ("config.json", None, None),
    ],
)
def test_a_folder_whose_configuration_disagrees_with_the_graph_is_refused_in_python_and_javascript(
    node, tmp_path, file, key, value
):
    """The same sentence from both, naming the file and the field (None: a file that is not JSON)."""
    from webapp.inference.model_folder import ModelLoadError

    folder = tmp_path / "model"
    shutil.copytree(SHIPPED_MODEL, folder)
    if key is None:
        (folder / file).write_text("{not json", encoding="utf-8")
    else:
        data = json.loads((folder / file).read_text(encoding="utf-8"))
        set_field(data, key, value)
        (folder / file).write_text(json.dumps(data), encoding="utf-8")
    with pytest.raises(ModelLoadError) as refused:
        Engine(folder)
    sentence = str(refused.value)
    assert sentence.startswith(f"{folder / file} ")
    assert (
        key is None and "is not readable JSON" in sentence
    ) or f"disagrees with the model's graph: {key} is {json.dumps(value)} there" in sentence
    assert node_check(node, str(folder), "--chars", "5", expect=2).stderr == f"node_check: error: {sentence}\n"


@pytest.fixture(scope="module")
def site(node, tmp_path_factory):
    out = tmp_path_factory.mktemp("site") / "dist"
    result = subprocess.run(
        [node, "build.mjs", "--out", str(out)], cwd=WEB, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    readme = (out / "README.md").read_text(encoding="utf-8")
    assert "sdk: static" in readme
    assert 'title: "chargpt: Shakespeare, one character at a time in the browser"' in readme
    return out


@dataclass
class LoadedPage:
    """The static page open in Chromium (one browser for this file's page tests), what it
    showed when it had loaded, and the script errors it has raised since."""

    page: object
    on_load: dict
    errors: list[str]


def page_on_load(page) -> dict:
    return {
        "title": page.title(),
        "heading": page.locator("#title").inner_text(),
        "prompt": page.input_value("#prompt"),
        "description": page.locator("#description").inner_text(),
        "examples": [b.get_attribute("title") for b in page.locator("#examples button").all()],
        "model info": page.locator("#model-info").inner_text(),
    }


@pytest.fixture(scope="class")
def static_page(site):
    from playwright.sync_api import sync_playwright

    chromium = chromium_or_skip()
    with static_server(site) as url, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1100, "height": 900})
            errors = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(url)
            page.get_by_role("button", name="Generate").wait_for(state="visible")
            page.wait_for_function("!document.getElementById('generate').disabled", timeout=60_000)
            yield LoadedPage(page, page_on_load(page), errors)
        finally:
            browser.close()


def generate_on_the_page(page, prompt: str, length: int, temperature: float, top_k=0, min_p=0.0, seed=-1) -> None:
    """Fill in the page's settings (top-p off) and press Generate."""
    fields = {"#prompt": prompt, "#length": length, "#temperature": temperature, "#top-k": top_k, "#top-p": 1}
    for selector, value in {**fields, "#min-p": min_p, "#seed": seed}.items():
        page.fill(selector, str(value))
    page.evaluate("window.chargptLastRun = null")  # set again when this generation ends
    page.click("#generate")


def wait_for_run(page, chars: int) -> None:
    page.wait_for_function(f"window.chargptLastRun && window.chargptLastRun.chars === {chars}", timeout=120_000)


class TestTheStaticPageInChromium:
    """One page in one browser for these tests (a class: its event loop ends with them)."""

    def test_the_static_page_shows_the_models_own_words_and_its_files(self, static_page):
        about = read_about(Engine(SHIPPED_MODEL).metadata)
        shown = dict(static_page.on_load)
        info = shown.pop("model info")
        assert shown == {
            "title": f"{about.title} in your browser",
            "heading": about.title,
            "prompt": "ROMEO:",
            "description": about.description,
            "examples": about.examples,
        }
        # The page steps with the ring file (webapp/inference/ring.py) and drafts from the table
        # (webapp/inference/drafting.py), as the engine does.
        assert f"with its ring file and draft table ({len(Engine(SHIPPED_MODEL).draft_table.next):,} contexts)" in info
        static_page.page.locator("#examples button").nth(1).click()
        assert static_page.page.input_value("#prompt") == about.examples[1] == "JULIET:\nO Romeo, Romeo!"
        assert not static_page.errors

    def test_the_static_page_generates_the_python_text_in_chromium(self, static_page):
        """The sampled text is the engine's, each character coloured by its probability."""
        page = static_page.page
        generate_on_the_page(page, "ROMEO:", 300, 0.8, top_k=40, min_p=0.05, seed=42)
        wait_for_run(page, 300)
        text, status = page.locator("#output").inner_text(), page.locator("#status").inner_text()
        coloured = page.eval_on_selector_all(
            "#output span[title]", "spans => spans.map(s => [s.textContent, s.title, s.style.background])"
        )
        # The views follow each text in the model's turn: once the attention view shows this
        # text's heads the page is idle, and the screenshot shows the page as a visitor sees it.
        page.wait_for_function(
            "t => document.querySelector('#attention .chargpt-attention')?.dataset.characters.endsWith(t)",
            arg=json.dumps(list(text[-8:]), ensure_ascii=False, separators=(",", ":"))[1:],
            timeout=60_000,
        )
        SCREENSHOTS.mkdir(exist_ok=True)
        page.screenshot(path=str(SCREENSHOTS / "web-static.png"))
        engine = Engine(SHIPPED_MODEL)
        settings = SamplingParams(max_new_tokens=300, temperature=0.8, top_k=40, min_p=0.05, seed=42)
        expected = engine.complete("ROMEO:", settings)[0]
        assert text == "ROMEO:" + expected
        assert "Generated 300 characters" in status and "seed 42" in status
        # Each generated character is coloured by the probability the model gave it, the number on hover.
        steps = engine.generate(encode_prompt("ROMEO:", engine.vocab), settings)
        python_probs = [p.prob for step in steps for p in step.pieces[0]]
        assert "".join(ch for ch, _, _ in coloured) == expected
        page_probs = [float(re.fullmatch(r"p = (\d\.\d\d)", title).group(1)) for _, title, _ in coloured]
        assert max(abs(a - b) for a, b in zip(page_probs, python_probs)) <= 0.0051
        assert all(
            background.startswith("rgb(") for _, _, background in coloured
        )  # hsl(...) as the browser computes it
        assert len({background for _, _, background in coloured}) > 5
        assert not static_page.errors

    def test_the_static_page_writes_the_greedy_text_of_the_engine(self, static_page):
        page = static_page.page
        generate_on_the_page(page, "KING RICHARD III:", 200, 0)
        wait_for_run(page, 200)
        greedy = page.evaluate("window.chargptLastRun.text")
        expected = Engine(SHIPPED_MODEL).complete(
            "KING RICHARD III:", SamplingParams(max_new_tokens=200, temperature=0)
        )
        assert greedy == expected[0]
        assert not static_page.errors

    def test_a_bad_setting_on_the_static_page_is_a_visible_sentence(self, static_page):
        """Bad input is a sentence on the page, not an exception."""
        page = static_page.page
        generate_on_the_page(page, "ROMEO:", 10, -1)
        page.wait_for_function("document.getElementById('status').classList.contains('error')")
        assert "temperature must be between 0 (greedy) and 10" in page.locator("#status").inner_text()
        assert not static_page.errors


DRAFT_PROMPTS = [
    "ROMEO:\n",
    "JULIET:\nO Romeo, Romeo! wherefore art thou",
    "",
    "zzzz",
    "Thou art a villain, and a villain thou art",
]
DRAFT_BUDGETS = [0, 1, 4, 15]
# Tables readDraftTable must refuse, with the reason it gives.
BAD_DRAFT_TABLES = [
    ([], 'it is not a draft table of format "chargpt-drafts/1"'),
    ({"format": "chargpt-drafts/1", "order": -1, "next": {}}, "its order or its table is missing or malformed"),
    (
        {"format": "chargpt-drafts/1", "order": 2, "next": {"ab": "Ω"}},
        "it holds characters that are not in the model's vocabulary",
    ),
]


@pytest.fixture(scope="module")
def js_drafts(node):
    """The shipped draft table read by Python and by chargpt.js's readDraftTable, drafts for
    DRAFT_PROMPTS at each budget from both, and readDraftTable's answers to BAD_DRAFT_TABLES (one
    node run): (Python's table, the histories, node's answer)."""
    from webapp.inference.drafting import load_table, table_path

    shipped = table_path(SHIPPED_MODEL / "onnx" / "model.onnx")
    vocab = Engine(SHIPPED_MODEL).vocab
    table, _ = load_table(shipped, vocab)
    histories = [[vocab.index(c) for c in p] for p in DRAFT_PROMPTS]
    bad = [b for b, _ in BAD_DRAFT_TABLES]
    script = (
        "import { readFileSync } from 'node:fs';\n"
        "import { asText, drafts, readDraftTable } from './chargpt.js';\n"
        f"const vocab = {json.dumps(vocab)}, histories = {json.dumps(histories)}, budgets = {DRAFT_BUDGETS};\n"
        f"const table = readDraftTable(JSON.parse(readFileSync({json.dumps(str(shipped))}, 'utf8')), vocab);\n"
        "const refusals = " + json.dumps(bad) + ".map((b) => { try { readDraftTable(b, vocab); return 'read'; }"
        " catch (e) { return e.message; } });\n"
        "console.log(JSON.stringify({ size: table.next.size, order: table.order, refusals,\n"
        "  drafts: histories.map((h) => budgets.map((b) => drafts([asText(h), asText(h.slice(1))], b, table))) }));"
    )
    return table, histories, node_json(node, script)


def test_the_javascript_reads_the_shipped_draft_table_as_python_does(js_drafts):
    table, _, out = js_drafts
    assert (out["size"], out["order"]) == (len(table.next), table.order)


def test_the_javascript_drafts_from_the_shipped_table_are_pythons(js_drafts):
    from webapp.inference.drafting import as_text, drafts

    table, histories, out = js_drafts
    want = [[drafts([as_text(h), as_text(h[1:])], b, table).tolist() for b in DRAFT_BUDGETS] for h in histories]
    assert out["drafts"] == want
    assert any(
        len(d[0]) == 15 for row in out["drafts"] for d in row
    )  # the table drafts where the prompts do not repeat


@pytest.mark.parametrize("case", range(len(BAD_DRAFT_TABLES)))
def test_the_javascript_refuses_a_bad_draft_table_with_its_reason(js_drafts, case):
    assert js_drafts[2]["refusals"][case] == BAD_DRAFT_TABLES[case][1]


def test_a_draft_table_that_is_not_one_is_named_in_node_and_the_text_is_the_same(node, tmp_path):
    folder = tmp_path / "model"
    shutil.copytree(SHIPPED_MODEL, folder)
    args = ["--prompt", "ROMEO:", "--chars", "150", "--temperature", "0.8", "--seed", "3", "--json"]
    with_table = node_check(node, str(folder), *args)
    (folder / "onnx" / "model.drafts.json").write_text("{ not json")
    spoiled = node_check(node, str(folder), *args)
    assert with_table.stderr == ""
    assert "note: the draft table was not used: it is not a draft table of format" in spoiled.stderr
    assert json.loads(spoiled.stdout)["text"] == json.loads(with_table.stdout)["text"]


def test_the_javascript_rotary_tables_are_pythons(node):
    from webapp.inference.ring import rotary_tables

    positions = [0, 1, 5, 127, 762, 2762, 123_456]
    script = (
        "import { rotaryTables } from './chargpt.js';\n"
        f"const t = rotaryTables({positions}, 32, 10000);\n"
        "console.log(JSON.stringify([Array.from(t.cos), Array.from(t.sin)]));"
    )
    out = node_json(node, script)
    cos, sin = (np.array(t, np.float32).reshape(len(positions), 32) for t in out)
    want_cos, want_sin = rotary_tables(np.array(positions), 32, 10000.0)
    assert np.abs(cos - want_cos).max() <= 1.2e-7 and np.abs(sin - want_sin).max() <= 1.2e-7  # float32 rounding


@pytest.mark.parametrize(
    "how, note", [("altered", "max |Δ logit|"), ("older", "it is an older ring file (one character a step)")]
)
def test_a_ring_file_that_disagrees_is_not_used_in_javascript_and_the_text_is_the_same(node, tmp_path, how, note):
    folder = tmp_path / "model"
    shutil.copytree(SHIPPED_MODEL, folder)
    args = ["--prompt", "ROMEO:", "--chars", "150", "--temperature", "0", "--json"]
    with_ring = node_check(node, str(folder), *args)
    spoil_ring(folder / "onnx" / "model.ring.onnx", how)
    spoiled = node_check(node, str(folder), *args)
    assert with_ring.stderr == "" and f"note: the ring file was not used: {note}" in spoiled.stderr
    assert json.loads(spoiled.stdout)["text"] == json.loads(with_ring.stdout)["text"]


def test_build_refuses_a_missing_model(node, tmp_path):
    result = subprocess.run(
        [node, "build.mjs", str(tmp_path / "none.onnx"), "--out", str(tmp_path / "out")],
        cwd=WEB,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "does not exist" in result.stderr
    assert not (tmp_path / "out").exists()


def test_the_javascript_limits_are_the_engines(node):
    from webapp.inference.drafting import MAX_DRAFT, MAX_MATCH, MIN_MATCH, REPEAT_MATCH, TABLE_FORMAT
    from webapp.inference.engine import MAX_PROMPT_CHARS
    from webapp.inference.ring import RING_TOLERANCE, VERIFY_CHUNK
    from webapp.inference.sampling import MAX_NEW_TOKENS, MAX_SAMPLES, MAX_SEED, MAX_TEMPERATURE

    script = (
        "import { LIMITS, RING_TOLERANCE, VERIFY_CHUNK, MAX_DRAFT, MIN_MATCH, MAX_MATCH, REPEAT_MATCH, TABLE_FORMAT }"
        " from './chargpt.js';\n"
        "console.log(JSON.stringify({ ...LIMITS, maxSeed: LIMITS.maxSeed.toString(), ringTolerance: RING_TOLERANCE,\n"
        "  verifyChunk: VERIFY_CHUNK, drafting: [MAX_DRAFT, MIN_MATCH, MAX_MATCH, REPEAT_MATCH, TABLE_FORMAT] }));"
    )
    out = node_json(node, script)
    assert out == {
        "maxNewTokens": MAX_NEW_TOKENS,
        "maxPromptChars": MAX_PROMPT_CHARS,
        "maxSamples": MAX_SAMPLES,
        "maxSeed": str(MAX_SEED),
        "maxTemperature": MAX_TEMPERATURE,
        "ringTolerance": RING_TOLERANCE,
        "verifyChunk": VERIFY_CHUNK,
        "drafting": [MAX_DRAFT, MIN_MATCH, MAX_MATCH, REPEAT_MATCH, TABLE_FORMAT],
    }


def test_the_javascript_drafts_and_ring_masks_are_pythons(node):
    from webapp.inference.drafting import as_text, drafts
    from webapp.inference.ring import ring_mask

    rng = np.random.default_rng(4)
    histories = [
        [int(i) for i in rng.integers(0, size, length)]
        for size, length in [(3, 40), (5, 200), (65, 300), (2, 3), (4, 1)]
    ]
    histories.append([300, 7, 300, 7, 300])  # ids beyond one byte
    budgets = [0, 1, 3, 7, 16]
    masks = [
        (rng.choice([0.0, -np.inf], (2, 15)).astype(np.float32), rng.integers(0, 60, 2), new) for new in (1, 2, 5, 15)
    ]
    script = (
        "import { asText, drafts, ringMask } from './chargpt.js';\n"
        f"const histories = {json.dumps(histories)}, budgets = {budgets};\n"
        # -Infinity: a JavaScript literal
        f"const masks = {json.dumps([[m.ravel().tolist(), p.tolist(), n] for m, p, n in masks])};\n"
        "console.log(JSON.stringify({\n"
        "  drafts: histories.map((h) => budgets.map((b) => drafts([asText(h), asText(h.slice(0, -1))], b))),\n"
        "  masks: masks.map(([m, p, n]) => Array.from(ringMask(Float32Array.from(m), p, n, 15), (x) => (x === "
        "-Infinity ? 'inf' : x))),\n"
        "}));"
    )
    out = node_json(node, script)
    assert out["drafts"] == [[drafts([as_text(h), as_text(h[:-1])], b).tolist() for b in budgets] for h in histories]
    assert any(len(d[0]) > 2 for row in out["drafts"] for d in row)  # not all empty: the repeats were found
    for got, (filled, positions, new) in zip(out["masks"], masks):
        want = ring_mask(filled, positions, new).ravel()
        assert [("inf" if x == -np.inf else float(x)) for x in want] == got


# Rows of logits for the alternatives' twin tests: each with its settings and the id drawn there.
ALTERNATIVES_SETTINGS = [
    dict(temperature=0.8),
    dict(temperature=0),
    dict(temperature=1.3, top_k=4),
    dict(temperature=1, top_p=0.5),
    dict(temperature=0.9, min_p=0.2),
    dict(temperature=2, top_k=30, top_p=0.9, min_p=0.01),
]
ALTERNATIVES_DRAWN = [0, 9, 64, 12, 3, 40]
VOCAB_65 = [chr(0x41 + i) if i < 26 else chr(0x61 + i - 26) if i < 52 else str(i - 52) for i in range(65)]


@pytest.fixture(scope="module")
def alternatives_case(node):
    """The same rows through chargpt.js's topAlternatives, spellAlternatives and nextCharacter
    (what the static page shows at a character and in its chart), run once: (logits, answers)."""
    rng = np.random.default_rng(8)
    logits = (rng.normal(size=(6, 65)) * 3).astype(np.float32)
    logits[1, [4, 9]] = logits[1].max() + 1  # a tie for the likeliest
    js_settings = [
        {
            "temperature": s["temperature"],
            "topK": s.get("top_k", 0),
            "topP": s.get("top_p", 1),
            "minP": s.get("min_p", 0),
        }
        for s in ALTERNATIVES_SETTINGS
    ]
    script = (
        "import { nextCharacter, samplingParams, softmax, spellAlternatives, topAlternatives } from './chargpt.js';\n"
        "await import('./views.js');\n"
        f"const logits = {json.dumps(logits.tolist())}.map((row) => Float32Array.from(row));\n"
        f"const settings = {json.dumps(js_settings)}.map((s) => samplingParams(s)), drawn = {ALTERNATIVES_DRAWN};\n"
        f"const vocab = {json.dumps(VOCAB_65)};\n"
        "console.log(JSON.stringify({ shown: globalThis.chargptViews.ALTERNATIVES,\n"
        "  top: logits.map((row, r) => topAlternatives(row, settings[r], drawn[r], 5)),\n"
        "  spelled: logits.map((row, r) => spellAlternatives(row, settings[r], drawn[r], softmax(row)[drawn[r]], "
        "5, vocab)),\n"
        "  next: logits.map((row, r) => nextCharacter(row, settings[r], vocab)) }));"
    )
    return logits, node_json(node, script)


def python_alternatives(logits: np.ndarray, r: int):
    from webapp.inference.sampling import top_alternatives

    params = SamplingParams(**ALTERNATIVES_SETTINGS[r])
    return top_alternatives(logits[r : r + 1], [params], np.array([ALTERNATIVES_DRAWN[r]]), 5)


def test_views_js_shows_as_many_alternatives_as_the_pages_ask_for(alternatives_case):
    from webapp.inference.sampling import PAGE_ALTERNATIVES

    assert alternatives_case[1]["shown"] == PAGE_ALTERNATIVES


@pytest.mark.parametrize("r", range(len(ALTERNATIVES_SETTINGS)))
def test_the_javascript_top_alternatives_are_the_samplers(alternatives_case, r):
    logits, out = alternatives_case
    found, js = python_alternatives(logits, r), out["top"][r]
    assert js["ids"] == found.ids[0].tolist()
    assert np.allclose(js["model"], found.model[0], rtol=0, atol=1e-12)
    assert np.allclose(js["sampled"], found.sampled[0], rtol=0, atol=1e-12)
    assert abs(js["drawn"] - found.drawn[0]) <= 1e-12


@pytest.mark.parametrize("r", range(len(ALTERNATIVES_SETTINGS)))
def test_the_javascript_spelled_alternatives_are_the_engines(alternatives_case, r):
    from webapp.inference.engine import spell_alternatives
    from webapp.inference.sampling import softmax

    logits, out = alternatives_case
    drawn = ALTERNATIVES_DRAWN[r]
    chosen_prob = float(softmax(logits[r : r + 1])[0, drawn])
    python = spell_alternatives(python_alternatives(logits, r), 0, drawn, chosen_prob, VOCAB_65)
    assert [row["char"] for row in out["spelled"][r]] == [c for c, _, _ in python]
    spelled = [[row["model"], row["sampled"]] for row in out["spelled"][r]]
    assert np.allclose(spelled, [x[1:] for x in python], rtol=0, atol=1e-12)


@pytest.mark.parametrize("r", range(len(ALTERNATIVES_SETTINGS)))
def test_the_javascript_next_character_is_inspects(alternatives_case, r):
    from webapp.server.next_character import distribution

    logits, out = alternatives_case
    want, got = distribution(logits[r], SamplingParams(**ALTERNATIVES_SETTINGS[r]), VOCAB_65), out["next"][r]
    for part in ("before", "after"):
        assert sorted(got[part]) == sorted(want[part])
        assert all(abs(got[part][c] - p) <= 1e-12 for c, p in want[part].items())
