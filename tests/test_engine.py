"""The engine: its text against PyTorch's and against a from-scratch reference decoder, its
prompts, stop strings and settings, and the model files it loads or refuses."""

import json
import re
import shutil

import numpy as np
import pytest
import torch
from helpers import spoil_ring

from webapp.inference.engine import Engine, Piece, StopFilter, encode_prompt, serving_threads
from webapp.inference.onnx_model import SHIPPED_MODEL, ModelLoadError, OnnxModel
from webapp.inference.sampling import SamplingParams, SplitMix64, next_ids


@pytest.fixture(scope="module")
def engine(exported):
    return Engine(exported[1], device="cpu")


def test_shipped_greedy_text_equals_pytorchs_plain_loop():
    """The shipped model has rotary positions and a sliding window: 300 characters, more than
    twice its window, from the PyTorch model that its file's weights rebuild. (The tiny model's
    learned positions: tests/test_benchmarks.py, every decoder against the lecture's code.)"""
    from export.onnx_export import torch_model_from_onnx

    engine = Engine(SHIPPED_MODEL)
    model = torch_model_from_onnx(engine.path)
    ids = encode_prompt("ROMEO:", engine.vocab).ids
    expected = torch.cat(list(model.generate_cached(torch.tensor([ids]), 300, temperature=0)), dim=1)[0].tolist()
    assert engine.complete("ROMEO:", SamplingParams(max_new_tokens=300, temperature=0))[0] == "".join(
        engine.vocab[i] for i in expected
    )


@pytest.mark.parametrize("model_path", ["tiny", "shipped"])
def test_cached_decoding_samples_what_a_full_recompute_would(exported, model_path):
    """Reference: every character sampled from a fresh prefill of everything before it (its
    receptive field), no cache carried over."""
    lm = OnnxModel(exported[1] if model_path == "tiny" else SHIPPED_MODEL)
    engine = Engine(lm.path)
    settings = SamplingParams(max_new_tokens=80, temperature=1.0, top_k=20, top_p=0.95, seed=11)
    context = encode_prompt("KING RICHARD III:", engine.vocab).ids
    rng, expected = [SplitMix64(11)], []
    for _ in range(80):
        logits, _ = lm.forward(np.array([context[-lm.receptive_field :]]), lm.empty_past(1))
        next_id = int(next_ids(logits[:, -1], [settings], rng)[0])
        expected.append(lm.vocab[next_id])
        context.append(next_id)
    assert engine.complete("KING RICHARD III:", settings)[0] == "".join(expected)


def test_same_seed_same_text_and_batch_rows_are_independent(engine):
    settings = SamplingParams(max_new_tokens=60, temperature=0.9, seed=5, num_samples=3)
    batch = engine.complete("JULIET:", settings)
    assert batch == engine.complete("JULIET:", settings)
    singles = [
        engine.complete("JULIET:", SamplingParams(max_new_tokens=60, temperature=0.9, seed=5 + r))[0] for r in range(3)
    ]
    assert batch == singles
    assert len(set(batch)) == 3


def test_probabilities_are_those_the_model_gave(engine, exported):
    lm = OnnxModel(exported[1])
    prompt = encode_prompt("ROMEO:", engine.vocab)
    step = next(engine.generate(prompt, SamplingParams(max_new_tokens=1, temperature=0)))
    ((ch, p, _),) = step.pieces[0]
    logits, _ = lm.forward(np.array([prompt.ids]), lm.empty_past(1))
    probs = np.exp(logits[0, -1] - logits[0, -1].max())
    probs /= probs.sum()
    assert ch == lm.vocab[int(probs.argmax())]
    assert p == pytest.approx(float(probs.max()), rel=1e-5)


def test_stop_string_ends_generation_and_is_not_shown():
    f = StopFilter("\n\n")
    shown = [f.push(Piece(c, 0.5)) for c in "ab\nc\n\nzz"]
    assert "".join(p.char for piece in shown for p in piece) == "ab\nc"
    assert shown[2] == []
    assert shown[3] == [("\n", 0.5, None), ("c", 0.5, None)]  # a held-back newline is released
    assert f.finished
    assert f.push(Piece("x", 1.0)) == []
    held = StopFilter("END")
    assert held.push(Piece("E", 1)) == []
    assert held.push(Piece("N", 1)) == []
    assert held.flush() == [("E", 1, None), ("N", 1, None)]


def test_stop_string_through_the_engine(engine):
    free = engine.complete("ROMEO:", SamplingParams(max_new_tokens=200, temperature=0.8, seed=2))[0]
    stop = free[20:22]
    stopped = engine.complete("ROMEO:", SamplingParams(max_new_tokens=200, temperature=0.8, seed=2, stop=stop))[0]
    assert stopped == free[: free.index(stop)]


