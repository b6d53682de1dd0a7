"""How the model decides, on both pages, used in Chromium as a person uses them (docs/views.md):
what the model considered at each generated character (hover, tap, the keyboard), choosing
another character and Undo, where every head looked (a character clicked, a map enlarged), and
the next character's chart as the settings move. The Gradio page runs the server's engine; the
static page the JavaScript port, checked here against Python's sampling rules on the logits it
drew from, and against PyTorch for the heads."""

from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess

import numpy as np
import pytest
from conftest import IN_CI, REPO, SCREENSHOTS, chromium_or_skip
from helpers import server, static_server

from benchmarks.page import CHROMIUM_ARGS
from webapp.inference.engine import Engine, encode_prompt, spell_alternatives
from webapp.inference.onnx_model import SHIPPED_MODEL
from webapp.inference.sampling import (
    PAGE_ALTERNATIVES,
    SamplingParams,
    sampling_distribution,
    softmax,
    top_alternatives,
)

WEB = REPO / "webapp" / "web"
PROMPT = "ROMEO:"
SETTINGS = SamplingParams(max_new_tokens=150, temperature=0.9, top_k=20, top_p=0.95, min_p=0.02, seed=5)
# The chart's text: a prompt whose next character the model is unsure of.
CHART_PROMPT = "ROMEO:\nWhat light is th"
CHART_SETTINGS = [(0.8, 0, 1.0, 0.0), (1.5, 5, 1.0, 0.0), (1.0, 0, 0.5, 0.0), (1.0, 0, 1.0, 0.2), (0.0, 0, 1.0, 0.0)]
PHONE = {"viewport": {"width": 375, "height": 800}, "has_touch": True, "is_mobile": True}
DESKTOP = {"viewport": {"width": 1280, "height": 1000}}
OPEN_PANEL = ".chargpt-popover:not([hidden])"


@pytest.fixture(scope="module")
def engine() -> Engine:
    return Engine.for_server(SHIPPED_MODEL)  # the server's threads: its logits to the last bit


@pytest.fixture(scope="module")
def torch_model():
    """PyTorch with the shipped model's weights: where its heads look is what the pages must show."""
    from export.onnx_export import torch_model_from_onnx

    return torch_model_from_onnx(SHIPPED_MODEL / "onnx" / "model.onnx")


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    chromium = chromium_or_skip()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def gradio_url():
    with server() as (url, _):
        yield url


@pytest.fixture(scope="module")
def static_url(tmp_path_factory):
    node = shutil.which("node")
    if node is None or not (WEB / "node_modules" / "onnxruntime-web").is_dir():
        if IN_CI:
            pytest.fail("CI must have node and webapp/web/node_modules (see .ci/run)")
        pytest.skip("no node or no webapp/web/node_modules: cd webapp/web && npm ci --ignore-scripts")
    out = tmp_path_factory.mktemp("views-site") / "dist"
    subprocess.run([node, "build.mjs", "--out", str(out)], cwd=WEB, check=True, capture_output=True, timeout=120)
    with static_server(out) as url:
        yield url


class GradioPage:
    """The Gradio page, driven through its controls."""

    chars = "#colored span[data-alternatives]"
    slider = "[aria-label='range slider for {}']"
    labels = {
        "temperature": "Temperature (0 = greedy)",
        "top_k": "Top-k (0 = off)",
        "top_p": "Top-p (1 = off)",
        "min_p": "Min-p (0 = off)",
    }

    def __init__(self, page, url: str):
        self.page = page
        page.goto(url, wait_until="networkidle")
        page.locator("#next-char li").first.wait_for()

    def set(self, **settings) -> None:
        for name, value in settings.items():
            self.page.locator(self.slider.format(self.labels[name])).fill(str(value))  # as a slider is moved

    def generate(self, prompt: str, params: SamplingParams) -> None:
        page = self.page
        page.get_by_label("Prompt").fill(prompt)
        length = page.get_by_label("number input for Characters to generate")
        length.fill(str(params.max_new_tokens))
        length.press("Enter")
        self.set(temperature=params.temperature, top_k=params.top_k, top_p=params.top_p, min_p=params.min_p)
        page.get_by_label("Seed (-1 = random)").fill(str(params.seed))
        page.get_by_role("button", name="Generate", exact=True).click()
        self.wait_for(f"{params.max_new_tokens} characters in", f"seed {params.seed}")

    def wait_for(self, *stats: str) -> None:
        """Until the stats line says all of these (its last words come with the last characters)."""
        said = " && ".join(f"s.includes({words!r})" for words in stats)
        self.page.wait_for_function(f"(s => {said})(document.querySelector('#stats').innerText)", timeout=60_000)

    def text(self) -> str:
        return self.page.locator("#output textarea").input_value()

    def undo(self) -> None:
        self.page.locator("#colored .chargpt-undo").click()

    def chose(self, at: int) -> None:
        self.wait_for(f"{at + 1 + SETTINGS.max_new_tokens} characters in", "1 chosen character")


