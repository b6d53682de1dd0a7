"""The web app as people and programs use it: one launched server on the shipped model, driven by
gradio_client, raw HTTP, a headless Chromium and the command line; and the packages it needs."""

from __future__ import annotations

import contextlib
import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import REPO, SCREENSHOTS, chromium_or_skip
from helpers import (
    cpu_seconds,
    fn_index_of,
    free_port,
    generated_spans,
    queue_call,
    raw_generate,
    server,
    wait_for_page,
    written_request,
)

from benchmarks.page import CHROMIUM_ARGS
from webapp.inference.batching import CONCURRENCY
from webapp.inference.onnx_model import SHIPPED_MODEL, OnnxModel
from webapp.inference.phrases import steps_phrase
from webapp.server.page import StopPresses

# A stream nobody reads is ended after this many seconds (20 by default: webapp/server/stalled.py).
STALL_S = 3


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """The shipped models/chargpt, served with no --model (what `make serve` opens), Gradio's
    temporary folder in GRADIO_TEMP_DIR=TEMP: (url, the server process, its log file, TEMP)."""
    folder = tmp_path_factory.mktemp("served")
    log, temp = folder / "server.log", folder / "gradio"
    env = dict(os.environ, GRADIO_TEMP_DIR=str(temp), CHARGPT_STALL_SECONDS=str(STALL_S))
    with open(log, "w") as stderr, server(stderr=stderr, env=env) as (url, proc):
        yield url, proc, log, temp


@pytest.fixture(scope="module")
def app_url(served):
    return served[0]


@pytest.fixture(scope="module")
def client(app_url):
    from gradio_client import Client

    return Client(app_url, verbose=False)


def test_generate_endpoint_returns_the_full_text_first(client, app_url):
    from webapp.inference.engine import Engine
    from webapp.inference.onnx_model import SHIPPED_MODEL
    from webapp.inference.sampling import SamplingParams

    text, colored, stats = client.predict("ROMEO:", 50, 0.8, 0, 1.0, 7, 0.05, api_name="/generate")
    assert (
        text
        == "ROMEO:" + Engine(SHIPPED_MODEL).complete("ROMEO:", SamplingParams(max_new_tokens=50, seed=7, min_p=0.05))[0]
    )
    assert "<span" in colored
    assert "50 characters in" in stats
    assert "seed 7" in stats
    assert client.predict("ROMEO:", 50, 0.8, 0, 1.0, 7, 0.05, api_name="/generate")[0] == text  # same seed and settings
    # Calls written before min_p existed (six inputs) keep working, as min_p 0 (off).
    off = client.predict("ROMEO:", 50, 0.8, 0, 1.0, 7, 0.0, api_name="/generate")[0]
    assert off != text
    assert client.predict("ROMEO:", 50, 0.8, 0, 1.0, 7, api_name="/generate")[0] == off
    event, data = raw_generate(app_url, ["ROMEO:", 50, 0.8, 0, 1.0, 7])
    assert (event, data[0]) == ("complete", off)


def test_generate_asked_for_alternatives_gives_what_the_model_considered_and_callers_who_do_not_ask_pay_nothing(client):
    """/generate's optional last input: with it, each character's span carries the likeliest
    characters there, with their probabilities in the model's distribution and in the one it
    was drawn from (within 1e-6 of the engine's), and the prompt's span the request; without it,
    the HTML is what it was before alternatives existed, span for span."""
    from webapp.inference.engine import Engine, Piece, encode_prompt
    from webapp.inference.sampling import SamplingParams
    from webapp.server.coloured import ColouredText

    settings = dict(max_new_tokens=80, temperature=0.8, top_k=20, top_p=0.95, seed=11, min_p=0.02)
    text, plain, _ = client.predict("ROMEO:", 80, 0.8, 20, 0.95, 11, 0.02, api_name="/generate")
    same, html, stats = client.predict("ROMEO:", 80, 0.8, 20, 0.95, 11, 0.02, True, api_name="/generate")
    assert same == text and "seed 11" in stats
    engine = Engine.for_server(SHIPPED_MODEL)
    pieces = [
        p
        for step in engine.generate(encode_prompt("ROMEO:", engine.vocab), SamplingParams(**settings, alternatives=5))
        for p in step.pieces[0]
    ]
    before = ColouredText("ROMEO:")  # today's HTML, from the same pieces without alternatives
    for piece in pieces:
        before.add(Piece(piece.char, piece.prob))
    assert plain == before.html() and "data-" not in plain
    spans = generated_spans(html)
    assert "".join(ch for ch, _ in spans) == text[len("ROMEO:") :] == "".join(p.char for p in pieces)
    for (_, attributes), piece in zip(spans, pieces):
        shown = json.loads(attributes["data-alternatives"])
        assert [c for c, _, _ in shown] == [c for c, _, _ in piece.alternatives]
        assert max(abs(a - b) for x, y in zip(shown, piece.alternatives) for a, b in zip(x[1:], y[1:])) <= 1e-6
    request = written_request(html)
    assert request == {"prompt": "ROMEO:", **settings, "choices": [], "undo": []}


# /inspect's settings: (temperature, top_k, top_p, min_p).
INSPECT_SETTINGS = [(0.8, 0, 1.0, 0.0), (1.3, 5, 1.0, 0.0), (0.7, 0, 0.6, 0.0), (1.0, 0, 1.0, 0.1), (0, 0, 1.0, 0.0)]


def test_inspect_gives_the_next_characters_distribution_before_and_after_the_sampling_rules(client):
    import numpy as np

    from webapp.inference.engine import Engine, encode_prompt
    from webapp.inference.sampling import SamplingParams, sampling_distribution, softmax

    engine = Engine.for_server(SHIPPED_MODEL)
    text = "ROMEO:\nWhat light is th"
    logits = engine.next_logits(encode_prompt(text, engine.vocab).ids)
    order = [engine.vocab[i] for i in np.argsort(-logits, kind="stable")]
    for temperature, top_k, top_p, min_p in INSPECT_SETTINGS:
        answer = client.predict(text, temperature, top_k, top_p, min_p, api_name="/inspect")
        params = SamplingParams(temperature=temperature, top_k=top_k, top_p=top_p, min_p=min_p)
        before, after = softmax(logits[None])[0], sampling_distribution(logits[None], [params])[0]
        assert (answer["context"], answer["notice"], list(answer["before"])) == (text, "", order)
        assert max(abs(answer["before"][c] - before[engine.vocab.index(c)]) for c in order) <= 1e-6
        assert list(answer["after"]) == [c for c in order if after[engine.vocab.index(c)] > 0]
        assert max(abs(p - after[engine.vocab.index(c)]) for c, p in answer["after"].items()) <= 1e-6
    assert list(answer["after"].values()) == [1.0]  # temperature 0: the likeliest alone