def test_prompt_characters_outside_the_vocabulary_are_replaced_or_dropped(engine):
    encoded = encode_prompt("Café 🙂 {x}", engine.vocab)
    assert encoded.replaced == {"é": "e"}
    assert encoded.dropped == ["🙂", "{", "}"]
    assert encoded.text == "Cafe  x"
    assert "dropped '🙂', '{', '}'" in encoded.notice()
    assert encode_prompt("", engine.vocab).text == "\n"
    assert encode_prompt("🙂", engine.vocab).text == "\n"
    # A long prompt: only its last receptive_field characters can change what comes next.
    long = "To be, or not to be, that is the question. " * 20
    tail = long[-engine.receptive_field :]
    a = engine.complete(long, SamplingParams(max_new_tokens=30, temperature=0))
    assert a == engine.complete(tail, SamplingParams(max_new_tokens=30, temperature=0))


def test_bad_model_files_are_named(tmp_path, shakespeare):
    with pytest.raises(ModelLoadError, match=r"model .*missing.onnx does not exist; use the shipped models/chargpt,"):
        Engine(tmp_path / "missing.onnx")
    (tmp_path / "text.onnx").write_bytes(shakespeare.read_bytes()[:1000])
    with pytest.raises(ModelLoadError, match="is not a readable ONNX model"):
        Engine(tmp_path / "text.onnx")


def test_cuda_asked_for_falls_back_to_cpu_with_a_notice(exported):
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this onnxruntime has CUDA")
    engine = Engine(exported[1], device="cuda")
    assert engine.provider == "CPUExecutionProvider"
    assert "running on CPU" in engine.notice


def test_a_model_folder_missing_a_file_is_named(tmp_path):
    folder = tmp_path / "model"
    shutil.copytree(SHIPPED_MODEL, folder)
    (folder / "genai_config.json").unlink()
    with pytest.raises(
        ModelLoadError, match=r"the model folder .*model has no genai_config.json; export the folder again"
    ):
        Engine(folder)
    (folder / "onnx" / "model.onnx").unlink()
    with pytest.raises(ModelLoadError, match=r"has no genai_config.json \(nor onnx/model.onnx\)"):
        Engine(folder)