class StaticPage:
    """The static page, driven through its controls."""

    chars = "#output span[data-i]"
    fields = {"temperature": "#temperature", "top_k": "#top-k", "top_p": "#top-p", "min_p": "#min-p"}

    def __init__(self, page, url: str):
        self.page = page
        page.goto(url)
        page.wait_for_function("!document.getElementById('generate').disabled", timeout=60_000)
        page.locator("#next-char li").first.wait_for()

    def set(self, **settings) -> None:
        for name, value in settings.items():
            self.page.fill(self.fields[name], str(value))

    def generate(self, prompt: str, params: SamplingParams) -> None:
        page = self.page
        page.fill("#prompt", prompt)
        page.fill("#length", str(params.max_new_tokens))
        self.set(temperature=params.temperature, top_k=params.top_k, top_p=params.top_p, min_p=params.min_p)
        page.fill("#seed", str(params.seed))
        page.click("#generate")
        page.wait_for_function("document.getElementById('status').textContent.startsWith('Generated')", timeout=60_000)

    def text(self) -> str:
        return self.page.locator("#output").inner_text()

    def undo(self) -> None:
        self.page.click("#undo")

    def chose(self, at: int) -> None:
        self.page.wait_for_function("document.getElementById('status').textContent.startsWith('Chose')", timeout=60_000)


def open_page(kind: str, browser, gradio_url: str, static_url: str, device: dict):
    page = browser.new_page(**device)
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    view = GradioPage(page, gradio_url) if kind == "gradio" else StaticPage(page, static_url)
    view.errors = errors
    return view


@pytest.fixture(scope="module", params=["gradio", "static"])
def kind(request) -> str:
    return request.param


@pytest.fixture(scope="module")
def urls(request, kind):
    """Only the page asked for is started."""
    return (
        (request.getfixturevalue("gradio_url"), "") if kind == "gradio" else ("", request.getfixturevalue("static_url"))
    )


@pytest.fixture(scope="module")
def written(kind, urls, browser):
    """The page at 1280 px, once it has written PROMPT's continuation with SETTINGS: the tests
    below read it, and those that change it put it back (Undo) or come last (the chart)."""
    view = open_page(kind, browser, *urls, DESKTOP)
    view.generate(PROMPT, SETTINGS)
    yield view
    view.page.close()


def eventually(view, check, seconds: float = 30) -> bool:
    """Whether check() comes true within `seconds` (the page answering in its own time)."""
    for _ in range(int(seconds * 5)):
        if check():
            return True
        view.page.wait_for_timeout(200)
    return check()


def panel_rows(page) -> list[tuple[str, float, float]]:
    """The open panel's rows as shown: (character, the model's probability, the draw's)."""
    rows = page.eval_on_selector_all(
        f"{OPEN_PANEL} tr[data-char]",
        "rows => rows.map(r => [r.dataset.char, r.cells[1].textContent, r.cells[2].textContent])",
    )
    return [(c, float(model), float(draw.split()[0])) for c, model, draw in rows]


