"""The commands of the README and of docs/, run as written on a fresh clone (`git clone` of this
repository into a temporary folder, with ../shared beside it), shortened only where they train or
benchmark.

Every line of every ```bash block is either run (as written, with flags appended that shorten
it, or as a server that is started, asked for a page and stopped) or skipped for a reason
written here (it installs packages or needs the network). A new command that no rule covers
fails `test_every_command_has_a_rule`, so the README and the docs cannot drift from what works.
The blocks run in groups of sections (GROUPS), each group on a clone of its own, so that pytest's
processes can share them out; within a group, blocks run in the order of the README and then of
DOCS (the docs build on the README's runs).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import REPO, SHARED
from helpers import free_port, wait_for_page

README = REPO / "README.md"
DOCS = ["serving.md", "views.md", "speed.md", "model-folder.md", "training.md", "reliability.md", "architecture.md"]
VENV_BIN = Path(sys.executable).parent
OWN_TEXT = "Your own text"


# Which sections' commands run together, on one clone (a section: its document and heading).
GROUPS = {
    "own text": [("README.md", OWN_TEXT)],
    "serving": [
        ("README.md", "Quickstart"),
        ("README.md", "The page and its API"),
        ("docs/serving.md", "*"),
        ("docs/views.md", "*"),
    ],
    "train and export": [
        ("README.md", "Train"),
        ("README.md", "Export"),
        ("docs/model-folder.md", "*"),
        ("docs/training.md", "*"),
    ],
    "speed and soak": [("docs/speed.md", "*"), ("docs/reliability.md", "*")],
}


def documents() -> list[tuple[str, str]]:
    """(name, text) of the README, then of every page of docs/ (each must be in DOCS: none is
    left unrun)."""
    pages = sorted(p.name for p in (REPO / "docs").glob("*.md"))
    assert pages == sorted(DOCS), pages
    return [
        ("README.md", README.read_text(encoding="utf-8")),
        *((f"docs/{name}", (REPO / "docs" / name).read_text(encoding="utf-8")) for name in DOCS),
    ]


def group_of(document: str, heading: str) -> str | None:
    return next(
        (g for g, sections in GROUPS.items() for d, h in sections if d == document and h in (heading, "*")), None
    )


def blocks_of(group: str) -> list[list[str]]:
    return [
        block for name, text in documents() for heading, block in bash_blocks(text) if group_of(name, heading) == group
    ]


def bash_blocks(readme: str) -> list[tuple[str, list[str]]]:
    """(the section's heading, the block's lines) of each ```bash block, comments kept."""
    blocks, heading = [], ""
    lines = iter(readme.splitlines())
    for line in lines:
        if line.startswith("#"):
            heading = line.lstrip("#").strip()
        elif line.startswith("```"):  # a fenced block: its lines are code, never headings
            block = []
            for inner in lines:
                if inner.strip() == "```":
                    break
                block.append(inner)
            if line.strip() == "```bash":
                blocks.append((heading, [b for b in block if b.strip()]))
    return blocks


@dataclass
class Rule:
    """How the test runs a README line that starts with `prefix`."""

    prefix: str
    how: str  # "run" (append `extra`), "server" (start, fetch `page`, stop), "cd", or "skip"
    extra: str = ""
    page: str = ""
    why: str = ""  # for "skip": why the line cannot run here
    stop: str = "kill"  # for "server": how a user stops it: "kill" (SIGTERM) or "ctrl-c" (SIGINT to its process group)


