"""The generation benchmark: every decoder it times writes the same greedy text, and the
command prints its table."""

import importlib
import json
import subprocess
import sys

import numpy as np
import onnx
import pytest
import torch
from conftest import IN_CI, REPO

from benchmarks import generation as bench
from export.onnx_export import dequantize_weights, quantize_weights_int8, torch_model_from_onnx
from train import checkpoint
from webapp.inference.engine import Engine
from webapp.inference.onnx_model import OnnxModel


@pytest.fixture(scope="module")
def models(exported):
    run_dir, onnx_path, _ = exported
    return checkpoint.load_model(run_dir), Engine(onnx_path, device="cpu")


def test_the_onnx_file_carries_the_checkpoint_weights_by_name(models, exported):
    model, _ = models
    rebuilt = torch_model_from_onnx(exported[1])
    assert rebuilt.state_dict().keys() == model.state_dict().keys()
    for name, tensor in model.state_dict().items():
        assert torch.equal(rebuilt.state_dict()[name], tensor), name


def test_an_int8_file_gives_its_dequantized_weights(exported):
    int8_path = exported[1].with_suffix(".int8.onnx")
    model = torch_model_from_onnx(int8_path)
    ids = np.random.default_rng(0).integers(0, model.config.vocab_size, (2, model.config.block_size))
    with torch.no_grad():
        want = model(torch.from_numpy(ids))[0].numpy()
    assert np.abs(OnnxModel(int8_path).forward(ids)[0] - want).max() < 1e-4


def test_an_int8_file_stored_back_as_float32_is_the_float32_graph_computing_the_same(exported, tmp_path):
    """The benchmark's float32 row for an int8 model: the exported graph again, with the int8
    file's weights, and the int8 file's logits."""
    float32, int8, back = exported[1], tmp_path / "int8.onnx", tmp_path / "back.onnx"
    quantize_weights_int8(float32, int8)
    dequantize_weights(int8, back)
    assert [n.op_type for n in onnx.load(str(back)).graph.node] == [
        n.op_type for n in onnx.load(str(float32)).graph.node
    ]
    assert {i.data_type for i in onnx.load(str(back)).graph.initializer} == {
        onnx.TensorProto.FLOAT,
        onnx.TensorProto.INT64,
    }
    ids = np.random.default_rng(0).integers(0, 40, (2, 30))
    want, got = OnnxModel(int8).forward(ids)[0], OnnxModel(back).forward(ids)[0]
    assert np.abs(got - want).max() <= 1e-6
    assert np.abs(got - OnnxModel(float32).forward(ids)[0]).max() > 1e-6  # the int8 weights, not the original ones


@pytest.mark.parametrize("batch", [1, 3])
def test_every_decoder_writes_the_lecture_style_greedy_text(models, batch):
    """Prompt and length cross the window (block_size 16) many times; with learned positions
    the plain loop is the lecture's crop, so every decoder writes the lecture code's text exactly."""
    model, engine = models
    decoders = [bench.torch_cached(model), bench.onnx_uncached(engine), bench.engine_decoder(engine)]
    prompt = np.tile(np.arange(1, 31) % engine.metadata["config"]["vocab_size"], (batch, 1)).astype(np.int64)
    want = np.stack(list(bench.lecture_style(model)(prompt, 70)), axis=1)
    for decoder in decoders:
        assert np.array_equal(np.stack(list(decoder(prompt, 70)), axis=1), want)


def test_the_int8_engine_writes_the_text_of_its_own_file_without_a_cache(tmp_path, exported):
    """Row 4 (int8) against row 3's rule on the same int8 file: learned positions, so exactly."""
    quantize_weights_int8(exported[1], tmp_path / "int8.onnx")
    int8 = Engine(tmp_path / "int8.onnx", device="cpu")
    prompt = np.tile(np.arange(3, 23) % int8.metadata["config"]["vocab_size"], (2, 1)).astype(np.int64)
    cached = np.stack(list(bench.engine_decoder(int8)(prompt, 40)), axis=1)
    assert np.array_equal(cached, np.stack(list(bench.onnx_uncached(int8)(prompt, 40)), axis=1))
    assert len(set(cached[0].tolist())) > 1  # not a constant answer


def test_the_models_other_form_runs_with_the_given_engines_thread_settings(exported, tmp_path):
    """--spinning compares the engines' threads spinning after each run against stopping: both
    forms of the model must then run alike."""
    for spinning in (False, True):
        (tmp_path / str(spinning)).mkdir()
        fp32, int8 = bench.float32_and_int8(
            Engine(exported[1], device="cpu", spinning=spinning), tmp_path / str(spinning)
        )
        assert fp32.session_args["spinning"] is int8.session_args["spinning"] is spinning


@pytest.fixture(scope="module")
def bench_run(exported, tmp_path_factory, small_text) -> tuple[subprocess.CompletedProcess, list[dict]]:
    """`python -m benchmarks.generation` on the tiny export at batch 1 and 2: what it printed, and its JSON rows."""
    out = tmp_path_factory.mktemp("bench") / "bench.json"
    sizes = "--prompt-chars 20 --chars 30 --batch 1 2 --runs 2".split()
    command = [sys.executable, "-m", "benchmarks.generation", "--model", str(exported[1]), "--data", str(small_text)]
    result = subprocess.run(
        [*command, *sizes, "--json", str(out)], capture_output=True, text=True, timeout=300, cwd=REPO
    )
    assert result.returncode == 0, result.stderr
    return result, json.loads(out.read_text())["rows"]