def expected_rows(kind: str, view, engine: Engine, position: int) -> list[tuple[str, float, float]]:
    """What the panel must show at a position: the engine's alternatives on the Gradio page; on the
    static page, Python's sampling rules on the logits the JavaScript port drew that character
    from (which are the engine's, within onnxruntime-web's rounding)."""
    if kind == "gradio":
        asked = dataclasses.replace(SETTINGS, alternatives=PAGE_ALTERNATIVES)
        pieces = [p for step in engine.generate(encode_prompt(PROMPT, engine.vocab), asked) for p in step.pieces[0]]
        return list(pieces[position].alternatives)
    state = view.page.evaluate("window.chargptState()")
    logits = np.array([state["chars"][position]["logits"]], np.float32)
    prefix = encode_prompt(PROMPT + "".join(c["char"] for c in state["chars"][:position]), engine.vocab).ids
    assert np.abs(logits[0] - engine.next_logits(prefix)).max() <= 1e-3
    drawn = engine.vocab.index(state["chars"][position]["char"])
    found = top_alternatives(logits, [SETTINGS], np.array([drawn]), PAGE_ALTERNATIVES)
    return list(spell_alternatives(found, 0, drawn, float(softmax(logits)[0, drawn]), engine.vocab))


def test_hovering_a_character_shows_the_five_alternatives_it_was_drawn_among(kind, written, engine):
    view = written
    assert view.text() == PROMPT + engine.complete(PROMPT, SETTINGS)[0]
    for position in (3, 40, 97):
        view.page.mouse.move(0, 0)  # away: the open panel closes
        view.page.locator(OPEN_PANEL).wait_for(state="detached")
        view.page.locator(view.chars).nth(position).hover()
        view.page.locator(OPEN_PANEL).wait_for()
        shown, want = panel_rows(view.page), expected_rows(kind, view, engine, position)
        assert [c for c, _, _ in shown] == [c for c, _, _ in want]
        assert max(abs(a - b) for x, y in zip(shown, want) for a, b in zip(x[1:], y[1:])) <= 1e-6
        drawn = view.page.locator(f"{OPEN_PANEL} tr.chargpt-drawn").get_attribute("data-char")
        assert drawn == view.page.locator(view.chars).nth(position).text_content()
        assert view.page.locator(f"{OPEN_PANEL} h3").inner_text().startswith(f"Character {position + 1}:")
    view.page.screenshot(path=str(SCREENSHOTS / f"views-{kind}-desktop.png"), full_page=True)
    assert not view.errors


def test_choosing_an_alternative_rewrites_the_text_from_there_and_undo_brings_it_back(written, engine):
    view = written
    before = view.text()
    at = 25
    view.page.locator(view.chars).nth(at).click()
    choice = view.page.locator(f"{OPEN_PANEL} tbody tr:not(.chargpt-drawn) button").first
    chosen = choice.locator("xpath=ancestor::tr").get_attribute("data-char")
    choice.click()
    view.chose(at)
    prefix = before[: len(PROMPT) + at] + chosen
    assert view.text() == prefix + engine.complete(prefix, SETTINGS)[0]
    assert view.page.locator(view.chars).nth(at).get_attribute("class") == "chargpt-chosen"
    view.undo()
    assert eventually(view, lambda: view.text() == before)
    assert not view.errors


def test_tab_reaches_the_characters_and_enter_opens_one(kind, written):
    view = written
    page = view.page
    page.mouse.move(0, 0)  # a keyboard user's pointer is nowhere near the text
    page.locator(OPEN_PANEL).wait_for(state="detached")
    (page.get_by_label("Seed (-1 = random)") if kind == "gradio" else page.locator("#generate")).focus()
    for _ in range(10):
        page.keyboard.press("Tab")
        if page.evaluate(f"document.activeElement.matches({view.chars!r})"):
            break
    assert page.evaluate(f"document.activeElement === document.querySelector({view.chars!r})")  # the first character
    page.keyboard.press("ArrowRight")
    page.keyboard.press("ArrowRight")
    page.keyboard.press("Enter")
    page.locator(OPEN_PANEL).wait_for()
    assert page.locator(f"{OPEN_PANEL} h3").inner_text().startswith("Character 3:")
    assert page.evaluate(f"document.querySelector({OPEN_PANEL!r}).contains(document.activeElement)")  # its first button
    page.keyboard.press("Escape")
    assert page.locator(OPEN_PANEL).count() == 0
    assert page.evaluate(f"document.activeElement === document.querySelectorAll({view.chars!r})[2]")
    assert not view.errors


