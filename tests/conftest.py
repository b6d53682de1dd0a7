"""Shared fixtures. Tests never touch the network: they use ../shared/data or texts they make."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

# Tiny models run fastest on one thread, and tests then share the CPU well with each other
# and with a training run in the background; subprocesses inherit the setting.
torch.set_num_threads(1)
os.environ["OMP_NUM_THREADS"] = "1"

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("CHARGPT_SHARED", REPO.parent / "shared"))
SHAKESPEARE = SHARED / "data" / "tinyshakespeare.txt"
IN_CI = os.environ.get("CI") == "true"
SCREENSHOTS = REPO / "test-results"

# Small settings that train in a second or two on a CPU.
TINY = ["--n-embd", "32", "--n-head", "4", "--n-layer", "2", "--block-size", "16", "--batch-size", "8",
        "--eval-iters", "2", "--eval-interval", "20", "--max-iters", "40"]


def pytest_addoption(parser):
    parser.addoption("--fuzz-cases", type=int, default=40,
                     help="random requests in the API fuzz test (CI runs the default; the full test is 1000)")
    parser.addoption("--fuzz-seed", type=int, default=20261126,
                     help="seed of the fuzz test's requests (fixed, so that a failure can be replayed; -1: a random one)")
    parser.addoption("--kill-seed", type=int, default=20261126,
                     help="seed of the SIGKILL test's waits between kills (fixed; -1: a random one)")


@pytest.fixture(scope="session")
def shakespeare() -> Path:
    if not SHAKESPEARE.is_file():
        pytest.fail(f"{SHAKESPEARE} is missing: the tests need ../shared/data/tinyshakespeare.txt beside the repo")
    return SHAKESPEARE


@pytest.fixture(scope="session")
def small_text(tmp_path_factory, shakespeare) -> Path:
    """The first 40,000 characters of Tiny Shakespeare: the whole vocabulary of a play, fast to train on."""
    path = tmp_path_factory.mktemp("data") / "small.txt"
    path.write_text(shakespeare.read_text(encoding="utf-8")[:40_000], encoding="utf-8")
    return path


def trained_run(tmp_path_factory, small_text, *extra) -> Path:
    out = tmp_path_factory.mktemp("runs") / "run"
    from train.cli import main as train_main

    assert train_main([*TINY, "--data", str(small_text), "--out", str(out), "--max-iters", "60", *extra]) == 0
    return out


@pytest.fixture(scope="session")
def exported(tmp_path_factory, small_text):
    """A tiny seed-architecture model, trained and exported with --quantize int8."""
    run_dir = trained_run(tmp_path_factory, small_text)
    out = tmp_path_factory.mktemp("models") / "tiny.onnx"
    result = subprocess.run([sys.executable, "-m", "export", str(run_dir), "--out", str(out), "--quantize", "int8"],
                            capture_output=True, text=True, timeout=600)
    return run_dir, out, result


# A non-English text: French with its typography (no-break spaces before ;:!? and inside
# guillemets, curly apostrophes, ligatures) and characters of two, three and four UTF-8 bytes.
FRENCH_WORDS = ("été", "forêt", "château", "cœur", "naïve", "où", "déjà", "garçon", "Noël", "île", "Ève", "Ça", "ægide",
                "fenêtre", "lumière", "écho", "mûre", "aïeul", "Zoé", "Œuvre", "paysage", "rivière", "l’eau", "qu’il",
                "s’en", "âme", "là-bas", "près", "où", "très", "bientôt", "peut-être", "€", "Ω", "🎭")
FRENCH_ENDS = ("\u202f!", "\u202f?", "\u00a0:", "\u202f;", ".", "…", " — ")


def french_text(n_sentences: int = 2500, seed: int = 0) -> str:
    import random

    rng = random.Random(seed)
    lines = []
    for _ in range(n_sentences):
        words = [rng.choice(FRENCH_WORDS) for _ in range(rng.randint(3, 8))]
        sentence = " ".join(words).capitalize() + rng.choice(FRENCH_ENDS)
        lines.append(f"«\u00a0{sentence}\u00a0»" if rng.random() < 0.2 else sentence)
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="session")
def french_folder(tmp_path_factory):
    """A small learned-position model trained on french_text, exported as a model folder."""
    data = tmp_path_factory.mktemp("french") / "french.txt"
    data.write_text(french_text(), encoding="utf-8")
    run_dir = trained_run(tmp_path_factory, data, "--max-iters", "300", "--eval-interval", "100")
    folder = tmp_path_factory.mktemp("folders") / "french-tiny"
    result = subprocess.run([sys.executable, "-m", "export", str(run_dir), "--out", f"{folder}/"],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    return folder, data


def chromium_or_skip() -> str:
    """Debian's chromium for Playwright; a skip where it is missing, a failure in CI."""
    path = shutil.which("chromium") or "/usr/bin/chromium"
    try:
        import playwright  # noqa: F401
    except ImportError:
        path = None
    if path is None or not Path(path).exists():
        if IN_CI:
            pytest.fail("CI must have Debian's chromium and the playwright package (see .ci/run)")
        pytest.skip("no chromium or playwright here: apt-get install chromium; pip install playwright")
    return path