def test_inspect_gives_where_every_head_looked_from_the_texts_last_character(client):
    """/inspect's attention: a layer, a head and one weight per character of the window for every
    head, PyTorch's within 1e-4 (the shipped model's weights), for a text longer than the window;
    each head's weights sum to 1."""
    import numpy as np
    import torch

    from export.onnx_export import torch_model_from_onnx
    from webapp.inference.engine import encode_prompt

    text = (
        "ROMEO:\nWhat light through yonder window breaks? It is the east, and Juliet is the sun. "
        "Arise, fair sun, and kill the envious moon"
    )
    answer = client.predict(text, 0.8, 0, 1.0, 0.0, api_name="/inspect")
    found = answer["attention"]
    model = torch_model_from_onnx(SHIPPED_MODEL / "onnx" / "model.onnx")
    window = model.config.block_size
    assert answer["attention_notice"] == "" and len(text) > window
    assert found["characters"] == list(text[-window:])
    assert [(h["layer"], h["head"]) for h in found["heads"]] == [(layer, h) for layer in range(6) for h in range(6)]
    got = np.array([h["weights"] for h in found["heads"]]).reshape(6, 6, window)
    ids = torch.tensor([encode_prompt(text, OnnxModel(SHIPPED_MODEL).vocab).ids])
    with torch.no_grad():
        want = model.attention(ids)[0, :, :, -1].numpy()
    assert np.abs(got - want).max() <= 1e-4
    assert np.abs(got.sum(-1) - 1).max() <= 1e-5


def test_a_folder_exported_before_the_attention_file_serves_and_says_why_it_shows_no_heads(tmp_path):
    import shutil

    from webapp.inference.engine import Engine
    from webapp.inference.sampling import SamplingParams
    from webapp.server.next_character import NextCharacter

    older = tmp_path / "older"
    shutil.copytree(SHIPPED_MODEL, older)
    (older / "onnx" / "model.attention.onnx").unlink()
    engine = Engine(older)
    assert len(engine.complete("ROMEO:", SamplingParams(max_new_tokens=20, seed=1))[0]) == 20
    answer = NextCharacter(engine)("ROMEO:", SamplingParams())
    assert answer["attention"] is None and answer["before"] and answer["after"]
    assert answer["attention_notice"] == (
        "This model has no model.attention.onnx: it was exported before chargpt showed "
        "attention, and `python -m export attention FOLDER` adds it to its folder."
    )


def test_inspect_reads_a_text_as_generate_reads_a_prompt(client):
    assert (
        client.predict("", 0.8, 0, 1.0, 0.0, api_name="/inspect")["context"] == "\n"
    )  # an empty text starts from a newline
    odd = client.predict("Café 🙂", 0.8, 0, 1.0, 0.0, api_name="/inspect")
    assert (odd["context"], odd["notice"]) == (
        "Cafe ",
        "replaced 'é'→'e'; dropped '🙂' (not in the model's vocabulary)",
    )
    assert odd["notice"] in client.predict("Café 🙂", 5, 0.8, 0, 1.0, 1, api_name="/generate")[2]
    long = client.predict("To be, or not to be. " * 100, 0.8, 0, 1.0, 0.0, api_name="/inspect")
    assert long["context"] == ("To be, or not to be. " * 100)[-OnnxModel(SHIPPED_MODEL).receptive_field :]


@pytest.mark.parametrize(
    "args, message",
    [
        (("x", -1, 0, 1.0, 0.0), "Temperature must be between 0 \\(greedy\\) and 10, not -1."),
        (("x", 0.8, 0, 0, 0.0), "Top_p must be above 0 and at most 1"),
        (("x", 0.8, -5, 1.0, 0.0), "Top_k must be a whole number, 0 for off, not -5."),
        (("x", 0.8, 0, 1.0, 1.5), "Min_p must be between 0 \\(off\\) and 1, not 1.5."),
        (("x", "hot", 0, 1.0, 0.0), "Temperature must be between 0 \\(greedy\\) and 10, not 'hot'."),
        (("x" * 100_000, 0.8, 0, 1.0, 0.0), "The prompt is 100,000 characters; the limit is 10,000"),
    ],
)
def test_bad_inspect_input_gets_the_sentence_generate_gives(client, args, message):
    with pytest.raises(Exception, match=message):
        client.predict(*args, api_name="/inspect")
    generate_args = (args[0], 10, args[1], args[2], args[3], 1, args[4])
    with pytest.raises(Exception, match=message):
        client.predict(*generate_args, api_name="/generate")


def branch(url: str, request: dict, session: str = "branching") -> dict:
    """The page's choice of an alternative (or its Undo), as its JavaScript sends it."""
    return queue_call(url, fn_index_of(url, "branch"), [], {"request": request}, session)["output"]


def test_a_chosen_alternative_gives_the_engines_text_for_that_prefix_and_undo_the_text_before(client, app_url):
    from webapp.inference.engine import Engine
    from webapp.inference.sampling import SamplingParams

    text, html, _ = client.predict("JULIET:", 120, 0.9, 0, 1.0, 21, 0.0, True, api_name="/generate")
    request = written_request(html)
    spans = generated_spans(html)
    at = 30
    other = next(c for c, _, _ in json.loads(spans[at][1]["data-alternatives"]) if c != spans[at][0])
    chosen = branch(app_url, {**request, "choices": [[at, other]], "undo": [[]]})
    new_text, new_html, stats = chosen["data"]
    prefix = text[: len("JULIET:") + at] + other
    engine = Engine(SHIPPED_MODEL)
    assert new_text == prefix + engine.complete(prefix, SamplingParams(max_new_tokens=120, temperature=0.9, seed=21))[0]
    assert "1 chosen character" in stats and "Undo the last choice" in new_html
    assert generated_spans(new_html)[at][1]["class"] == "chargpt-chosen"
    assert generated_spans(new_html)[:at] == spans[:at]  # the text before the choice, alternatives and all
    undone = branch(app_url, {**request, "choices": [], "undo": []})["data"]
    assert undone[0] == text and undone[1] == html