def test_a_tokenizer_that_disagrees_with_the_vocabulary_is_named(tmp_path):
    folder = tmp_path / "model"
    shutil.copytree(SHIPPED_MODEL, folder)
    tokenizer = json.loads((folder / "tokenizer.json").read_text(encoding="utf-8"))
    vocab = tokenizer["model"]["vocab"]
    vocab["a"], vocab["b"] = vocab["b"], vocab["a"]  # two characters swap ids
    (folder / "tokenizer.json").write_text(json.dumps(tokenizer), encoding="utf-8")
    with pytest.raises(
        ModelLoadError, match=r"tokenizer.json disagrees with the model's vocabulary: id 39 is 'b' there and 'a'"
    ):
        Engine(folder)
    (folder / "tokenizer.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(ModelLoadError, match=r"tokenizer.json is not a tokenizer.json with a vocabulary"):
        Engine(folder)
    assert Engine(folder / "onnx" / "model.onnx").vocab  # the .onnx file alone does not need the tokenizer


def test_the_ring_steps_rotary_tables_are_kept_for_the_first_positions_and_computed_past_them():
    from webapp.inference.ring import TABLE_POSITIONS, rotary_tables

    ring = Engine(SHIPPED_MODEL).ring
    for positions in ([0, 4095, 4096, TABLE_POSITIONS - 1, 17], [TABLE_POSITIONS, 10**7, 3], [2**40]):
        positions = np.array(positions)
        cos, sin = ring.tables_at(positions)
        want_cos, want_sin = rotary_tables(positions, ring.head_dim, ring.rope_base)
        assert np.array_equal(cos, want_cos) and np.array_equal(sin, want_sin)
        assert len(ring.cos) == TABLE_POSITIONS  # bounded memory at any length


@pytest.mark.parametrize(
    "how, message",
    [
        ("not onnx", "model.ring.onnx is not a readable ONNX model"),
        ("another model's", "model.ring.onnx was not exported with model.onnx"),
        ("altered", r"model.ring.onnx disagrees with model.onnx \(max \|Δ logit\| "),
        ("older", r"model.ring.onnx is an older ring file \(one character a step\); export the model again"),
    ],
)
def test_a_ring_file_that_does_not_belong_is_not_used_and_the_notice_says_why(tmp_path, how, message):
    folder = tmp_path / "model"
    shutil.copytree(SHIPPED_MODEL, folder)
    spoil_ring(folder / "onnx" / "model.ring.onnx", how)
    engine = Engine(folder)
    assert engine.ring is None
    assert re.search(message + r".*decoding with model.onnx\.$", engine.notice)
    settings = SamplingParams(max_new_tokens=150, temperature=0)  # the model file alone: the same text
    assert engine.complete("ROMEO:", settings) == Engine(SHIPPED_MODEL).complete("ROMEO:", settings)


def test_an_old_format_model_is_refused_with_how_to_export_again(tmp_path):
    import onnx

    proto = onnx.load(str(SHIPPED_MODEL / "onnx" / "model.onnx"))
    for prop in proto.metadata_props:
        if prop.key == "chargpt.format":
            prop.value = "1"
    onnx.save(proto, str(tmp_path / "old.onnx"))
    with pytest.raises(
        ModelLoadError,
        match=r"has chargpt format '1' and this version reads '2' \(format 1 keeps the window "
        r"outside its graph\); export its checkpoint again with `python -m export RUN_DIR --out DIR/`",
    ):
        Engine(tmp_path / "old.onnx")


def test_the_servers_engine_leaves_a_core_to_the_web_server():
    assert [serving_threads(cores) for cores in (1, 2, 4, 16)] == [1, 1, 3, 15]
    engine = Engine.for_server(SHIPPED_MODEL)
    assert engine.session_args["threads"] == serving_threads() and engine.session_args["spinning"] is False
    options = engine.ring.session.get_session_options()  # the ring file's session is opened the same way
    assert options.intra_op_num_threads == serving_threads()
    assert options.get_session_config_entry("session.force_spinning_stop") == "1"


def spins_after_each_run(session) -> bool:
    try:
        return session.get_session_options().get_session_config_entry("session.force_spinning_stop") != "1"
    except RuntimeError:  # onnxruntime raises for an entry never set: its default, spinning
        return True


def test_the_engines_threads_stop_spinning_after_each_run_unless_asked():
    """By default both of an engine's sessions (the prefill's and the ring steps') stop their
    threads after each run; spinning=True keeps onnxruntime's default, as a bare OnnxModel does
    (docs/speed.md)."""
    stopping, spinning = Engine(SHIPPED_MODEL), Engine(SHIPPED_MODEL, spinning=True)
    assert [spins_after_each_run(s) for s in (stopping.session, stopping.ring.session)] == [False, False]
    assert [spins_after_each_run(s) for s in (spinning.session, spinning.ring.session)] == [True, True]
    assert spins_after_each_run(OnnxModel(SHIPPED_MODEL).session)


@pytest.mark.parametrize(
    "settings",
    [dict(temperature=0.8, top_k=12, top_p=0.9, min_p=0.02, seed=5, num_samples=2), dict(temperature=0, seed=1)],
)
def test_the_alternatives_are_the_distributions_each_character_was_drawn_from(monkeypatch, settings):
    """Asked for alternatives, the shipped engine (ring steps, drafts) writes the same text, and
    gives at each character the likeliest ones with the probabilities of the very distribution
    its draw was made from (recorded here as the draws read them), the drawn one last when it is
    not among them."""
    from webapp.inference import sampling

    engine = Engine(SHIPPED_MODEL)
    prompt = encode_prompt("JULIET:\n", engine.vocab)
    plain = SamplingParams(max_new_tokens=120, **settings)
    asked = SamplingParams(max_new_tokens=120, alternatives=5, **settings)
    text = engine.complete(prompt, plain)[0]
    draws = []
    draw_rows = sampling.draw_rows
    monkeypatch.setattr(sampling, "draw_rows", lambda probs, u: (draws.extend(probs), draw_rows(probs, u))[1])
    pieces = [row for step in engine.generate(prompt, asked) for row in step.pieces[0]]
    assert "".join(p.char for p in pieces) == text
    for position, piece in enumerate(pieces):
        chars = [c for c, _, _ in piece.alternatives]
        assert len(chars) in (5, 6) and (chars.index(piece.char) < 5 or len(chars) == 6)
        assert [m for _, m, _ in piece.alternatives[:5]] == sorted(
            (m for _, m, _ in piece.alternatives[:5]), reverse=True
        )
        assert dict((c, m) for c, m, _ in piece.alternatives)[piece.char] == pytest.approx(piece.prob, abs=1e-12)
        if settings["temperature"] == 0:
            assert [s for _, _, s in piece.alternatives] == [1.0, 0, 0, 0, 0]
            continue
        distribution = draws[2 * position]  # row 0's: two rows draw at each position
        for c, _, s in piece.alternatives:
            assert s == pytest.approx(distribution[engine.vocab.index(c)], abs=1e-12)
    assert settings["temperature"] == 0 or len(draws) == 2 * len(pieces)


def test_a_notice_quotes_an_errors_first_line_or_its_type_when_it_says_nothing():
    from webapp.inference.onnx_model import first_line

    assert first_line(OSError("first\nsecond")) == "first"
    assert first_line(ValueError("")) == "ValueError"
    assert first_line(RuntimeError("x" * 300)) == "x" * 120