def page_rows(rows: list[dict]) -> list[dict]:
    return [r for r in rows if r["decoder"].startswith("6. static page")]


def test_command_prints_the_table_and_writes_json(bench_run):
    result, rows = bench_run
    assert "| decoder" in result.stdout
    assert "batch 2: row '4. engine, float32' takes" in result.stdout
    assert len(rows) == 14 + len(page_rows(rows))
    assert {r["batch"] for r in rows} == {1, 2}


def test_the_static_page_row_decodes_one_text_at_a_time(bench_run):
    result, rows = bench_run
    if "no static page row" in result.stderr:
        assert not IN_CI, result.stderr  # CI has node, chromium and playwright
        pytest.skip(result.stderr)
    assert [r["batch"] for r in page_rows(rows)] == [1]
    assert "batch 1: page / native = " in result.stdout


def test_each_row_writes_the_text_of_its_rule(bench_run):
    _, rows = bench_run
    checked = ("2.", "3.", "6.", "4. engine, with the pages' alternatives")
    assert all(r["same_text"] for r in rows if r["decoder"].startswith(checked))
    references = ("1.", "4. engine, float32", "5.")
    assert all(r["same_text"] is None for r in rows if r["decoder"].startswith(references))


def test_the_table_says_what_the_pages_alternatives_cost(bench_run):
    result, _ = bench_run
    assert "batch 1: alternatives: row '4. engine, with the pages' alternatives' is " in result.stdout


# Each benchmark's refusals: (module, its arguments from (the tiny export, a text file, tmp_path),
# the words of its one sentence). The load and drafts commands' runs are test_readme.py's: the
# docs' commands, on the shipped model.
BENCHMARK_REFUSALS = {
    "generation: --json exists": (
        "generation",
        lambda model, text, tmp: ["--model", model, "--json", tmp / "old.json"],
        "--json {tmp}/old.json already exists",
    ),
    "generation: --chars 0": ("generation", lambda model, text, tmp: ["--model", model, "--chars", "0"], "at least 1"),
    "generation: not a model": ("generation", lambda model, text, tmp: ["--model", text], "not a readable ONNX model"),
    "load: --clients 0": (
        "load",
        lambda model, text, tmp: ["--clients", "0"],
        "--clients, --chars, --alone-rounds, --burst-chars and --concurrency must be at least 1",
    ),
    "drafts: no ring file": (
        "drafts",
        lambda model, text, tmp: ["--model", model],
        "has no ring file or no draft table",
    ),
    "drafts: --runs 0": ("drafts", lambda model, text, tmp: ["--runs", "0"], "at least 1"),
    "drafts: --temperatures -1": (
        "drafts",
        lambda model, text, tmp: ["--temperatures", "-1"],
        "temperatures from 0 to 10",
    ),
}


@pytest.mark.parametrize("case", BENCHMARK_REFUSALS)
def test_a_benchmark_refuses_bad_input_in_one_sentence_and_keeps_an_existing_json(
    exported, small_text, tmp_path, capsys, case
):
    name, argv, says = BENCHMARK_REFUSALS[case]
    module = importlib.import_module(f"benchmarks.{name}")
    (tmp_path / "old.json").write_text("{}")
    args = [str(a) for a in argv(exported[1], small_text, tmp_path)]
    assert module.main(args) == 2, args
    err = capsys.readouterr().err
    assert says.format(tmp=tmp_path) in err and err.count("\n") == 1, (args, err)
    assert (tmp_path / "old.json").read_text() == "{}"


def test_position_buckets_double_from_eight_and_end_at_the_window():
    from benchmarks.position_loss import position_buckets

    assert position_buckets(128) == [(0, 8), (8, 16), (16, 32), (32, 64), (64, 128)]
    assert position_buckets(100)[-1] == (64, 100)
    assert position_buckets(256)[-1] == (128, 256)
    assert position_buckets(8) == [(0, 8)] and position_buckets(4) == [(0, 4)]


def test_position_loss_splits_the_whole_split_loss_by_window_position(exported, small_text, tmp_path, capsys):
    from benchmarks import position_loss
    from train.data import load_corpus
    from train.evaluation import full_split_loss

    run_dir = exported[0]
    assert position_loss.main([str(run_dir), "--data", str(small_text)]) == 0
    rows = [
        [c.strip() for c in line.strip("|").split("|")]
        for line in capsys.readouterr().out.splitlines()
        if line.startswith("| ")
    ]
    assert rows[0] == ["positions", "predictions", "nats/char"] and [r[0] for r in rows[1:]] == ["0-7", "8-15", "all"]
    counts, losses = [int(r[1].replace(",", "")) for r in rows[1:]], [float(r[2]) for r in rows[1:]]
    corpus = load_corpus(str(small_text))
    assert counts[-1] == len(corpus.val) - 1 == sum(counts[:-1])  # every prediction once
    assert losses[-1] == pytest.approx(full_split_loss(checkpoint.load_model(run_dir), corpus.val, 16, "cpu"), abs=1e-4)
    assert sum(c * x for c, x in zip(counts[:-1], losses[:-1])) / counts[-1] == pytest.approx(
        losses[-1], abs=1e-4
    )  # rounding

    other = tmp_path / "other.txt"
    other.write_text("Not the text it trained on.\n" * 100, encoding="utf-8")
    for argv, says in [
        ([str(run_dir), "--data", str(other)], "is not the text this run was trained on"),
        ([str(tmp_path), "--data", str(small_text)], "holds no config.json"),
    ]:
        assert position_loss.main(argv) == 2
        err = capsys.readouterr().err
        assert says in err and err.count("\n") == 1