@pytest.mark.parametrize(
    "change, message",
    [
        ({"choices": [[3, "\u2603"]]}, "'☃' is not among the characters the model considered at character 4."),
        (
            {"choices": [[3, "\ud800"]]},
            "'\ufffd' is not among the characters the model considered at character 4.",
        ),  # found by fuzzing
        ({"choices": [[500, "e"]]}, "There is no character 501 to choose at: the text before it has 40 characters."),
        (
            {"choices": [[5, "e"], [2, "a"]]},
            "The choices' positions must be whole numbers from 0, each after the one before.",
        ),
        ({"choices": "all of them"}, "Choices must be a list of at most 16"),
        ({"choices": [["5", "e"]]}, "Each choice must be a \\[position, character\\] pair"),
        ({"undo": 3}, "Undo must be a list of earlier choices."),
        ({"temperature": 99}, "Temperature must be between 0 \\(greedy\\) and 10, not 99."),
        (None, "A choice must come with the request that wrote the text."),
    ],
)
def test_a_choice_the_page_would_not_send_gets_a_sentence(app_url, change, message):
    request = {
        "prompt": "ROMEO:",
        "max_new_tokens": 40,
        "temperature": 0.8,
        "top_k": 0,
        "top_p": 1.0,
        "seed": 1,
        "min_p": 0.0,
        "choices": [],
        "undo": [],
    }
    answer = branch(app_url, None if change is None else {**request, **change}, session="bad-choice")
    assert re.search(message, answer["error"]), answer


def test_the_views_page_reads_the_alternatives_as_its_snippet_says(app_url):
    """docs/views.md's Python, run against this server, its last line printing all it read."""
    page = (REPO / "docs" / "views.md").read_text(encoding="utf-8")
    snippet = page[page.index("```python\n") + 10 : page.index("```", page.index("```python\n") + 10)]
    assert snippet.rstrip().endswith('print(text[len("ROMEO:")], reader.found[0])')
    snippet = (
        snippet.replace("http://127.0.0.1:7860/", app_url).rstrip().rpartition("\n")[0]
        + "\nprint(json.dumps([html, reader.found]))"
    )
    result = subprocess.run([sys.executable, "-c", snippet], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert result.returncode == 0, result.stderr
    html, found = json.loads(result.stdout.strip().splitlines()[-1])  # after gradio_client's "Loaded as API" line
    assert len(found) == 50 and found == [json.loads(a["data-alternatives"]) for _, a in generated_spans(html)]


def test_random_seed_is_reported(client):
    _, _, stats = client.predict("ROMEO:", 5, 0.8, 0, 1.0, -1, api_name="/generate")
    assert "seed " in stats
    assert "seed -1" not in stats


@pytest.mark.parametrize(
    "args, message",
    [
        (("x", 10**9, 0.8, 0, 1.0, 1), "Max_new_tokens must be a whole number from 1 to 2000, not 1000000000."),
        (("x", 10, -1, 0, 1.0, 1), "Temperature must be between 0 \\(greedy\\) and 10, not -1."),
        (("x", 10, 0.8, 0, 0, 1), "Top_p must be above 0 and at most 1"),
        (("x", 10, 0.8, 0, 2, 1), "Top_p must be above 0 and at most 1"),
        (("x", 10, 0.8, -5, 1.0, 1), "Top_k must be a whole number, 0 for off, not -5."),
        (("x", "ten", 0.8, 0, 1.0, 1), "Max_new_tokens must be a whole number from 1 to 2000, not 'ten'."),
        (("x", 10, 0.8, 0, 1.0, 1.5), "Seed must be a whole number"),
        (("x" * 100_000, 10, 0.8, 0, 1.0, 1), "The prompt is 100,000 characters; the limit is 10,000"),
        (("x", 10, 0.8, 0, 1.0, 1, 1.5), "Min_p must be between 0 \\(off\\) and 1, not 1.5."),
        (("x", 10, 0.8, 0, 1.0, 1, "some"), "Min_p must be between 0 \\(off\\) and 1, not 'some'."),
    ],
)
def test_bad_api_input_gets_a_sentence_not_a_server_error(client, args, message):
    with pytest.raises(Exception, match=message):
        client.predict(*args, api_name="/generate")


def test_a_refused_request_is_one_line_in_the_servers_log(client, served):
    _, _, log, _ = served
    before = log.read_text().splitlines()
    with pytest.raises(Exception, match="Max_new_tokens must be a whole number from 1 to 2000, not 100000."):
        client.predict("ROMEO:", 100_000, 0.8, 0, 1.0, 1, api_name="/generate")
    time.sleep(0.5)
    new = log.read_text().splitlines()[len(before) :]
    assert len(new) == 1, new
    assert new[0].endswith(
        " chargpt: refused a request: Max_new_tokens must be a whole number from 1 to 2000, not 100000."
    ), new
    assert "Traceback" not in log.read_text()


def test_the_page_presents_the_model_from_its_metadata(app_url):
    """The shipped model's own words (a model exported from another text: tests/test_readme.py)."""
    config = json.loads(urllib.request.urlopen(app_url + "config", timeout=30).read())
    assert config["title"] == "chargpt: Shakespeare, one character at a time"
    examples = [c["props"]["samples"] for c in config["components"] if c["type"] == "dataset"][0]
    assert examples == [
        ["ROMEO:"],
        ["JULIET:\nO Romeo, Romeo!"],
        ["First Citizen:\n"],
        ["KING RICHARD III:\n"],
        ["MENENIUS:"],
        ["PETRUCHIO:\n"],
    ]
    header = [c["props"]["value"] for c in config["components"] if c.get("props", {}).get("elem_id") == "about"][0]
    assert (
        "<p>A small character-level GPT trained on Tiny Shakespeare. Write the start of a scene and let it "
        "continue.</p>" in header
    )
    sliders = {
        c["props"]["label"]: (c["props"]["minimum"], c["props"]["maximum"], c["props"]["value"])
        for c in config["components"]
        if c["type"] == "slider"
    }
    assert sliders["Min-p (0 = off)"] == (0, 1, 0.0)
    # The model panel's training row, from the metadata: an averaged model says so (the card does too).
    training = OnnxModel(SHIPPED_MODEL).metadata["training"]
    panel = [
        c["props"]["value"] for c in config["components"] if "| training |" in str(c.get("props", {}).get("value"))
    ][0]
    row = next(line for line in panel.splitlines() if line.startswith("| training |"))
    averaged = f"; the mean of the weights at steps {steps_phrase(training['averaged_steps'])}"
    assert row == f"| training | {training['step']:,} steps, {training['tokens_seen']:,} characters{averaged} |"


def test_hostile_prompts_are_handled(client):
    from webapp.inference.onnx_model import SHIPPED_MODEL, OnnxModel

    text, colored, stats = client.predict("Café 🙂 <script>alert(1)</script>", 20, 0.8, 0, 1.0, 1, api_name="/generate")
    assert text.startswith("Café 🙂 <script>")
    assert "<script>" not in colored
    assert "&lt;" in colored  # escaped in the coloured view
    assert "replaced 'é'→'e'" in stats
    assert "dropped '🙂'" in stats
    text, _, _ = client.predict("", 20, 0.8, 0, 1.0, 1, api_name="/generate")
    assert text.startswith("\n")
    assert len(text) == 21
    reach = OnnxModel(SHIPPED_MODEL).receptive_field  # its layers' reach
    _, _, stats = client.predict("To be, or not to be. " * (reach // 20 + 5), 5, 0.8, 0, 1.0, 1, api_name="/generate")
    assert f"the model reads the last {reach} characters of the prompt" in stats
    assert client.predict("ROMEO:", 5, 0.8, 0, 1.0, 1, api_name="/generate")[0].startswith("ROMEO:")  # still healthy


def test_lone_surrogates_and_control_characters_in_raw_json(app_url):
    event, data = raw_generate(app_url, ["A\ud800B\U0001f642\x00\x1b[2J", 5, 0.8, 0, 1.0, 1])
    assert event == "complete", data
    text, _, stats = data
    assert text.startswith("A\ufffdB\U0001f642\x00\x1b[2J")
    assert "dropped" in stats


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda d: d / "missing.onnx", "missing.onnx does not exist"),
        (lambda d: (d / "plain.onnx").write_bytes(b"\x08\x07") and d / "plain.onnx", "is not a readable ONNX model"),
    ],
)
def test_a_bad_model_at_start_up_is_one_sentence(tmp_path, make, message):
    path = make(tmp_path)
    result = subprocess.run(
        [sys.executable, "-m", "webapp", "--model", str(path), "--port", str(free_port())],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert result.stderr.startswith("python -m webapp: error: ")
    assert message in result.stderr
    assert result.stderr.count("\n") == 1


def test_generate_command_prints_a_reproducible_sample():
    from webapp.server.cli import main

    cmd = [
        sys.executable,
        "-m",
        "webapp",
        "generate",
        "--prompt",
        "ROMEO:",
        "--seed",
        "3",
        "--max-new-tokens",
        "80",
        "--min-p",
        "0.02",
    ]
    first = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert first.returncode == 0, first.stderr
    assert first.stdout.startswith("ROMEO:")
    assert len(first.stdout) == len("ROMEO:") + 80 + 1
    assert subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=120).stdout == first.stdout
    assert main([*cmd[3:-2], "--min-p", "2"]) == 2  # a refused setting: one sentence, exit code 2