def test_a_character_tapped_on_a_phone_shows_its_alternatives_within_the_screen(kind, urls, browser):
    view = open_page(kind, browser, *urls, PHONE)
    view.generate(PROMPT, SETTINGS)
    at = 60
    view.page.locator(view.chars).nth(at).tap()
    panel = view.page.locator(OPEN_PANEL)
    panel.wait_for()
    box = panel.bounding_box()
    assert box["x"] >= 0 and box["x"] + box["width"] <= 375
    assert len(panel_rows(view.page)) >= 5
    view.page.screenshot(path=str(SCREENSHOTS / f"views-{kind}-phone.png"), full_page=True)
    view.page.locator(f"{OPEN_PANEL} tbody button").first.tap()
    view.chose(at)
    # Where the heads looked at a tapped character: the grid and an enlarged map within the screen.
    view.page.locator(view.chars).nth(20).tap()
    view.page.locator(f"{OPEN_PANEL} .chargpt-close").tap()
    shown_attention(view, view.text()[: len(PROMPT) + 20])
    view.page.locator(HEADS).nth(6 * 6 - 1).tap()
    for part in ("#attention .chargpt-heads", ENLARGED):
        box = view.page.locator(part).bounding_box()
        assert box["x"] >= 0 and box["x"] + box["width"] <= 375, part
    view.page.screenshot(path=str(SCREENSHOTS / f"attention-{kind}-phone.png"), full_page=True)
    assert not view.errors


HEADS = "#attention .chargpt-head"
ENLARGED = "#attention .chargpt-enlarged"


def shown_attention(view, text: str) -> np.ndarray:
    """The attention view's weights [layer, head, character] once it shows the heads for `text`
    (its last block_size characters)."""
    window = list(text[-128:])
    view.page.wait_for_function(
        "(chars) => document.querySelector('#attention .chargpt-attention')?.dataset.characters === chars",
        arg=json.dumps(window, ensure_ascii=False, separators=(",", ":")),
        timeout=30_000,
    )
    maps = view.page.eval_on_selector_all(
        HEADS, "maps => maps.map(m => [+m.dataset.layer, +m.dataset.head, m.dataset.weights])"
    )
    assert [(layer, head) for layer, head, _ in maps] == [(layer, head) for layer in range(6) for head in range(6)]
    return np.array([[float(w) for w in weights.split(",")] for _, _, weights in maps]).reshape(6, 6, len(window))


def pytorch_attention(torch_model, text: str, vocab: list[str]) -> np.ndarray:
    import torch

    with torch.no_grad():
        found = torch_model.attention(torch.tensor([encode_prompt(text, vocab).ids]))[0, :, :, -1].numpy()
    return found[..., 128 - min(len(text), 128) :]


def test_clicking_a_character_shows_where_every_head_looked_as_pytorch_computed_it(kind, written, engine, torch_model):
    """A character clicked: a map per layer and head of the weights its prediction gave the
    characters before it, PyTorch's within 1e-4, each map's summing to 1; a map clicked, or
    reached with Tab and opened with Enter, enlarges; Esc closes it."""
    view, page = written, written.page
    at = 140  # the text before it is longer than the window
    view.page.locator(view.chars).nth(at).click()
    page.keyboard.press("Escape")
    text = view.text()[: len(PROMPT) + at]
    got = shown_attention(view, text)
    assert np.abs(got - pytorch_attention(torch_model, text, engine.vocab)).max() <= 1e-4
    assert np.abs(got.sum(-1) - 1).max() <= 1e-5
    assert "Rows: layers; columns: heads" in page.locator("#attention .chargpt-line").inner_text()
    page.locator(HEADS).nth(2 * 6 + 1).click()  # layer 3, head 2
    assert page.locator(f"{ENLARGED} h4").inner_text() == "Layer 3, head 2"
    assert page.locator(f"{ENLARGED} .chargpt-heat span").count() == 128
    weights = [
        float(w)
        for w in page.eval_on_selector_all(f"{ENLARGED} .chargpt-heat span", "s => s.map(x => x.dataset.weight)")
    ]
    assert weights == pytest.approx(got[2, 1], abs=1e-7)
    page.screenshot(path=str(SCREENSHOTS / f"attention-{kind}-desktop.png"), full_page=True)
    page.locator(HEADS).nth(2 * 6 + 1).click()  # again: closed
    assert page.locator(ENLARGED).is_hidden()
    page.locator(HEADS).nth(0).focus()
    page.keyboard.press("Tab")  # to layer 1, head 2
    page.keyboard.press("Enter")
    assert page.locator(f"{ENLARGED} h4").inner_text() == "Layer 1, head 2"
    page.keyboard.press("Escape")
    assert page.locator(ENLARGED).is_hidden()
    assert page.evaluate(f"document.activeElement === document.querySelectorAll({HEADS!r})[1]")
    assert not view.errors