# Learned positions: export and eval run a window per character, so a short window keeps them quick.
SHORT_TRAINING = "--max-iters 30 --eval-iters 2 --n-layer 1 --block-size 8"
# The presets' own flags and data, on a model that trains in seconds and whose window (32, not the
# presets' 128) keeps export's checks quick.
TINY_MODEL = "--eval-iters 1 --batch-size 4 --n-layer 1 --n-embd 48 --n-head 6 --block-size 32"
RULES = [
    Rule("make test", "skip", why="it runs this test suite"),
    Rule("make serve MODEL=", "server", extra="VENV={venv} -o {venv}/.app-installed", page="config"),
    Rule("make serve", "server", extra="VENV={venv} -o {venv}/.app-installed", page="config", stop="ctrl-c"),
    Rule("make model DATA=mine.txt", "skip", why="the command that 'Your own text' runs on faust.txt"),
    Rule(
        "make model", "run", extra=f"MINUTES=0.05 TRAIN_FLAGS='{TINY_MODEL}' VENV={{venv}} -o {{venv}}/.train-installed"
    ),
    Rule("pip install", "skip", why="the test's environment holds what the README installs; no package downloads here"),
    Rule("curl ", "skip", why="no network here: the test writes pg2229.txt itself, in Project Gutenberg's layout"),
    Rule("git clone https://huggingface.co", "skip", why="pushing to a Space needs the network and an account"),
    Rule("cd chargpt-static", "skip", why="pushing to a Space needs the network and an account"),
    Rule("npm ci", "skip", why="node_modules is linked from the checkout under test (npm ci downloads)"),
    Rule("cd ", "cd"),
    Rule("python -m webapp generate", "run"),
    Rule("python -m webapp", "server", page="config"),
    Rule("python -m http.server", "server", page="model/model.json"),
    # A queue of 3 holds the load phase's 3 clients even when they all arrive before Gradio moves
    # the first into the running slot (it counts only waiting requests; with 2, the third of three
    # joins handled back to back was turned away once in CI); 12 at once then overflow it.
    Rule(
        "python -m benchmarks.load",
        "run",
        extra="--clients 3 --chars 20 --alone-rounds 1 --concurrency 1 --queue-size 3 --burst 12 --burst-chars 800",
    ),
    # The page's row is tested in test_benchmarks.py; here it would only add a browser's start.
    Rule("python -m benchmarks.generation", "run", extra="--chars 10 --prompt-chars 20 --runs 1 --batch 1 --no-page"),
    Rule("python -m benchmarks.drafts", "run", extra="--chars 60 --seeds 2 --runs 1 --temperatures 0 0.8"),
    Rule(
        "python -m benchmarks.soak",
        "run",
        extra="--minutes 0.2 --warmup-minutes 0.05 --visitors 2 --sample-seconds 2 --stall-seconds 2",
    ),
    Rule("python -m train --preset seed-0.2m", "run", extra=SHORT_TRAINING),
    Rule("python -m train --preset shakespeare-cpu", "run", extra=f"--time-budget 0.01 {TINY_MODEL}"),
    Rule(
        "python -m train --preset quick",
        "skip",
        why="make model runs --preset quick, with its own flags and data, in 'Your own text'",
    ),
    Rule("python -m train.average", "run"),
    Rule("python -m train.gpu_check", "skip", why="it needs a CUDA GPU; tests/test_gpu_check.py runs its --dry-run"),
    Rule("torchrun", "run", extra=f"--max-iters 2 {TINY_MODEL}"),
    Rule("python -m export", "run"),
    Rule("python ../shared/tools/check_onnx_contract.py", "run"),
    Rule("sed ", "run"),
    Rule("node ", "run"),
]


def rule_for(line: str) -> Rule:
    return next((r for r in RULES if line.startswith(r.prefix)), None)


def test_the_readme_is_read_in_five_minutes():
    """At most 15,000 bytes: what a user needs; the details are in docs/, linked from it."""
    readme = README.read_text(encoding="utf-8")
    assert len(readme.encode("utf-8")) <= 15_000
    assert all(f"(docs/{name})" in readme for name in DOCS)


def test_every_command_has_a_rule_and_a_group():
    blocks = [(name, heading, block) for name, text in documents() for heading, block in bash_blocks(text)]
    assert sum(len(block) for _, _, block in blocks) > 20
    assert [line for _, _, block in blocks for line in block if rule_for(line) is None] == []
    assert [(name, heading) for name, heading, _ in blocks if group_of(name, heading) is None] == []