def test_stop_reaches_the_running_or_queued_generation_and_is_forgotten_after():
    """StopPresses, as the page's events drive it (the browser test below presses the buttons)."""
    from types import SimpleNamespace as Request

    stops, alice, bob = StopPresses(), Request(session_hash="alice"), Request(session_hash="bob")
    stops.stop_pressed(alice)  # nothing running: forgotten
    stops.generate_pressed(alice)
    flag = stops.flag("alice")
    assert not flag.is_set()
    stops.generate_pressed(alice)  # pressed again while it runs (Gradio ignores it): Stop still reaches it
    assert stops.flag("alice") is flag
    stops.stop_pressed(bob)  # another visitor's Stop
    assert not flag.is_set()
    stops.stop_pressed(alice)  # while queued or running: the generation sees it
    assert flag.is_set() and stops.flag("alice") is flag
    stops.generate_pressed(alice)  # Generate again before the stopped one has finished
    assert not stops.flag("alice").is_set()
    stops.finished("alice", flag)  # the stopped one's end leaves the new flag
    assert not stops.flag("alice").is_set() and len(stops) == 1
    stops.finished("alice", stops.flag("alice"))
    assert len(stops) == 0
    assert not stops.flag(None).is_set()  # an API call without a session: a flag of its own
    assert len(stops) == 0
    for n in range(StopPresses.MAX_SESSIONS + 10):  # Generate pressed, the request never ran
        stops.generate_pressed(Request(session_hash=f"visitor {n}"))
    assert len(stops) == StopPresses.MAX_SESSIONS


def assert_stopped_cleanly(page, prompt: str) -> None:
    """After Stop: the stats line says so, no output shows Gradio's "Error", and the plain
    text is the coloured text (the generation ended as a finished one does)."""
    page.wait_for_function("() => document.querySelector('#stats').innerText.includes('stopped')", timeout=30_000)
    assert "Error" not in page.locator("body").inner_text()
    plain = page.locator("#output textarea").input_value()
    assert plain.startswith(prompt)
    assert page.locator("#colored").inner_text().replace("\n", "") == plain.replace("\n", "")


# Asked for by Gradio's page and its API view, which do without them: Gradio answers the first
# 404 itself when MCP is off, and the second feeds the API view's latency figures.
OPTIONAL_ROUTES = {("GET", "/gradio_api/mcp/schema"), ("GET", "/monitoring/summary")}


@dataclass
class AppPage:
    """The served page open in Chromium (one browser for this file's page tests), and every
    (method, path) it has asked the server for."""

    page: object
    requested: set


@pytest.fixture(scope="class")
def app_page(app_url):
    from urllib.parse import urlsplit

    from playwright.sync_api import sync_playwright

    chromium = chromium_or_skip()
    requested = set()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1000})
            page.on(
                "request",
                lambda r: requested.add((r.method, urlsplit(r.url).path)) if r.url.startswith(app_url) else None,
            )
            page.goto(app_url, wait_until="networkidle")
            yield AppPage(page, requested)
        finally:
            browser.close()


