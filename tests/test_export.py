"""`python -m export`: round trip to onnxruntime, the contract, an independent ONNX runtime,
quantization, the onnxruntime-only eval, refusal of broken exports and bad input."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from conftest import SHARED, trained_run

import export.attention_command
import export.export_command
import export.onnx_export
from export.cli import main as export_main
from train import checkpoint
from train.files import file_sha256
from train.model import GPTLanguageModel
from train.text import split_index
from webapp.inference.attention import attention_path
from webapp.inference.engine import Engine
from webapp.inference.onnx_model import SHIPPED_MODEL, OnnxModel
from webapp.inference.ring import ring_path
from webapp.inference.sampling import SamplingParams

MODERN = [
    "--position",
    "rotary",
    "--activation",
    "swiglu",
    "--norm",
    "rmsnorm",
    "--qk-norm",
    "--tie-weights",
    "--no-bias",
]


def load_torch_model(run_dir: Path) -> GPTLanguageModel:
    return checkpoint.load_model(run_dir)


def test_export_prints_the_verification_table_and_writes_model_sidecar_and_card(exported):
    run_dir, out, result = exported
    assert result.returncode == 0, result.stderr
    assert re.search(r"onnx checker \(full\)\s+-\s+-\s+-\s+ok", result.stdout)
    for row in ("prefill (empty cache)", "decode one by one with cache", "prefill 7, then decode"):
        assert re.search(rf"{re.escape(row)}\s+[13]\s+\S+\s+\S+\s+ok", result.stdout), row
    assert re.search(r"greedy 200 characters \(plain loop\)\s+1\s+200\s+identical\s+ok", result.stdout)
    assert re.search(r"end-of-text logit\s+2\s+5\s+-1e\+09 \(id \d+\)\s+ok", result.stdout)
    loop = re.search(
        r"plain loop vs last window, 1,500 val chars\s+1\s+1484\s+([0-9.]+) vs ([0-9.]+) nats/char, cache <= 15\s+ok",
        result.stdout,
    )
    assert loop
    assert float(loop.group(1)) == pytest.approx(
        float(loop.group(2)), abs=1e-4
    )  # learned positions: exactly the window
    assert "FAIL" not in result.stdout
    assert out.with_name("tiny.loss.png").read_bytes()[:4] == b"\x89PNG"  # the run's curve, checkpoint marked
    card = out.with_suffix(".md").read_text()
    assert "validation loss (whole split" in card
    assert "## Verification against PyTorch" in card
    assert [p.name for p in out.parent.iterdir() if p.name.startswith(".")] == []  # no temporary files left


def test_the_shared_contract_checker_accepts_both_files_and_the_folders(exported, french_folder):
    _, out, _ = exported
    for model in (out, out.with_name("tiny.int8.onnx"), french_folder[0], SHIPPED_MODEL):
        check = subprocess.run(
            [sys.executable, str(SHARED / "tools" / "check_onnx_contract.py"), str(model)],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert check.returncode == 0, check.stdout + check.stderr
        assert "ok   plain loop past the window keeps the cache within it" in check.stdout  # format 2: the window


def test_metadata_and_sidecar_agree_and_describe_the_model(exported):
    run_dir, out, _ = exported
    lm = OnnxModel(out)
    sidecar = json.loads(out.with_suffix(".json").read_text())
    assert sidecar == {**lm.metadata, "onnx_sha256": file_sha256(out)}  # and the file's own checksum
    meta = checkpoint.read_meta(run_dir)
    assert lm.vocab == meta["vocab"]
    assert "".join(lm.vocab[i] for i in range(len(lm.vocab))) == "".join(sorted(lm.vocab))
    assert lm.metadata["config"] == {
        **{k: meta["model"][k] for k in ("n_layer", "n_head", "n_embd", "block_size", "vocab_size")},
        "head_dim": 8,
        "receptive_field": 16,
        "position": "learned",
        "activation": "relu",
        "norm": "layernorm",
        "bias": True,
        "tie_weights": False,
        "qk_norm": False,
        "mlp_ratio": 4,
        "rope_base": 10000.0,
    }
    training = lm.metadata["training"]
    assert training["val_loss"] == meta["val_loss_full"]
    assert training["step"] == 60
    assert training["params"] == load_torch_model(run_dir).num_params()
    assert lm.metadata["source_sha256"] == file_sha256(run_dir / "model.safetensors")


def test_onnxruntime_matches_pytorch_and_cached_decoding_matches_a_full_forward(exported):
    run_dir, out, _ = exported
    model, lm = load_torch_model(run_dir), OnnxModel(out)
    ids = np.random.default_rng(1).integers(0, lm.metadata["config"]["vocab_size"], (2, 40))  # window 16: slides
    full, _ = lm.forward(ids, lm.empty_past(2))
    with torch.no_grad():
        assert np.abs(full - model(torch.from_numpy(ids))[0].numpy()).max() <= 1e-4
    past, steps = lm.empty_past(2), []
    for t in range(40):
        logits, past = lm.forward(ids[:, t : t + 1], past)
        steps.append(logits)
        assert next(iter(past.values())).shape[2] == min(t + 1, 15)  # never more than the window
    assert np.abs(np.concatenate(steps, axis=1) - full).max() <= 1e-4


def test_an_independent_onnx_implementation_gives_the_same_logits(exported):
    from onnx.reference import ReferenceEvaluator

    run_dir, out, _ = exported
    lm = OnnxModel(out)
    reference = ReferenceEvaluator(onnx.load(str(out)))
    ids = np.random.default_rng(2).integers(0, lm.metadata["config"]["vocab_size"], (3, 7))
    feed = {"input_ids": ids, **lm.empty_past(3)}
    got, end = np.split(reference.run(["logits"], feed)[0], [len(lm.vocab)], axis=-1)
    assert np.all(end == export.onnx_export.END_OF_TEXT_LOGIT)  # the end-of-text id, never predicted
    assert np.abs(got - lm.forward(ids, lm.empty_past(3))[0]).max() <= 1e-4
    with torch.no_grad():
        assert np.abs(got - load_torch_model(run_dir)(torch.from_numpy(ids))[0].numpy()).max() <= 1e-4


def test_int8_reports_its_loss_delta_and_records_it(exported):
    _, out, result = exported
    delta = float(re.search(r"int8 - fp32: ([+-][0-9.]+) nats/char", result.stdout).group(1))
    assert abs(delta) <= 0.02
    int8 = OnnxModel(out.with_name("tiny.int8.onnx"))
    assert int8.metadata["training"]["quantization"].startswith("int8")
    assert int8.metadata["training"]["val_loss"] == pytest.approx(
        OnnxModel(out).metadata["training"]["val_loss"] + delta, abs=2e-4
    )
    assert out.with_name("tiny.int8.onnx").stat().st_size < 0.6 * out.stat().st_size


def test_int8_file_is_standard_onnx_with_int8_matmul_weights(exported):
    """Weights as int8 initializers behind Cast and Mul: no contrib operators, so another
    runtime (here onnx's reference evaluator) gives onnxruntime's logits."""
    from onnx.reference import ReferenceEvaluator

    _, out, _ = exported
    int8_path = out.with_name("tiny.int8.onnx")
    proto = onnx.load(str(int8_path))
    assert {n.domain for n in proto.graph.node} <= {"", "ai.onnx"}
    int8_weights = [i for i in proto.graph.initializer if i.data_type == onnx.TensorProto.INT8]
    n_matmul = sum(n.op_type == "MatMul" for n in proto.graph.node)
    assert len(int8_weights) == sum(n.op_type == "Cast" and n.input[0].endswith("_int8") for n in proto.graph.node) > 0
    assert n_matmul >= len(int8_weights)
    lm = OnnxModel(int8_path)
    ids = np.random.default_rng(1).integers(0, lm.metadata["config"]["vocab_size"], (2, lm.block_size))
    got = ReferenceEvaluator(proto).run(["logits"], {"input_ids": ids, **lm.empty_past(2)})[0][..., : len(lm.vocab)]
    assert np.abs(got - lm.forward(ids)[0]).max() <= 1e-4


def test_the_eval_command_reproduces_the_recorded_loss_with_onnxruntime_alone(exported, small_text, capsys):
    _, out, _ = exported
    code = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, export.cli as c; r = c.main(sys.argv[1:]); "
            "assert 'torch' not in sys.modules, 'eval imported torch'; sys.exit(r)",
            "eval",
            str(out),
            "--data",
            str(small_text),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert code.returncode == 0, code.stderr
    measured = float(
        re.search(r"val loss \(whole validation split, 3,999 characters\): ([0-9.]+)", code.stdout).group(1)
    )
    assert measured == pytest.approx(OnnxModel(out).metadata["training"]["val_loss"], abs=1e-4)


def test_a_modern_architecture_exports_and_verifies(tmp_path_factory, small_text, capsys):
    run_dir = trained_run(tmp_path_factory, small_text, *MODERN)
    assert export_main([str(run_dir), "--quantize", "int8"]) == 0  # by default, a model folder in the run directory
    out = capsys.readouterr().out
    assert "greedy 200 characters" in out
    assert "FAIL" not in out
    # The ring step (webapp/inference/ring.py) beside the model file, verified in float32 and with int8 weights.
    assert len(re.findall(r"ring step vs plain loop\s+2\s+35\s+\S+\s+ok", out)) == 2
    assert len(re.findall(r"ring step: greedy 200 characters\s+1\s+200\s+identical\s+ok", out)) == 2
    assert (run_dir / "model" / "onnx" / "model.ring.onnx").is_file()
    # Beside it, the draft table of the training split (webapp/inference/drafting.py).
    table = json.loads((run_dir / "model" / "onnx" / "model.drafts.json").read_text(encoding="utf-8"))
    assert table["source"]["split"] == "train"
    assert table["source"]["characters"] == split_index(len(small_text.read_text(encoding="utf-8")))
    fast, plain = Engine(run_dir / "model"), Engine(run_dir / "model", ring=False)
    assert fast.ring is not None and fast.notice == ""
    assert fast.draft_table is not None and len(fast.draft_table.next) == len(table["next"]) > 1
    settings = SamplingParams(max_new_tokens=120, temperature=0.9, seed=3, num_samples=2)
    assert fast.complete("ab", settings) == plain.complete("ab", settings)
    # Greedy text loops, so drafts are long; a step still takes at most as many characters as the ring has slots.
    sizes, forward = [], fast.ring.forward
    fast.ring.forward = lambda ids, state: (sizes.append(ids.shape[1]), forward(ids, state))[1]
    greedy = SamplingParams(max_new_tokens=300, temperature=0)
    assert fast.complete("ab", greedy) == plain.complete("ab", greedy)
    assert 1 < max(sizes) <= 15 and len(sizes) < 299
    loop = re.search(r"plain loop vs last window.*?([0-9.]+) vs ([0-9.]+) nats/char, cache <= 15\s+ok", out)
    assert loop
    assert float(loop.group(1)) - float(loop.group(2)) <= 0.01
    lm = OnnxModel(run_dir / "model")
    assert lm.metadata["config"]["position"] == "rotary"
    assert lm.receptive_field == 2 * 15 + 1


def test_an_export_without_a_ring_file_removes_one_left_beside_its_model(tmp_path):
    """A learned-position model exported with --force over a rotary one's files: the old ring
    file belongs to other weights, so it goes (the engine would refuse it anyway)."""
    from export.writing import place_beside

    model = tmp_path / "model.onnx"
    shutil.copy(SHIPPED_MODEL / "onnx" / "model.ring.onnx", tmp_path / "model.ring.onnx")
    place_beside(None, ring_path(model))
    assert list(tmp_path.iterdir()) == []
    fresh = tmp_path / "fresh.onnx"
    fresh.write_bytes(b"verified")
    place_beside(fresh, ring_path(model))
    assert [p.name for p in tmp_path.iterdir()] == ["model.ring.onnx"]


def test_an_export_without_a_draft_table_removes_one_left_beside_its_model(tmp_path):
    """--no-draft-table (or a model without a ring file) over an earlier export's files: the old
    table goes, so that what the folder holds is what the export was asked for."""
    from export.writing import place_table

    model = tmp_path / "model.onnx"
    shutil.copy(SHIPPED_MODEL / "onnx" / "model.drafts.json", tmp_path / "model.drafts.json")
    place_table(None, model)
    assert list(tmp_path.iterdir()) == []
    place_table({"format": "chargpt-drafts/1"}, model)
    assert [p.name for p in tmp_path.iterdir()] == ["model.drafts.json"]


@pytest.fixture
def graph_of_exported(exported, monkeypatch):
    """Exports of the `exported` run that take its graph, exported once already, instead of running
    torch.onnx.export again; everything after it (naming, metadata, the checks, writing) runs."""

    def copy(model, path, attention):
        shutil.copy(exported[1], path)
        shutil.copy(attention_path(exported[1]), attention)

    monkeypatch.setattr(export.export_command, "export_onnx", copy)


def test_a_broken_export_is_refused_and_nothing_is_written(exported, graph_of_exported, tmp_path, monkeypatch, capsys):
    run_dir, _, _ = exported
    traced = export.export_command.export_onnx  # graph_of_exported's: the run's graph, traced once

    def perturbed(model, path, attention):
        traced(model, path, attention)
        graph = onnx.load(str(path))
        weight = next(t for t in graph.graph.initializer if t.name == "model.lm_head.bias")
        values = onnx.numpy_helper.to_array(weight).copy()
        values[0] += 0.01
        weight.CopyFrom(onnx.numpy_helper.from_array(values, weight.name))
        onnx.save(graph, str(path))

    monkeypatch.setattr(export.export_command, "export_onnx", perturbed)
    out = tmp_path / "broken.onnx"
    assert export_main([str(run_dir), "--out", str(out)]) == 1
    captured = capsys.readouterr()
    assert "FAIL" in captured.out
    assert "does not match PyTorch" in captured.err
    assert list(tmp_path.iterdir()) == []


# --- bad input -----------------------------------------------------------------------------


def assert_refused(capsys, argv, message, prog="python -m export"):
    code = export_main(argv)
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith(f"{prog}: error: ")
    assert message in err
    assert err.count("\n") == 1


def test_lower_loss_picks_the_lowest_of_the_final_weights_best_and_average(exported, tmp_path):
    from export.export_command import lower_loss_checkpoint

    run = tmp_path / "run"
    shutil.copytree(exported[0], run, ignore=shutil.ignore_patterns("best", "average"))
    for name in ("best", "average"):
        (run / name).mkdir()
        for file in ("model.safetensors", "config.json"):
            shutil.copy(run / file, run / name / file)

    def losses(final: float, best: float, average: float) -> Path:
        for directory, loss in ((run, final), (run / "best", best), (run / "average", average)):
            meta = json.loads((directory / "config.json").read_text())
            (directory / "config.json").write_text(json.dumps({**meta, "val_loss_full": loss}))
        return lower_loss_checkpoint(run)

    assert losses(2.0, 1.9, 1.8) == run / "average"
    assert losses(2.0, 1.9, 2.1) == run / "best"
    assert losses(1.7, 1.9, 1.8) == run
    assert losses(1.8, 1.8, 1.8) == run  # the final weights unless another is lower


def unfinished_copy(run_dir: Path, tmp_path: Path) -> Path:
    """The run, as if stopped before its final evaluation."""
    unfinished = tmp_path / "unfinished"
    shutil.copytree(run_dir, unfinished)
    meta = json.loads((unfinished / "config.json").read_text())
    (unfinished / "config.json").write_text(json.dumps({k: v for k, v in meta.items() if k != "val_loss_full"}))
    return unfinished


def broken_checkpoint(run_dir: Path, tmp_path: Path, damage: str) -> Path:
    """A checkpoint of a future format, or with its weights cut short."""
    broken = tmp_path / "broken"
    broken.mkdir()
    if damage == "format":
        (broken / "config.json").write_text(json.dumps({"format": "chargpt-checkpoint/99"}))
    else:
        (broken / "config.json").write_text(json.dumps(checkpoint.read_meta(run_dir)))
        (broken / "model.safetensors").write_bytes((run_dir / "model.safetensors").read_bytes()[:1000])
    return broken


def written_file(tmp_path: Path, name: str, text: str) -> Path:
    (tmp_path / name).write_text(text)
    return tmp_path / name


# Each bad input: its command line from (run_dir, the export already written, tmp_path), and the
# sentence that refuses it ({tmp}: tmp_path). A new folder under tmp_path/new would be made by an export: these are
# refused before that.
BAD_EXPORTS = {
    "a missing folder": (lambda run, out, tmp: [tmp / "missing"], "is not a directory"),
    "a folder without a checkpoint": (lambda run, out, tmp: [tmp], "holds no config.json"),
    "an example outside the vocabulary": (
        lambda run, out, tmp: [run, "--out", tmp / "new" / "m.onnx", "--example", "ROMEO:\u00e6"],
        "the example prompt 'ROMEO:\u00e6' has characters outside the model's vocabulary ('\u00e6')",
    ),
    "a blank description": (
        lambda run, out, tmp: [run, "--out", tmp / "new" / "m.onnx", "--description", " "],
        "the description must be one line of 1 to 300",
    ),
    "--lower-loss of an unfinished run": (
        lambda run, out, tmp: [unfinished_copy(run, tmp), "--lower-loss"],
        "--lower-loss needs a finished run, and {tmp}/unfinished has not finished",
    ),
    "an --out that is neither a folder nor .onnx": (
        lambda run, out, tmp: [run, "--out", tmp / "m.txt"],
        "must be a folder (ending in /) or a file ending in .onnx",
    ),
    "an --out folder that is a file": (
        lambda run, out, tmp: [run, "--out", f"{written_file(tmp, 'file', 'x')}/"],
        "is a file, not a folder",
    ),
    "an --out that exists": (lambda run, out, tmp: [run, "--out", out], "already exist; pass --force"),
    "int8 measured on another text": (
        lambda run, out, tmp: [
            *(run, "--out", tmp / "q.onnx", "--quantize", "int8"),
            *("--data", written_file(tmp, "other.txt", "Some other text. " * 200)),
        ],
        "is not the text this model was trained on",
    ),
    "a checkpoint of a future format": (
        lambda run, out, tmp: [broken_checkpoint(run, tmp, "format")],
        "this version of chargpt reads 'chargpt-checkpoint/1'",
    ),
    "weights that do not match their checksum": (
        lambda run, out, tmp: [broken_checkpoint(run, tmp, "weights")],
        "does not match the checksum",
    ),
}


@pytest.mark.parametrize("case", BAD_EXPORTS)
def test_a_bad_export_input_is_refused_in_one_sentence_and_nothing_is_written(exported, tmp_path, capsys, case):
    run_dir, out, _ = exported
    before = out.read_bytes()
    argv, said = BAD_EXPORTS[case]
    assert_refused(capsys, [str(a) for a in argv(run_dir, out, tmp_path)], said.format(tmp=tmp_path))
    assert out.read_bytes() == before
    assert not (tmp_path / "new").exists()
    assert not [p for p in tmp_path.iterdir() if p.suffix == ".onnx"]


def test_bad_eval_inputs(exported, tmp_path, capsys, small_text, monkeypatch):
    _, out, _ = exported
    prog = "python -m export eval"
    assert_refused(capsys, ["eval", str(tmp_path / "none.onnx"), "--data", str(small_text)], "does not exist", prog)
    (tmp_path / "junk.onnx").write_bytes(b"not a model")
    assert_refused(
        capsys, ["eval", str(tmp_path / "junk.onnx"), "--data", str(small_text)], "is not a readable ONNX model", prog
    )
    x = onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1])
    y = onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1])
    plain = onnx.helper.make_model(
        onnx.helper.make_graph([onnx.helper.make_node("Identity", ["x"], ["y"])], "g", [x], [y])
    )
    onnx.save(plain, str(tmp_path / "plain.onnx"))
    assert_refused(
        capsys,
        ["eval", str(tmp_path / "plain.onnx"), "--data", str(small_text)],
        "is an ONNX file without chargpt metadata",
        prog,
    )
    (tmp_path / "emoji.txt").write_text("Hello 🙂 world, " * 50)
    assert_refused(
        capsys,
        ["eval", str(out), "--data", str(tmp_path / "emoji.txt")],
        "characters the model's vocabulary lacks",
        prog,
    )
    assert_refused(capsys, ["eval", str(out), "--data", str(tmp_path / "none.txt")], "does not exist", prog)
    monkeypatch.setenv("CHARGPT_CACHE", str(tmp_path / "empty-cache"))  # its text is not Tiny Shakespeare anyway
    assert_refused(
        capsys, ["eval", str(out)], "the model's training text was not found; pass it with --data FILE.", prog
    )


# --- the model folder ----------------------------------------------------------------------


def test_the_folder_holds_what_generation_libraries_read(french_folder):
    folder, _ = french_folder
    names = sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())
    assert names == [
        "README.md",
        "config.json",
        "genai_config.json",
        "generation_config.json",
        "onnx/model.attention.onnx",
        "onnx/model.json",
        "onnx/model.loss.png",
        "onnx/model.onnx",
        "tokenizer.json",
        "tokenizer_config.json",
    ]
    lm = OnnxModel(folder)
    end = len(lm.vocab)
    config = json.loads((folder / "config.json").read_text())
    assert (config["model_type"], config["vocab_size"], config["eos_token_id"]) == ("gpt2", end + 1, end)
    genai = json.loads((folder / "genai_config.json").read_text())["model"]
    assert genai["eos_token_id"] == genai["pad_token_id"] == end
    assert genai["vocab_size"] == end + 1
    assert genai["decoder"]["sliding_window"]["window_size"] + genai["decoder"]["sliding_window"]["cache_slack"] == 15
    proto = onnx.load(str(folder / "onnx" / "model.onnx"))
    dims = [[d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim] for i in proto.graph.input[:2]]
    assert dims == [["batch_size", "sequence_length"], ["batch_size", 4, "past_sequence_length", 8]]


def test_the_card_carries_the_hubs_metadata(french_folder):
    folder, _ = french_folder
    card = (folder / "README.md").read_text(encoding="utf-8")
    front, body = card.split("---\n")[1], card.split("---\n", 2)[2]
    for line in (
        "license: mit",
        "pipeline_tag: text-generation",
        "library_name: transformers.js",
        "- chargpt",
        "model-index:",
        "    - type: loss",
        "      name: Validation loss (whole split, nats per character)",
    ):
        assert line in front.splitlines(), line
    val = OnnxModel(folder).metadata["training"]["val_loss"]
    assert f"      value: {round(val, 4)}" in front.splitlines()
    assert "datasets:" not in front  # not Tiny Shakespeare: the card names the text by its SHA-256
    assert body.startswith("# french-tiny")
    assert "## Use it" in body
    assert "onnxruntime_genai" in body


@pytest.mark.parametrize("text", ["« Où êtes-vous\u202f? »\n", "Ça c’est l’été — déjà… 🎭 Ω €"])
def test_tokenizer_json_gives_the_models_ids_in_the_tokenizers_library(french_folder, text):
    from tokenizers import Tokenizer

    folder, _ = french_folder
    lm = OnnxModel(folder)
    tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
    ids = tokenizer.encode(text).ids
    assert ids == [lm.vocab.index(c) for c in text]
    assert tokenizer.decode(ids) == text


def test_any_vocabulary_round_trips_through_the_byte_level_tokenizer():
    """Characters of every UTF-8 length, spaces of every kind, controls, combining marks."""
    from tokenizers import Tokenizer

    from export.folder import tokenizer_json

    vocab = sorted(set("aé€🎭\n\t \u00a0\u202f\u2009\u3000\u200b\x00\x7f\u0301ÃĠ“”‘’«»ЖΩ中あ\ufeff"))
    tokenizer = Tokenizer.from_str(json.dumps(tokenizer_json(vocab)))
    text = "".join(vocab) + "".join(reversed(vocab))
    assert tokenizer.encode(text).ids == [vocab.index(c) for c in text]
    assert tokenizer.decode(tokenizer.encode(text).ids) == text


def test_an_existing_folder_is_not_overwritten(exported, graph_of_exported, tmp_path, capsys):
    run_dir, _, _ = exported
    folder = tmp_path / "deep" / "folder"  # missing parents are created
    assert export_main([str(run_dir), "--out", f"{folder}/"]) == 0
    capsys.readouterr()
    before = (folder / "onnx" / "model.onnx").read_bytes()
    assert_refused(
        capsys, [str(run_dir), "--out", str(folder)], "already exist; pass --force"
    )  # an existing folder, no /
    assert (folder / "onnx" / "model.onnx").read_bytes() == before
    assert [p.name for p in folder.rglob(".*")] == []  # no temporary files left


def test_the_shipped_plain_loop_stays_within_the_window_and_near_its_loss(shakespeare):
    """The acceptance figure, as export checks it (there on 1,500 validation characters, here on
    500): a runtime's plain loop on the shipped folder is at most 0.01 nats/char worse than
    predicting each character from exactly its last block_size, and its cache never holds more than
    block_size - 1."""
    from export.runtime import last_window_loss, plain_loop_loss

    lm = OnnxModel(SHIPPED_MODEL)
    text = shakespeare.read_text(encoding="utf-8")
    ids = np.array([lm.vocab.index(c) for c in text[split_index(len(text)) :][:500]], dtype=np.int64)
    loop, count, longest = plain_loop_loss(lm, ids)
    exact = last_window_loss(lm, ids)
    assert count == 500 - lm.block_size
    assert longest == lm.block_size - 1
    assert loop - exact <= 0.01  # (on so short a stretch the plain loop may even come out ahead)


def test_eval_takes_a_model_folder(french_folder, capsys):
    folder, data = french_folder
    assert export_main(["eval", str(folder), "--data", str(data)]) == 0
    measured = float(
        re.search(r"val loss \(whole validation split, [0-9,]+ characters\): ([0-9.]+)", capsys.readouterr().out).group(
            1
        )
    )
    assert measured == pytest.approx(OnnxModel(folder).metadata["training"]["val_loss"], abs=1e-4)


def test_eval_of_a_tiny_shakespeare_model_fetches_the_text_as_train_does(tmp_path, monkeypatch, capsys):
    """Without --data and with nothing cached: the one sentence of a failed download, then, once
    it can be fetched, the shipped model's recorded loss, with the text cached for next time."""
    monkeypatch.setenv("CHARGPT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("CHARGPT_SHAKESPEARE_URL", (tmp_path / "offline.txt").as_uri())
    assert_refused(
        capsys,
        ["eval", str(SHIPPED_MODEL)],
        "Tiny Shakespeare is not cached and could not be downloaded",
        "python -m export eval",
    )
    monkeypatch.setenv("CHARGPT_SHAKESPEARE_URL", (SHARED / "data" / "tinyshakespeare.txt").as_uri())
    assert export_main(["eval", str(SHIPPED_MODEL)]) == 0
    assert "val loss (whole validation split, 111,539 characters): 1.4237" in capsys.readouterr().out
    assert (tmp_path / "cache" / "tinyshakespeare.txt").read_bytes() == (
        SHARED / "data" / "tinyshakespeare.txt"
    ).read_bytes()


# --- about: renaming a folder without exporting again ----------------------------------------


def files_of(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def test_about_renames_a_folder_in_place_and_keeps_its_weights_and_verification(tmp_path, capsys):
    folder = tmp_path / "chargpt"
    shutil.copytree(SHIPPED_MODEL, folder)
    assert (
        export_main(["about", str(folder), "--dataset-name", "Tiny Shakespeare"]) == 0
    )  # nothing new: nothing changes
    assert files_of(folder) == files_of(SHIPPED_MODEL)

    weights = {t.name: t.raw_data for t in onnx.load(str(folder / "onnx" / "model.onnx")).graph.initializer}
    assert (
        export_main(
            ["about", str(folder), "--title", "Verona", "--description", "Two households.", "--example", "JULIET:\\n"]
        )
        == 0
    )
    assert 'the page is now "Verona" (1 example prompts)' in capsys.readouterr().out
    lm = OnnxModel(folder)  # the SHA-256 in model.json is the rewritten file's
    assert lm.metadata["about"] == {
        "title": "Verona",
        "dataset": "Tiny Shakespeare",
        "description": "Two households.",
        "examples": ["JULIET:\n"],
    }
    assert {t.name: t.raw_data for t in onnx.load(str(folder / "onnx" / "model.onnx")).graph.initializer} == weights
    engine = Engine(folder)
    assert engine.ring is not None and engine.notice == ""  # the ring file still belongs to the model file
    card, shipped_card = (folder / "README.md").read_text(), (SHIPPED_MODEL / "README.md").read_text()
    assert "Two households." in card and '"Verona"' in card and '- `"JULIET:\\n"`' in card
    assert (
        card.split("## Greedy continuation")[1].split("## Use it")[0]
        == shipped_card.split("## Greedy continuation")[1].split("## Use it")[0]
    )


def test_about_follows_a_derived_title_and_refuses_what_a_page_cannot_show(french_folder, tmp_path, capsys):
    folder = tmp_path / "french"
    shutil.copytree(french_folder[0], folder)
    before = files_of(folder)
    assert OnnxModel(folder).metadata["about"]["title"] == "chargpt: french"
    assert_refused(
        capsys, ["about", str(folder), "--example", "Ж"], "outside the model's vocabulary", "python -m export about"
    )
    assert_refused(capsys, ["about", str(folder)], "give at least one of", "python -m export about")
    assert_refused(capsys, ["about", str(tmp_path)], "is not a model folder", "python -m export about")
    assert files_of(folder) == before

    assert export_main(["about", str(folder), "--dataset-name", "Poèmes"]) == 0
    about = OnnxModel(folder).metadata["about"]
    assert (about["title"], about["dataset"]) == ("chargpt: Poèmes", "Poèmes")
    assert about["description"].startswith("A small character-level GPT trained on Poèmes.")
    (folder / "onnx" / "model.onnx").write_bytes((folder / "onnx" / "model.onnx").read_bytes()[:-10])
    assert_refused(capsys, ["about", str(folder), "--title", "x"], "truncated or altered", "python -m export about")


# --- the attention file ----------------------------------------------------------------------


def test_the_attention_files_weights_are_pytorchs_and_the_export_checked_them(exported, french_folder):
    """Both layouts write the attention file beside each model file, checked in the table; its
    weights from a text longer than the window, read as the pages read them, are PyTorch's."""
    run_dir, out, result = exported
    for row in ("attention weights: from an empty cache", "attention weights: after a prefill of 4"):
        assert re.search(rf"{re.escape(row)}\s+[13]\s+7\s+\S+\s+ok", result.stdout), row
    assert re.search(
        r"attention rows sum to 1, none before the text\s+-\s+-\s+\|sum - 1\| <= \S+, before: 0\s+ok", result.stdout
    )
    assert "the attention file with int8 weights, against PyTorch with the weights of" in result.stdout
    assert attention_path(out).is_file() and attention_path(out.with_name("tiny.int8.onnx")).is_file()
    from webapp.inference.attention import load_attention

    folder, data = french_folder
    model = checkpoint.load_model(folder.parent / "run", checkpoint.read_meta(folder.parent / "run")).eval()
    lm = OnnxModel(folder)
    attention, notice = load_attention(lm)
    assert notice == ""
    ids = [lm.vocab.index(c) for c in data.read_text(encoding="utf-8")[:40]]  # a window of 16 and more
    with torch.no_grad():
        want = model.attention(torch.tensor([ids]))[0, :, :, -1].numpy()  # [L, H, block_size]
    got = attention.last_position(ids)
    assert got.shape == want.shape == (2, 4, 16)
    assert np.abs(got - want).max() <= 1e-4
    assert np.abs(got.sum(-1) - 1).max() <= 1e-5


def test_the_attention_check_fails_for_other_weights(exported):
    """The check can fail: an attention file against PyTorch with other weights is refused."""
    from export.verification import verify_attention

    run_dir, out, _ = exported
    model = checkpoint.load_model(run_dir, checkpoint.read_meta(run_dir))
    with torch.no_grad():
        model.blocks[0].attn.qkv.weight.mul_(1.5)
    checks = verify_attention(model, out, attention_path(out))
    assert not all(c.ok for c in checks if c.name.startswith("attention weights"))


def test_export_attention_adds_the_file_to_a_model_exported_before_it(exported, french_folder, tmp_path, monkeypatch):
    """`python -m export attention`: the int8 file's own int8 weights (not rounded twice), the
    folder's card gets the table, the model file stays byte for byte, and a second run is refused.
    (The folder's graph is the one its export traced, taken instead of tracing it again.)"""
    from conftest import export_here

    _, out, _ = exported
    int8 = out.with_name("tiny.int8.onnx")
    older = tmp_path / "older"
    older.mkdir()
    for path in (int8, int8.with_suffix(".json")):
        shutil.copy(path, older / path.name.replace("tiny.int8", "model"))
    result = export_here("attention", str(older / "model.onnx"))
    assert result.returncode == 0, result.stdout + result.stderr
    made, shipped = onnx.load(str(older / "model.attention.onnx")), onnx.load(str(attention_path(int8)))

    def int8_weights(proto):
        return {i.name: i.raw_data for i in proto.graph.initializer if i.name.endswith(("_int8", "_scale"))}

    assert int8_weights(made) == int8_weights(shipped) and int8_weights(made)

    folder = tmp_path / "folder"
    shutil.copytree(french_folder[0], folder)
    traced = attention_path(folder / "onnx" / "model.onnx").rename(tmp_path / "traced.onnx")
    monkeypatch.setattr(export.attention_command, "export_attention", lambda model, path: shutil.copy(traced, path))
    before = (folder / "onnx" / "model.onnx").read_bytes()
    result = export_here("attention", str(folder))
    assert result.returncode == 0, result.stdout + result.stderr
    assert (folder / "onnx" / "model.onnx").read_bytes() == before
    assert "the attention file, against PyTorch with the weights of model.onnx:" in (folder / "README.md").read_text()
    assert "Verification against PyTorch" in (folder / "README.md").read_text()
    again = export_here("attention", str(folder))
    assert again.returncode == 2
    assert again.stderr.strip().endswith("already exists; pass --force to replace it.")
    assert export_here("attention", str(tmp_path / "nothing")).returncode == 2