def test_the_chart_keeps_what_the_sampling_rules_keep_as_the_settings_move(kind, written, engine):
    view = written
    page = view.page
    if kind == "gradio":
        page.get_by_label("Prompt").fill(CHART_PROMPT)
    else:
        page.fill("#prompt", CHART_PROMPT)
    logits = engine.next_logits(encode_prompt(CHART_PROMPT, engine.vocab).ids)
    for temperature, top_k, top_p, min_p in CHART_SETTINGS:
        view.set(temperature=temperature, top_k=top_k, top_p=top_p, min_p=min_p)
        if kind == "static":  # the JavaScript port's logits, which the rules below must read
            page.wait_for_function(f"window.chargptState().chart?.context === {CHART_PROMPT!r}")
            logits = np.array(page.evaluate("window.chargptState().chart.logits"), np.float32)
        params = SamplingParams(temperature=temperature, top_k=top_k, top_p=top_p, min_p=min_p)
        kept = sampling_distribution(logits[None], [params])[0] > 0
        order = np.argsort(-logits, kind="stable")
        want = [[engine.vocab[i], bool(kept[i])] for i in order[:20]] + [int(kept[order[20:]].sum())]
        script = (
            "() => [...[...document.querySelectorAll('#next-char li[data-char]')].map(li => [li.dataset.char, "
            "li.dataset.kept === 'true']), Number(document.querySelector('#next-char li[data-rest]')?.dataset.kept)]"
        )
        eventually(view, lambda script=script, want=want: page.evaluate(script) == want, seconds=20)
        assert page.evaluate(script) == want, (temperature, top_k, top_p, min_p)
    assert page.locator("#next-char").inner_text().count("after") >= 1
    assert not view.errors


def test_a_folder_exported_before_the_attention_file_says_why_the_view_is_empty(browser, tmp_path):
    """The static page of a folder without model.attention.onnx: ready, its chart drawn, and the
    attention view's one sentence (the Gradio page's is /inspect's attention_notice: test_app.py)."""
    node = shutil.which("node")
    if node is None or not (WEB / "node_modules" / "onnxruntime-web").is_dir():
        pytest.skip("no node or no webapp/web/node_modules")
    older = tmp_path / "older"
    shutil.copytree(SHIPPED_MODEL, older)
    (older / "onnx" / "model.attention.onnx").unlink()
    subprocess.run(
        [node, "build.mjs", str(older), "--out", str(tmp_path / "dist")],
        cwd=WEB,
        check=True,
        capture_output=True,
        timeout=120,
    )
    with static_server(tmp_path / "dist") as url:
        view = StaticPage(browser.new_page(**DESKTOP), url)
        view.page.wait_for_function(
            "document.getElementById('attention').innerText.includes('export attention')", timeout=30_000
        )
        assert view.page.locator("#attention .chargpt-notice").inner_text() == (
            "This model has no model.attention.onnx: it was exported before chargpt showed attention, and "
            "`python -m export attention FOLDER` adds it to its folder."
        )
        assert view.page.locator("#next-char li").count() > 0 and not view.page.locator("#generate").is_disabled()
        view.page.close()