# -- running them on a fresh clone ---------------------------------------------------------


@pytest.fixture(scope="module")
def clone(tmp_path_factory) -> Path:
    """A fresh clone of the committed repository, with ../shared beside it, node_modules linked
    from this checkout, and an empty cache: the README's commands pass their texts with --data,
    so none may need the copy of Tiny Shakespeare that `python -m train` without --data caches."""
    root = tmp_path_factory.mktemp("fresh")
    subprocess.run(["git", "clone", "-q", str(REPO), str(root / "chargpt")], check=True, timeout=120)
    (root / "shared").symlink_to(SHARED.resolve())
    node_modules = REPO / "webapp" / "web" / "node_modules"
    if node_modules.is_dir():
        (root / "chargpt" / "webapp" / "web" / "node_modules").symlink_to(node_modules)
    (root / "cache").mkdir()
    return root / "chargpt"


def environment(clone: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "GRADIO_SERVER_PORT", "VIRTUAL_ENV")}
    return dict(
        env,
        PATH=f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}",
        CHARGPT_CACHE=str(clone.parent / "cache"),
        CHARGPT_SHAKESPEARE_URL=(clone.parent / "no-download").as_uri(),  # none of them downloads
        CHARGPT_SHARED=str(clone.parent / "shared"),
        GRADIO_TEMP_DIR=str(clone.parent / "gradio-temp"),
    )


def command(line: str, rule: Rule) -> str:
    venv = VENV_BIN.parent
    return f"{line.split(' #')[0].rstrip()} {rule.extra.format(venv=venv)}".strip()


def run_line(line: str, rule: Rule, cwd: Path, env: dict, timeout: float = 420) -> subprocess.CompletedProcess:
    result = subprocess.run(
        ["bash", "-c", command(line, rule)], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )
    assert result.returncode == 0, f"{line}\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}"
    return result


def serve(line: str, rule: Rule, cwd: Path, env: dict, check=None) -> str:
    """Start a server line on a free port, fetch its page (or run `check(url)`), stop it the way a
    user would (the rule's stop: `kill PID`, or Ctrl-C in its terminal), and return the page. Any
    process it leaves behind fails the test."""
    port = free_port()
    line = re.sub(r"--port \d+", f"--port {port}", line)
    line = re.sub(r"http\.server (.*) 8000", rf"http.server \1 {port}", line)
    line = line.replace("--host 0.0.0.0", "--host 127.0.0.1")  # the same server, not exposed by a test
    proc = subprocess.Popen(
        ["bash", "-c", f"exec {command(line, rule)}"],
        cwd=cwd,
        env=dict(env, GRADIO_SERVER_PORT=str(port)),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )  # its own process group, as a terminal gives it
    url = f"http://127.0.0.1:{port}/"
    try:
        wait_for_page(url, proc)
        if check is not None:
            check(url)
        with urllib.request.urlopen(url + rule.page, timeout=30) as r:
            return r.read().decode("utf-8")
    finally:
        if rule.stop == "ctrl-c":
            os.killpg(proc.pid, signal.SIGINT)
        else:
            proc.terminate()  # `kill PID`: to make itself, for make serve
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
        assert_port_closed(port)
        assert_temp_folder_removed(env)


def assert_temp_folder_removed(env: dict, wait_s: float = 10) -> None:
    """A stopped server leaves nothing in Gradio's temporary folder (webapp/server/launch.py)."""
    folder = Path(env["GRADIO_TEMP_DIR"])
    deadline = time.monotonic() + wait_s
    while folder.is_dir() and any(folder.iterdir()) and time.monotonic() < deadline:
        time.sleep(0.25)
    assert not folder.is_dir() or not any(folder.iterdir()), list(folder.rglob("*"))


def assert_port_closed(port: int, wait_s: float = 10) -> None:
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2)
        except OSError:
            return
        time.sleep(0.25)
    pytest.fail(f"a server still answers on port {port} after its command was stopped")


