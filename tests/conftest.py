"""Shared fixtures. Tests never touch the network: they use ../shared/data or texts they make."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from filelock import FileLock

# Tiny models run fastest on one thread, and tests then share the CPU well with each other
# and with a training run in the background; subprocesses inherit the setting.
torch.set_num_threads(1)
os.environ["OMP_NUM_THREADS"] = "1"
# Training runs of a few seconds time the matmul peak (train/trainer.py) for a tenth of a second.
os.environ.setdefault("CHARGPT_PEAK_SECONDS", "0.1")

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("CHARGPT_SHARED", REPO.parent / "shared"))
SHAKESPEARE = SHARED / "data" / "tinyshakespeare.txt"
IN_CI = os.environ.get("CI") == "true"
SCREENSHOTS = REPO / "test-results"

# Small settings that train in a second or two on a CPU.
TINY = [
    "--n-embd",
    "32",
    "--n-head",
    "4",
    "--n-layer",
    "2",
    "--block-size",
    "16",
    "--batch-size",
    "8",
    "--eval-iters",
    "2",
    "--eval-interval",
    "20",
    "--max-iters",
    "40",
]


def pytest_addoption(parser):
    parser.addoption(
        "--fuzz-cases",
        type=int,
        default=24,
        help="random requests in the API fuzz test (CI runs the default; the full test is 1000)",
    )
    parser.addoption(
        "--fuzz-seed",
        type=int,
        default=20261126,
        help="seed of the fuzz test's requests (fixed, so that a failure can be replayed; -1: a random one)",
    )
    parser.addoption(
        "--kill-seed",
        type=int,
        default=20261126,
        help="seed of the SIGKILL test's waits between kills (fixed; -1: a random one)",
    )


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


# The slowest files first, none of which needs the `exported` or `french_folder` models: with
# two processes (`pytest -n 2 --dist loadgroup`) neither is left with a long file at the end, and
# whichever reaches the shared models first builds them while the other is still busy
# (built_once), instead of the two building them side by side or one waiting.
SLOWEST_FILES = ("test_readme.py", "test_gpu_check.py", "test_train.py", "test_views.py")


@pytest.hookimpl(tryfirst=True)  # before xdist's own, which reads the groups into the test ids
def pytest_collection_modifyitems(items):
    """Order the slowest files first, and give each file's tests one xdist group (as --dist
    loadfile would: they share module fixtures), but each of test_readme.py's tests a group of its
    own: each runs a group of the docs' commands on its own clone, minutes each."""

    def rank(item):
        name = item.path.name
        return SLOWEST_FILES.index(name) if name in SLOWEST_FILES else len(SLOWEST_FILES)

    items.sort(key=rank)  # stable: each file's tests keep their order
    for item in items:
        group = item.originalname if item.path.name == "test_readme.py" else item.path.name
        item.add_marker(pytest.mark.xdist_group(group))


def train_tiny(out: Path, data: Path, *extra) -> Path:
    from train.cli import main as train_main

    assert train_main([*TINY, "--data", str(data), "--out", str(out), "--max-iters", "60", *extra]) == 0
    return out


def trained_run(tmp_path_factory, small_text, *extra) -> Path:
    return train_tiny(tmp_path_factory.mktemp("runs") / "run", small_text, *extra)


def export_here(*argv: str) -> subprocess.CompletedProcess:
    """`python -m export ARGV` in this process, its output captured: a pytest process pays the
    exporter's start (a fresh process spends most of an export setting up torch.onnx) once,
    not once per export. The CLI as a process is what test_readme.py runs."""
    import contextlib
    import io

    from export.cli import main as export_main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = export_main(list(argv))
    return subprocess.CompletedProcess(["python", "-m", "export", *argv], code, out.getvalue(), err.getvalue())


def built_once(name: str, tmp_path_factory, worker_id: str, build: Callable[[Path], dict]) -> dict:
    """A session fixture's files, built once for the whole test run: with pytest-xdist, the
    first worker to ask builds them in the run's shared temporary folder while a file lock
    holds the others, which then read the record it left (tests only read these files).
    build(folder) writes into folder and returns a JSON-able record."""
    if worker_id == "master":  # no xdist: nothing to share
        return build(tmp_path_factory.mktemp(name))
    folder = tmp_path_factory.getbasetemp().parent / name
    with FileLock(f"{folder}.lock"):
        record = folder / "record.json"
        if record.is_file():
            return json.loads(record.read_text(encoding="utf-8"))
        if folder.exists():  # a worker that failed half way: build again
            shutil.rmtree(folder)
        folder.mkdir()
        built = build(folder)
        record.write_text(json.dumps(built), encoding="utf-8")
        return built


@pytest.fixture(scope="session")
def exported(tmp_path_factory, worker_id, small_text):
    """A tiny seed-architecture model, trained and exported with --quantize int8: (run
    directory, model file, the export's CompletedProcess)."""

    def build(folder: Path) -> dict:
        run_dir = train_tiny(folder / "run", small_text)
        (folder / "models").mkdir()
        out = folder / "models" / "tiny.onnx"
        result = export_here(str(run_dir), "--out", str(out), "--quantize", "int8")
        return {
            "run_dir": str(run_dir),
            "out": str(out),
            "args": result.args,
            "returncode": result.returncode,
            "stdout": result.stdout,
            "stderr": result.stderr,
        }

    built = built_once("exported", tmp_path_factory, worker_id, build)
    result = subprocess.CompletedProcess(built["args"], built["returncode"], built["stdout"], built["stderr"])
    return Path(built["run_dir"]), Path(built["out"]), result


# A non-English text: French with its typography (no-break spaces before ;:!? and inside
# guillemets, curly apostrophes, ligatures) and characters of two, three and four UTF-8 bytes.
FRENCH_WORDS = (
    "été",
    "forêt",
    "château",
    "cœur",
    "naïve",
    "où",
    "déjà",
    "garçon",
    "Noël",
    "île",
    "Ève",
    "Ça",
    "ægide",
    "fenêtre",
    "lumière",
    "écho",
    "mûre",
    "aïeul",
    "Zoé",
    "Œuvre",
    "paysage",
    "rivière",
    "l’eau",
    "qu’il",
    "s’en",
    "âme",
    "là-bas",
    "près",
    "où",
    "très",
    "bientôt",
    "peut-être",
    "€",
    "Ω",
    "🎭",
)
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
def french_folder(tmp_path_factory, worker_id):
    """A small learned-position model with QK-norm (as `--preset quick` trains) on french_text,
    exported as a model folder: (the folder, the text)."""

    def build(root: Path) -> dict:
        data = root / "french.txt"
        data.write_text(french_text(), encoding="utf-8")
        run_dir = train_tiny(root / "run", data, "--max-iters", "300", "--eval-interval", "100", "--qk-norm")
        folder = root / "french-tiny"
        result = export_here(str(run_dir), "--out", f"{folder}/")
        assert result.returncode == 0, result.stdout + result.stderr
        return {"folder": str(folder), "data": str(data)}

    built = built_once("french", tmp_path_factory, worker_id, build)
    return Path(built["folder"]), Path(built["data"])


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