def set_prompt_and_length(page, prompt: str, length: int) -> None:
    page.get_by_label("Prompt").fill(prompt)
    field = page.locator("input[type=number]").first  # "Characters to generate"
    field.fill(str(length))
    field.press("Enter")


class TestTheServedPageInChromium:
    """One page in one browser for these tests (a class: its event loop ends with them)."""

    def test_the_page_streams_text_in_a_real_browser(self, app_page):
        page = app_page.page
        set_prompt_and_length(page, "JULIET:\n", 2000)
        # The text's lengths are sampled inside the page, every 5 ms: a poll from here takes a
        # round trip per look, and on busy cores it can miss all but one of a fast text's updates.
        page.evaluate("""() => { window.lengths = []; window.sampler = setInterval(() =>
            window.lengths.push(document.querySelector('#output textarea')?.value.length ?? 0), 5); }""")
        page.get_by_role("button", name="Generate").click()
        full = len("JULIET:\n") + 2000
        page.wait_for_function(f"document.querySelector('#output textarea').value.length >= {full}", timeout=60_000)
        sizes = page.evaluate("() => { clearInterval(window.sampler); return window.lengths; }")
        sizes.append(len(page.locator("#output textarea").input_value()))
        growing = sorted(set(s for s in sizes if 0 < s < full))
        assert len(growing) >= 3, f"text did not stream: sizes seen {sorted(set(sizes))}"
        assert sizes[-1] == full
        assert page.locator("#output textarea").input_value().startswith("JULIET:\n")
        page.wait_for_function("() => document.querySelector('#stats').innerText.includes('2000 characters in')")
        assert page.locator("#colored span[title]").count() >= 2000

    def test_stop_ends_a_generation_half_way_in_a_real_browser(self, app_page):
        """The text stops growing short of its length. Stop is clicked from the page itself the
        moment text arrives, so that the click cannot lose a race with a fast machine finishing the
        2000 characters first."""
        page = app_page.page
        set_prompt_and_length(page, "ROMEO:\n", 2000)
        page.get_by_role("button", name="Generate").click()
        page.wait_for_function(
            """() => {
            const t = document.querySelector('#output textarea').value;
            if (!(t.startsWith('ROMEO:') && t.length > 30)) return false;
            [...document.querySelectorAll('button')].find(b => b.innerText.trim() === 'Stop').click();
            return true;
        }""",
            polling="raf",
        )
        page.wait_for_timeout(1500)
        stopped = len(page.locator("#output textarea").input_value())
        page.wait_for_timeout(1000)
        assert len(page.locator("#output textarea").input_value()) == stopped < len("ROMEO:\n") + 2000
        assert_stopped_cleanly(page, "ROMEO:\n")

    def test_stop_pressed_before_any_text_still_stops_in_a_real_browser(self, app_page):
        """Stop a tenth of a second after Generate (Gradio's own cancel sometimes lost such a press,
        or showed "Error")."""
        page = app_page.page
        set_prompt_and_length(page, "JULIET:\n", 2000)
        page.evaluate("""() => {
            const button = name => [...document.querySelectorAll('button')].find(b => b.innerText.trim() === name);
            button('Generate').click();
            setTimeout(() => button('Stop').click(), 100);
        }""")
        page.wait_for_function(
            """() => document.querySelector('#output textarea').value.startsWith('JULIET:')
            && document.querySelector('#stats').innerText.includes('stopped')""",
            timeout=30_000,
        )
        assert_stopped_cleanly(page, "JULIET:\n")
        assert len(page.locator("#output textarea").input_value()) < len("JULIET:\n") + 2000

    def test_the_model_panel_and_the_api_view_open_in_a_real_browser(self, app_page):
        page = app_page.page
        page.get_by_text("About the model").click()
        page.get_by_text("validation loss").wait_for()
        page.wait_for_timeout(500)
        SCREENSHOTS.mkdir(exist_ok=True)
        page.screenshot(path=str(SCREENSHOTS / "webapp.png"), full_page=True)
        page.get_by_text("Use via API").first.click()
        page.get_by_text("API documentation").wait_for()
        assert "/generate" in page.locator("body").inner_text()

    def test_the_page_asks_only_for_routes_the_server_keeps_open(self, app_page):
        """Every request the page makes, over this file's visits and a generation of its own, is to
        a route the server keeps open (webapp/server/routes.py)."""
        from webapp.server.routes import is_open

        page = app_page.page
        page.reload(wait_until="networkidle")
        set_prompt_and_length(page, "ROMEO:\n", 20)
        page.get_by_role("button", name="Generate").click()
        page.wait_for_function("document.querySelector('#output textarea').value.length >= 27", timeout=60_000)
        requested = app_page.requested
        assert {r for r in requested if not is_open(*r)} <= OPTIONAL_ROUTES
        assert ("POST", "/gradio_api/queue/join") in requested and ("GET", "/gradio_api/queue/data") in requested


slow_venv = pytest.mark.skipif(
    os.environ.get("CHARGPT_VENV_TEST") != "1",
    reason="slow (installs requirements.txt into a new venv): set CHARGPT_VENV_TEST=1; "
    "test_the_server_runs_on_requirements_txt_alone checks the same in seconds",
)


@pytest.fixture(scope="module")
def requirements_python(tmp_path_factory) -> Path:
    """The Python of a new virtual environment with requirements.txt alone installed."""
    venv = tmp_path_factory.mktemp("venv") / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    py = venv / "bin" / "python"
    install = [str(py), "-m", "pip", "install", "--quiet", "-r", str(REPO / "requirements.txt")]
    done = subprocess.run(install, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-2000:]
    return py


def run_in_repo(*args) -> subprocess.CompletedProcess:
    return subprocess.run([str(a) for a in args], cwd=REPO, capture_output=True, text=True, timeout=120)


@slow_venv
def test_the_app_imports_from_requirements_txt_alone_without_torch(requirements_python):
    imports = (
        "import importlib.util as u; assert u.find_spec('torch') is None; import webapp.app, webapp.inference.engine"
    )
    check = run_in_repo(requirements_python, "-c", imports + "; print('ok')")
    assert check.stdout.strip() == "ok", check.stderr