def run_blocks(clone: Path, blocks: list[list[str]], pages: dict) -> None:
    env = environment(clone)
    for block in blocks:
        cwd = clone
        for line in block:
            rule = rule_for(line)
            assert rule is not None, f"no rule for README line {line!r}"
            if rule.how == "skip":
                continue
            start = time.monotonic()
            if rule.how == "cd":
                cwd = (cwd / line.split()[1]).resolve()
            elif rule.how == "server":
                pages[line] = serve(line, rule, cwd, env)
            else:
                pages[line] = run_line(line, rule, cwd, env).stdout
            print(f"{time.monotonic() - start:6.1f} s  {line[:100]}")  # shown with pytest -s


# A German play in Project Gutenberg's layout (an English header and licence around it, CRLF
# line ends), which the README's sed line cuts away. A few runes too: a script that most fonts
# lack must still show on the page.
GERMAN_LINES = [
    "Habe nun, ach! Philosophie,",
    "Juristerei und Medizin,",
    "Und leider auch Theologie",
    "Durchaus studiert, mit heißem Bemühn.",
    "Da steh ich nun, ich armer Tor!",
    "Und bin so klug als wie zuvor;",
    "Heiße Magister, heiße Doktor gar",
    "Daß wir nichts wissen können!",
    "Das will mir schier das Herz verbrennen.",
    "Grau, teurer Freund, ist alle Theorie,",
    "Und grün des Lebens goldner Baum.",
    "Verweile doch! du bist so schön!",
    "Meine Ruh ist hin, mein Herz ist schwer;",
    "Ich bin der Geist, der stets verneint!",
    "Zwei Seelen wohnen, ach! in meiner Brust,",
    "Wer immer strebend sich bemüht, den können wir erlösen.",
    "Es irrt der Mensch, so lang er strebt.",
    "ᚠᚢᚦᚨᚱᚲ — Runen an der Wand.",
    "Süße Träume über Öl und Äpfel; Größe.",
]
SPEAKERS = ["FAUST:", "MEPHISTOPHELES:", "MARGARETE:", "WAGNER:", "MARTHE:"]
SHAKESPEARE_WORDS = ("Shakespeare", "ROMEO", "JULIET", "Citizen", "MENENIUS", "PETRUCHIO", "scene")


def gutenberg_play(n_speeches: int = 400, seed: int = 3) -> str:
    import random

    rng = random.Random(seed)
    play = []
    for _ in range(n_speeches):
        play += [rng.choice(SPEAKERS), *rng.sample(GERMAN_LINES, rng.randint(2, 4)), ""]
    header = [
        "\ufeffThe Project Gutenberg eBook of Faust: Der Tragödie erster Teil",
        "",
        "This eBook is for the use of anyone.",
        "*** START OF THE PROJECT GUTENBERG EBOOK FAUST: DER TRAGÖDIE ERSTER TEIL ***",
    ]
    footer = [
        "*** END OF THE PROJECT GUTENBERG EBOOK FAUST: DER TRAGÖDIE ERSTER TEIL ***",
        "Section 1. General Terms of Use",
    ]
    return "\r\n".join([*header, *play, *footer]) + "\r\n"


def test_your_own_text_from_a_file_to_the_page(clone):
    blocks = blocks_of("own text")
    assert len(blocks) == 2
    assert any(line.startswith("make model DATA=faust.txt") for line in blocks[0])
    (clone / "pg2229.txt").write_bytes(gutenberg_play().encode("utf-8"))
    pages: dict[str, str] = {}
    run_blocks(clone, blocks[:1], pages)
    text = (clone / "faust.txt").read_text(encoding="utf-8")
    assert "Project Gutenberg" not in text
    assert "\r" not in text
    assert text.lstrip().startswith(tuple(SPEAKERS))

    made = next(out for line, out in pages.items() if line.startswith("make model"))
    assert "Serve it:  make serve MODEL=runs/faust/model" in made
    config = json.loads(next(out for line, out in pages.items() if line.startswith("make serve")))
    assert not [w for w in SHAKESPEARE_WORDS if w.lower() in json.dumps(config, ensure_ascii=False).lower()]
    assert config["title"] == "chargpt: faust"
    (examples,) = [c["props"]["samples"] for c in config["components"] if c["type"] == "dataset"]
    assert len(examples) >= 3
    assert all(example in text for (example,) in examples)
    (prompt,) = [
        c["props"]["value"]
        for c in config["components"]
        if c["type"] == "textbox" and c["props"].get("label") == "Prompt"
    ]
    assert prompt == examples[0][0]
    about = json.loads((clone / "runs/faust/model/onnx/model.json").read_text(encoding="utf-8"))["about"]
    assert about["dataset"] == "faust"
    assert about["examples"] == [e for (e,) in examples]

    run_blocks(clone, blocks[1:], pages)  # the flags rename it: page, card and metadata
    about = json.loads((clone / "runs/faust/model/onnx/model.json").read_text(encoding="utf-8"))["about"]
    assert about == {
        "title": "chargpt: Goethes Faust",
        "dataset": "Goethes Faust",
        "description": "Ein kleines GPT, Zeichen für Zeichen.",
        "examples": ["Habe nun, ach!", "Mephistopheles\n"],
    }
    card = (clone / "runs/faust/model/README.md").read_text(encoding="utf-8")
    assert "Ein kleines GPT, Zeichen für Zeichen." in card
    assert '`"Mephistopheles\\n"`' in card


def test_make_serve_leaves_no_server_behind_when_make_is_killed(clone):
    """`kill -9` leaves the server an orphan, which notices (--exit-with-parent). The README's
    commands stop make serve with `kill PID` (SIGTERM, which make passes on: 'Your own text') and
    Ctrl-C (to the terminal's whole process group: 'Quickstart')."""
    env = environment(clone)
    venv = VENV_BIN.parent
    port = free_port()
    make = subprocess.Popen(
        ["make", "serve", f"VENV={venv}", "-o", f"{venv}/.app-installed"],
        cwd=clone,
        env=dict(env, GRADIO_SERVER_PORT=str(port)),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )  # its own process group, as a terminal gives it
    wait_for_page(f"http://127.0.0.1:{port}/", make)
    make.kill()
    make.wait(timeout=30)
    assert_port_closed(port)
    assert_temp_folder_removed(env)


def run_group(clone: Path, group: str):
    pages: dict[str, str] = {}
    run_blocks(clone, blocks_of(group), pages)
    return lambda prefix: next(out for line, out in pages.items() if line.startswith(prefix))


def test_the_serving_commands_as_written(clone):
    page = run_group(clone, "serving")
    assert json.loads(page("make serve"))["title"] == "chargpt: Shakespeare, one character at a time"
    assert json.loads(page("python -m webapp --model"))["title"] == "chargpt: Shakespeare, one character at a time"
    assert page("python -m webapp generate").startswith("ROMEO:")
    assert_load_served_the_queue_and_turned_the_rest_away(page("python -m benchmarks.load"), clone / "runs/load.json")
    assert "ROMEO:" in page("node node_check.mjs")
    assert json.loads(page("python -m http.server"))["about"]["title"].startswith("chargpt")
    assert {p.name for p in (clone / "webapp/web/dist/model").iterdir()} == {
        "model.onnx",
        "model.json",
        "model.ring.onnx",
        "model.drafts.json",
        "model.attention.onnx",
    }