@slow_venv
def test_the_cli_generates_from_requirements_txt_alone(requirements_python, exported):
    sample = run_in_repo(
        requirements_python,
        "-m",
        "webapp",
        "generate",
        "--model",
        exported[1],
        "--prompt",
        "ROMEO:",
        "--max-new-tokens",
        "40",
    )
    assert sample.returncode == 0, sample.stderr
    assert sample.stdout.startswith("ROMEO:"), sample.stderr


@slow_venv
def test_the_app_starts_as_a_space_starts_it_from_requirements_txt_alone(requirements_python, exported):
    port = free_port()
    proc = subprocess.Popen(
        [str(requirements_python), "webapp/app.py", "--model", str(exported[1]), "--port", str(port)],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for_page(f"http://127.0.0.1:{port}/", proc)
    finally:
        proc.terminate()
        proc.wait(timeout=30)


# With every installed package outside `allowed` hidden (a venv holding requirements.txt alone),
# the server, started as the CLI starts it, answers one request; then the modules it loaded.
SERVE_WITH_ONLY = """
import importlib.abc, json, os, sys
from importlib.metadata import packages_distributions
from packaging.utils import canonicalize_name

allowed = set(json.loads(sys.argv[2]))
hidden = {module for module, dists in packages_distributions().items()
          if not {canonicalize_name(d) for d in dists} & allowed and module not in sys.stdlib_module_names}
at_start = set(sys.modules)

class Hidden(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in hidden:
            raise ModuleNotFoundError(f"No module named {name!r} (not in requirements.txt)", name=name)

sys.meta_path.insert(0, Hidden())
import urllib.request
from webapp.inference.engine import Engine
from webapp.inference.onnx_model import SHIPPED_MODEL
from webapp.server.launch import launch
from webapp.server.page import build_demo

engine = Engine.for_server(SHIPPED_MODEL)
launch(build_demo(engine), engine.path, port=int(sys.argv[1]), prevent_thread_lock=True)
url = f"http://127.0.0.1:{sys.argv[1]}/gradio_api/call/generate"
body = json.dumps({"data": ["ROMEO:", 20, 0.8, 0, 1.0, 1, 0.0]}).encode()
request = urllib.request.Request(url, body, {"Content-Type": "application/json"})
event = json.loads(urllib.request.urlopen(request).read())
answer = urllib.request.urlopen(f"{url}/{event['event_id']}").read().decode()
assert "event: complete" in answer, answer
print(json.dumps(sorted({name.split(".")[0] for name in set(sys.modules) - at_start})), flush=True)
os._exit(0)  # the server's threads are still running: no interpreter shutdown under them
"""


def requirement_closure(requirements: Path) -> set[str]:
    """The distributions a requirements file installs: its own and, recursively, theirs (as
    installed here, markers evaluated for no extra), normalised names."""
    from importlib.metadata import PackageNotFoundError, requires

    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    todo = [
        Requirement(line.split("#")[0].strip())
        for line in requirements.read_text().splitlines()
        if line.split("#")[0].strip() and not line.startswith("-")
    ]
    found: set[str] = set()
    while todo:
        requirement = todo.pop()
        name = canonicalize_name(requirement.name)
        if name in found or (requirement.marker and not requirement.marker.evaluate({"extra": ""})):
            continue
        found.add(name)
        try:
            todo += [Requirement(r) for r in requires(name) or []]
        except PackageNotFoundError:
            pass  # an optional dependency that is not installed here: nothing can import it
    return found


def test_the_server_runs_on_requirements_txt_alone():
    """What a Space installs is requirements.txt: with every other installed package hidden, the
    server (its page, API and model process) starts and answers a request, and loads no torch
    and none of the training code. (The opt-in test above installs a real venv.)"""
    allowed = requirement_closure(REPO / "requirements.txt")
    assert {"gradio", "onnxruntime", "numpy"} <= allowed and "torch" not in allowed
    result = subprocess.run(
        [sys.executable, "-c", SERVE_WITH_ONLY, str(free_port()), json.dumps(sorted(allowed))],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    loaded = set(json.loads(result.stdout.strip().splitlines()[-1]))
    assert {"gradio", "onnxruntime", "numpy", "webapp"} <= loaded
    assert not loaded & {"torch", "train", "export", "benchmarks", "matplotlib"}


def test_bad_queue_settings_are_one_sentence():
    result = subprocess.run(
        [sys.executable, "-m", "webapp", "--queue-size", "-1"], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1
    assert f"--queue-size at least 0, not {CONCURRENCY} and -1" in result.stderr


# --- the security review's checks (docs/reliability.md) ----------------------------------------------


def listening_addresses(port: int) -> set[str]:
    """The local IPv4 addresses a TCP port listens on, from /proc/net/tcp (Linux)."""
    found = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        local, state = line.split()[1], line.split()[3]
        address, hex_port = local.split(":")
        if int(hex_port, 16) == port and state == "0A":  # LISTEN
            found.add(".".join(str(b) for b in reversed(bytes.fromhex(address))))
    return found


def test_the_server_listens_on_loopback_only(app_url):
    assert listening_addresses(int(app_url.rsplit(":", 1)[1].strip("/"))) == {"127.0.0.1"}


def http_status(url: str) -> int:
    return request_status(url)[0]


def test_no_file_outside_the_served_ones_can_be_read(app_url):
    from webapp.inference.onnx_model import SHIPPED_MODEL

    model = SHIPPED_MODEL / "onnx" / "model.onnx"
    file_url = app_url + "gradio_api/file="
    assert http_status(file_url + str(model.with_suffix(".loss.png"))) == 200  # the page shows it
    for path in (
        "/etc/passwd",
        str(model),
        str(model.with_suffix(".json")),
        str(REPO / "README.md"),
        f"{model.parent}/../{model.parent.name}/{model.name}",
        str(model.with_suffix(".loss.png")) + "/../" + model.name,
    ):
        assert http_status(file_url + path) in (403, 404), path


def test_an_oversized_request_is_refused_before_it_is_read(app_url):
    event, body = raw_generate(app_url, ["x" * (5 * 2**20), 10, 0.8, 0, 1.0, 1])  # 5 MB; the limit is 1 MB
    assert event == "http 413"
    assert "a prompt may have at most 10,000 characters" in json.loads(body)["detail"]
    assert raw_generate(app_url, ["ROMEO:", 5, 0.8, 0, 1.0, 1])[0] == "complete"


def test_an_oversized_chunked_request_is_counted_and_refused(app_url):
    import http.client

    host, port = app_url.split("//")[1].strip("/").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=60)
    chunks = (
        b'{"data": ["' + b"x" * 100_000 if i == 0 else b"x" * 100_000 for i in range(20)
    )  # 2 MB, no Content-Length
    connection.request(
        "POST",
        "/gradio_api/call/generate",
        body=chunks,
        encode_chunked=True,
        headers={"Content-Type": "application/json"},
    )
    response = connection.getresponse()
    assert response.status == 413
    assert "a prompt may have at most" in json.loads(response.read())["detail"]


def files_under(folder: Path) -> dict[str, int]:
    return {str(f.relative_to(folder)): f.stat().st_size for f in folder.rglob("*") if f.is_file()}


JSON_HEADERS = {"Content-Type": "application/json"}


def request_status(
    url: str, method: str = "GET", body: bytes | None = None, headers: dict | None = None
) -> tuple[int, str]:
    request = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=30) as r:
            return r.status, r.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode("utf-8", "replace")


def join_queue(url: str, fn_index: int, data: list, session_hash: str) -> tuple[int, str]:
    """Join Gradio's queue as the page does (the stream is read, or not, with the session)."""
    body = {"data": data, "fn_index": fn_index, "session_hash": session_hash, "event_data": None, "trigger_id": None}
    return request_status(url + "gradio_api/queue/join", "POST", json.dumps(body).encode(), JSON_HEADERS)


def test_uploads_and_routes_the_page_does_not_use_are_refused(served):
    """Anonymous uploads are refused before a byte reaches the disk, as is every route that
    neither the page nor its API uses (webapp/server/routes.py); Gradio's temporary folder
    holds only the loss curve it serves."""
    url, _, _, temp = served
    before = files_under(temp)
    assert [name.rsplit("/", 1)[-1] for name in before] == ["model.loss.png"]
    upload = (
        b'--b\r\nContent-Disposition: form-data; name="files"; filename="a.bin"\r\n\r\n'
        + b"x" * 900_000
        + b"\r\n--b--\r\n"
    )
    for _ in range(40):
        status, body = request_status(
            url + "gradio_api/upload", "POST", upload, {"Content-Type": "multipart/form-data; boundary=b"}
        )
        assert (status, json.loads(body)["detail"]) == (
            403,
            "This server takes no uploads: its page and API need no files.",
        )
    assert files_under(temp) == before
    for method, path in [
        ("GET", "gradio_api/upload_progress?upload_id=x"),
        ("GET", "monitoring"),
        ("GET", "openapi.json"),
        ("GET", "gradio_api/proxy=https://example.com/x"),
        ("POST", "gradio_api/stream/x/close"),
        ("POST", "gradio_api/process_recording"),
        ("POST", "gradio_api/vibe-edit"),
        ("GET", "gradio_api/runs"),
        ("POST", "gradio_api/component_server"),
        ("POST", "login"),
        ("GET", "gradio_api/file/README.md"),
        ("PUT", "config"),
        ("DELETE", "config"),
        ("TRACE", ""),
        ("GET", "x" * 20_000),
    ]:
        status, body = request_status(url + path, method, b"{}" if method != "GET" else None)
        assert status in (403, 404), (method, path, status)
        assert json.loads(body)["detail"], (method, path)
    assert request_status(url + "gradio_api/info")[0] == 200
    assert raw_generate(url, ["ROMEO:", 5, 0.8, 0, 1.0, 1])[0] == "complete"


def test_the_client_uses_only_open_routes(client, served):
    """gradio_client's calls (submit, stream, cancel, the API's description) meet no closed
    route: the server logs none of them as refused."""
    _, _, log, _ = served
    before = len(log.read_text().splitlines())
    client.view_api(print_info=False)
    job = client.submit("ROMEO:", 2000, 0.8, 0, 1.0, 1, api_name="/generate")
    time.sleep(0.5)
    job.cancel()
    assert client.predict("ROMEO:", 20, 0.8, 0, 1.0, 1, api_name="/generate")[0].startswith("ROMEO:")
    time.sleep(0.5)
    assert [line for line in log.read_text().splitlines()[before:] if "closed route" in line] == []


def test_a_session_stalls_when_its_oldest_message_waits_the_stall_time():
    from webapp.server.stalled import stalled_sessions

    first, second, third = object(), object(), object()
    stalled, seen = stalled_sessions({"a": first}, {}, now=100.0, stall_s=5)
    assert stalled == []
    stalled, seen = stalled_sessions({"a": first, "b": second}, seen, now=104.9, stall_s=5)
    assert stalled == []
    stalled, seen = stalled_sessions({"a": first, "b": second}, seen, now=105.0, stall_s=5)
    assert stalled == ["a"]  # b arrived at 104.9
    stalled, seen = stalled_sessions({"a": third, "b": second}, seen, now=109.0, stall_s=5)
    assert stalled == []  # a's client read: its clock starts again
    stalled, seen = stalled_sessions({"b": second}, seen, now=110.0, stall_s=5)
    assert stalled == ["b"] and set(seen) == {"b"}  # a read everything: forgotten


def test_the_event_ids_of_a_stream_that_went_away_are_forgotten_once_its_events_end():
    from webapp.server.stalled import orphaned_sessions

    pending = {"reading": {"e1"}, "left, still running": {"e2"}, "left, done": {"e3"}}
    assert orphaned_sessions(pending, queued={"reading"}, live_events={"e1", "e2"}) == ["left, done"]


def test_a_session_with_a_request_in_flight_outlives_gradios_eviction_of_old_sessions():
    """Gradio keeps message queues for its last 2,000 sessions, ordered by each one's first
    request: a sweep moves the sessions still waiting for an answer to the newest end, so that
    those evicted are answered ones (a long-lived visitor's stream broke mid-answer otherwise:
    the 30-minute soak's CancelledErrors, docs/reliability.md)."""
    import asyncio
    from types import SimpleNamespace

    from gradio.utils import LRUCache

    from webapp.server.stalled import sweep

    queue = SimpleNamespace(
        pending_messages_per_session=LRUCache(3), pending_event_ids_session={}, event_ids_to_events={"e0": object()}
    )
    for session in ["visitor", "done 1", "done 2"]:
        queue.pending_messages_per_session[session] = asyncio.Queue()
    queue.pending_event_ids_session["visitor"] = {"e0"}  # asked, not yet answered
    asyncio.run(sweep(queue, {}, now=0.0))
    queue.pending_messages_per_session["new"] = asyncio.Queue()  # a fourth session: one must go
    assert list(queue.pending_messages_per_session) == ["done 2", "visitor", "new"]


def test_clients_that_never_read_their_stream_lose_their_rows(served):
    """Six clients join the queue for 2,000 characters each and never read (a script's
    stalled streams), two more call the plain HTTP API and never fetch the result: after
    STALL_S their generations end, so the server's cores go back to idle long before the
    2,000 characters would have been written, their undelivered messages are dropped, and a
    visitor is served as before."""
    url, server, log, _ = served
    before = len(log.read_text().splitlines())
    fn_index = fn_index_of(url, "generate")
    for i in range(6):
        status, body = join_queue(url, fn_index, ["ROMEO:", 2000, 0.8, 0, 1.0, i, 0.0], f"stalled{i}")
        assert status == 200, body
    for i in range(2):
        status, body = request_status(
            url + "gradio_api/call/generate",
            "POST",
            json.dumps({"data": ["JULIET:", 2000, 0.8, 0, 1.0, i]}).encode(),
            {"Content-Type": "application/json"},
        )
        assert status == 200, body
    assert cpu_share(server.pid, 0.5) >= 0.3  # generating for them (a core or more, less beside a busy test worker)
    time.sleep(STALL_S + 2)
    ended = [line for line in log.read_text().splitlines()[before:] if "ended a stream nobody read" in line]
    assert len(ended) == 8, ended
    assert cpu_share(server.pid, 2.0) < 0.25
    assert raw_generate(url, ["ROMEO:", 5, 0.8, 0, 1.0, 1])[0] == "complete"


def test_clients_that_read_a_byte_a_second_cost_the_server_nothing_once_their_text_is_done(served):
    """Four clients join for 1,000 characters each and read their streams a byte a second (a
    receive buffer of 1 KB): their generations run at full speed and end, the server process
    lets go of their connections while they still have most of their streams to read (the
    rest waits in the kernel's socket buffers), and a visitor is served meanwhile."""
    url, server, *_ = served
    host, port = url.split("//")[1].strip("/").split(":")
    fn_index = fn_index_of(url, "generate")
    readers, stop = [], threading.Event()
    for i in range(4):
        status, body = join_queue(url, fn_index, ["ROMEO:", 1000, 0.8, 0, 1.0, i, 0.0], f"slow{i}")
        assert status == 200, body
        reader = socket.socket()
        reader.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1024)
        reader.connect((host, int(port)))
        reader.sendall(f"GET /gradio_api/queue/data?session_hash=slow{i} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
        readers.append(reader)

    def read_a_byte_a_second():
        while not stop.wait(1.0):
            for reader in readers:
                reader.recv(1)

    threading.Thread(target=read_a_byte_a_second, daemon=True).start()
    ports = {r.getsockname()[1] for r in readers}
    try:
        deadline = time.monotonic() + 30  # a connection waits in the listen backlog until the server accepts it
        while not ports <= peer_ports(server.pid) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert ports <= peer_ports(server.pid)  # the server holds their streams ...
        assert cpu_share(server.pid, 0.5) >= 0.3  # ... and generates for them
        assert raw_generate(url, ["ROMEO:", 5, 0.8, 0, 1.0, 1])[0] == "complete"
        deadline = time.monotonic() + 120
        while ports & peer_ports(server.pid) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert not ports & peer_ports(server.pid)  # the server closed them: their streams were written out
        assert cpu_share(server.pid, 2.0) < 0.25
        for reader in readers:  # ... and are still there to read, far ahead of the readers
            assert len(reader.recv(65536, socket.MSG_PEEK | socket.MSG_DONTWAIT)) > 0
    finally:
        stop.set()
        for reader in readers:
            reader.close()


def peer_ports(pid: int) -> set[int]:
    """The remote ports of the TCP connections a process holds open (Linux /proc)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):
            if (target := os.readlink(fd)).startswith("socket:["):
                inodes.add(target[8:-1])
    ports = set()
    for table in ("tcp", "tcp6"):
        for line in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            if fields[9] in inodes:
                ports.add(int(fields[2].rsplit(":", 1)[1], 16))
    return ports


def cpu_share(pid: int, seconds: float) -> float:
    """Cores a process keeps busy over the next `seconds`."""
    start = cpu_seconds(pid)
    time.sleep(seconds)
    return (cpu_seconds(pid) - start) / seconds


def test_a_visitor_who_disconnects_costs_nothing_after_the_disconnect(tmp_path, served):
    """A visitor's process killed mid-stream (a closed tab, a dropped connection): the server
    stops generating for it, so its cores fall back to what they use idle."""
    url, server, *_ = served
    visitor = tmp_path / "visitor.py"
    visitor.write_text(
        "import sys, time\nfrom gradio_client import Client\n"
        "Client(sys.argv[1], verbose=False).submit('ROMEO:', 2000, 0.8, 0, 1.0, 1, api_name='/generate')\n"
        "time.sleep(600)\n"
    )
    idle = cpu_share(server.pid, 1.0)
    process = subprocess.Popen([sys.executable, str(visitor), url], cwd=REPO)
    try:
        deadline = time.time() + 60
        while (busy := cpu_share(server.pid, 0.5)) < 0.5 and time.time() < deadline:
            pass  # until it generates
    finally:
        process.kill()
        process.wait()
    time.sleep(0.5)
    after = cpu_share(server.pid, 2.0)
    assert busy >= 0.5  # it was generating for the visitor: about a core or more
    assert after < max(0.25, 2 * idle)


def test_the_server_settles_matplotlib_before_its_first_visitor():
    """Gradio asks matplotlib for its backend around each request, and the first ask imports
    pyplot (most of a second here): launch asks first, so that no visitor waits for it."""
    pytest.importorskip("matplotlib")
    script = (
        "import sys\nfrom webapp.server.launch import settle_matplotlib\n"
        "before = 'matplotlib.pyplot' in sys.modules\nsettle_matplotlib()\nprint(before, 'matplotlib.pyplot' in "
        "sys.modules)"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, cwd=REPO, check=True
    )
    assert result.stdout.split() == ["False", "True"]