def test_the_training_and_export_commands_as_written(clone):
    page = run_group(clone, "train and export")
    assert "to export: python -m export runs/s02" in page("python -m train --preset seed-0.2m")
    assert (clone / "runs/s02/model/onnx/model.onnx").is_file()
    assert "val loss (whole validation split, 111,539 characters): 1.4237" in page(
        "python -m export eval models/chargpt"
    )
    assert "val loss (whole validation split" in page("python -m export eval runs/s02/model")
    assert "runs/s02-mean (the mean of 2): val loss (whole split) " in page("python -m train.average")
    ddp = page("torchrun")  # two CPU processes (gloo): ranks stay identical, only rank 0 speaks
    assert (
        "ranks in sync: 2 processes, 0 parameter tensors differ from rank 0" in ddp and ddp.count("M parameters") == 1
    )
    ddp_meta = json.loads((clone / "runs/ddp/config.json").read_text(encoding="utf-8"))
    assert (ddp_meta["step"], ddp_meta["tokens_seen"]) == (2, 2 * 4 * 32 * 2)  # steps × batch × block × processes


def test_the_speed_and_soak_commands_as_written(clone):
    page = run_group(clone, "speed and soak")
    assert (clone / "runs/bench.json").is_file() and (clone / "runs/drafts.json").is_file()
    # The shipped model is int8: the floors run on its files, and its engine row is compared with the ring file's.
    generation = page("python -m benchmarks.generation")
    assert "batch 1: row '4. engine, one character a step' takes" in generation
    assert "batch 1: drafts: row '4. engine, int8 weights' is" in generation
    assert "batch 1: draft table: row '4. engine, int8 weights' is" in generation
    assert "| 0.8         | draft table and own repeats      |" in page("python -m benchmarks.drafts")
    assert_drafts_keep_the_text_and_save_steps(json.loads((clone / "runs/drafts.json").read_text())["rows"])
    # The soak, shortened: every kind of client answered as expected, the killed model process
    # failing only its own requests; memory, open files, threads and disk back where they stood.
    soak = json.loads((clone / "runs/soak.json").read_text(encoding="utf-8"))
    traffic = soak["traffic"]
    assert set(traffic) == {"visitor", "leaves mid-stream", "hostile settings", "joins, never reads", "uploads 0.9 MB"}
    assert all(kind["requests"] > 0 and kind["failed"] == 0 for kind in traffic.values()), traffic
    assert soak["killed_at_s"] is not None and soak["left_on_disk_bytes"] == 0
    assert "| server threads" in page("python -m benchmarks.soak")


def assert_load_served_the_queue_and_turned_the_rest_away(printed: str, figures: Path) -> None:
    assert "load: 3 clients, 0 failures" in printed
    assert "after it the server answered" in printed
    assert "crowd / one visitor: " in printed
    phases = {p["name"]: p for p in json.loads(figures.read_text())["phases"]}
    load, burst = phases["load"], phases["burst"]
    assert load["completed"] == 3
    assert load["p95_s"] >= load["p50_s"] > 0
    assert load["rss_after_mb"] > 0
    # One generating and three waiting fit; the rest of the 12 are turned away at once.
    assert burst["failed"] == 0
    assert burst["completed"] >= 3
    assert burst["busy"] >= 1
    assert burst["completed"] + burst["busy"] == 12
    assert phases["after the burst"]["completed"] == 1


def assert_drafts_keep_the_text_and_save_steps(rows: list[dict]) -> None:
    """Each way writes the same text; the shipped draft table saves steps over the text's own repeats."""
    assert [(r["temperature"], r["drafts"]) for r in rows] == [
        (t, way)
        for t in (0, 0.8)
        for way in ("draft table and own repeats", "own repeats only", "no drafts (one character a step)")
    ]
    assert all(r["same_text"] for r in rows)
    assert all(
        r["steps_per_100_chars"] == pytest.approx(100 * 59 / 60) for r in rows if r["drafts"].startswith("no drafts")
    )
    assert all(r["steps_per_100_chars"] < 80 for r in rows if r["drafts"] == "draft table and own repeats")
    steps = {(r["temperature"], r["drafts"]): r["steps_per_100_chars"] for r in rows}
    assert all(steps[t, "draft table and own repeats"] < 0.8 * steps[t, "own repeats only"] for t in (0, 0.8)), steps
