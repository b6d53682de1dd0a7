"""The checks an export passes before anything is written: each file against PyTorch (the model
file's logits, cache and greedy text; the ring step against the model file; the attention file's
weights), printed as one table (docs/model-folder.md, "Export")."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import torch

from train.model import GPTLanguageModel
from train.table import format_table as table
from webapp.inference.attention import AttentionFile
from webapp.inference.engine import Engine
from webapp.inference.onnx_model import INPUT_IDS, LOGITS, OnnxModel, open_session
from webapp.inference.ring import RING_TOLERANCE, RingStep
from webapp.inference.sampling import SamplingParams

from .onnx_export import END_OF_TEXT_LOGIT
from .runtime import last_window_loss, plain_loop_loss

TOLERANCE = 1e-4  # max |logit difference| between PyTorch and onnxruntime, float32
GREEDY_CHARS = 200
# The plain loop (the window in the graph) against an exact last window, on validation text:
# at most this much worse, in nats per character.
PLAIN_LOOP_CHARS, PLAIN_LOOP_SLACK = 1500, 0.01


@dataclass
class Check:
    name: str
    batch: int | str
    length: int | str
    diff: float | None  # max |Δ logit|, or None for checks that are not a comparison
    ok: bool
    detail: str = ""


def verify(model: GPTLanguageModel, path: Path, prompt: list[int], text: np.ndarray) -> tuple[list[Check], list[int]]:
    """Compare the ONNX file with the PyTorch model: the onnx checker, prefills shorter and
    longer than the window, cached step-by-step decoding past the window, the end-of-text
    logit, a greedy continuation of `prompt` by the web app's engine (the plain loop), and,
    on `text` (validation ids), how the plain loop compares with an exact last window.
    Returns the checks and the continuation's ids (from onnxruntime)."""
    engine = Engine(path, device="cpu")  # the web app's own engine: what is verified is what serves
    model = model.eval()
    checks = [checker(path), *logits_checks(model, engine), end_of_text_check(engine, model.config.vocab_size)]
    greedy, onnx_ids = greedy_check(model, engine, prompt)
    return [*checks, greedy, plain_loop_check(engine, text[:PLAIN_LOOP_CHARS], model.config.block_size)], onnx_ids


def checker(path: Path) -> Check:
    """ONNX's own checker, in full."""
    try:
        onnx.checker.check_model(str(path), full_check=True)
        return Check("onnx checker (full)", "-", "-", None, True)
    except onnx.checker.ValidationError as e:
        return Check("onnx checker (full)", "-", "-", None, False, str(e).splitlines()[0])


def logits_checks(model: GPTLanguageModel, engine: Engine) -> list[Check]:
    """The engine's logits against PyTorch's for batch 1 and 3: prefills of 1, 7, block_size and
    2 * block_size + 3 characters, decoding one by one with the cache, and a prefill then decoding."""
    cfg, rng, checks = model.config, np.random.default_rng(0), []
    beyond = 2 * cfg.block_size + 3  # a text that slides the window twice

    def reference(ids: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return model(torch.from_numpy(ids))[0].numpy()

    def compare(name, batch, length, got, want):
        diff = float(np.abs(got - want).max())
        checks.append(Check(name, batch, length, diff, diff <= TOLERANCE))

    for batch in (1, 3):
        for length in sorted({1, 7, cfg.block_size, beyond}):
            ids = rng.integers(0, cfg.vocab_size, (batch, length))
            compare("prefill (empty cache)", batch, length, engine.forward(ids)[0], reference(ids))
        ids = rng.integers(0, cfg.vocab_size, (batch, beyond))
        want = reference(ids)  # one PyTorch forward for both ways of decoding the same text
        compare("decode one by one with cache", batch, beyond, decoded(engine, ids, 0), want)
        split = min(7, cfg.block_size - 1)
        compare(f"prefill {split}, then decode", batch, beyond, decoded(engine, ids, split), want)
    return checks


def decoded(engine: Engine, ids: np.ndarray, prefill: int) -> np.ndarray:
    """The logits of every position of `ids`: a prefill of its first `prefill` characters (none:
    an empty cache), then one cached step per character."""
    if prefill:
        first, past = engine.forward(ids[:, :prefill])
        steps = [first]
    else:
        past, steps = engine.empty_past(len(ids)), []
    for t in range(prefill, ids.shape[1]):
        logits, past = engine.forward(ids[:, t : t + 1], past)
        steps.append(logits)
    return np.concatenate(steps, axis=1)


def end_of_text_check(engine: Engine, vocab_size: int) -> Check:
    """The end-of-text column: one, END_OF_TEXT_LOGIT everywhere."""
    feed = {INPUT_IDS: np.random.default_rng(0).integers(0, vocab_size, (2, 5)), **engine.empty_past(2)}
    end = engine.session.run([LOGITS], feed)[0][..., vocab_size:]
    ok = end.shape[-1] == 1 and bool(np.all(end == END_OF_TEXT_LOGIT))
    return Check("end-of-text logit", 2, 5, None, ok, f"{END_OF_TEXT_LOGIT:g} (id {vocab_size})")


def greedy_check(model: GPTLanguageModel, engine: Engine, prompt: list[int]) -> tuple[Check, list[int]]:
    """A greedy continuation of `prompt` by the engine against PyTorch's plain loop; returns the
    check and the engine's ids."""
    settings = SamplingParams(max_new_tokens=GREEDY_CHARS, temperature=0)
    onnx_ids = [int(draw.ids[0]) for draw in engine.decode(prompt, settings)]
    steps = model.generate_cached(torch.tensor([prompt]), GREEDY_CHARS, temperature=0)
    torch_ids = torch.cat(list(steps), dim=1)[0].tolist()
    same = onnx_ids == torch_ids
    first_diff = next((i for i, (a, b) in enumerate(zip(onnx_ids, torch_ids)) if a != b), None)
    detail = "identical" if same else f"differs from character {first_diff}"
    return Check(f"greedy {GREEDY_CHARS} characters (plain loop)", 1, GREEDY_CHARS, None, same, detail), onnx_ids


def plain_loop_check(engine: Engine, ids: np.ndarray, block_size: int) -> Check:
    """The plain loop's loss on validation ids against an exact last window's, and its cache's size."""
    if len(ids) <= block_size:  # nothing to compare: no prediction has a full window
        why = f"not measured: the validation split has only {len(ids)} characters"
        return Check("plain loop vs last window", 1, len(ids), None, True, why)
    loop, count, longest = plain_loop_loss(engine, ids)
    exact = last_window_loss(engine, ids)
    ok = loop - exact <= PLAIN_LOOP_SLACK and longest <= block_size - 1
    detail = f"{loop:.4f} vs {exact:.4f} nats/char, cache <= {longest}"
    return Check(f"plain loop vs last window, {len(ids):,} val chars", 1, count, None, ok, detail)


def verify_ring(model_path: Path, ring_file: Path) -> list[Check]:
    """Compare the ring file with the model file it belongs to (both on onnxruntime): logits of
    its steps against the plain loop's past the window twice, and the greedy text of each."""
    engine = Engine(model_path, ring=False)
    ring = RingStep(ring_file, engine, open_session(ring_file, **engine.session_args))
    steps = 2 * (ring.slots + 1) + 3
    diff = ring.verify(engine, steps)
    checks = [Check("ring step vs plain loop", 2, steps, diff, diff <= RING_TOLERANCE)]
    settings = SamplingParams(max_new_tokens=GREEDY_CHARS, temperature=0)
    plain = engine.complete("\n", settings)
    ringed = Engine(model_path, ring_file=ring_file, table=False)  # its steps run the ring file
    same = ringed.ring is not None and ringed.complete("\n", settings) == plain
    detail = "identical" if same else ringed.notice or "differs"
    checks.append(Check(f"ring step: greedy {GREEDY_CHARS} characters", 1, GREEDY_CHARS, None, same, detail))
    return checks


def verify_attention(model: GPTLanguageModel, model_file: Path, attention_file: Path) -> list[Check]:
    """Compare the attention file with PyTorch's weights (GPTLanguageModel.attention) for batch 1
    and 3: texts shorter and longer than the window from an empty cache, and the characters
    after a prefill by the model file (its cache, as the pages pass it); then that every row sums
    to 1 and gives nothing to positions before the text (later ones are outside the window)."""
    lm = OnnxModel(model_file)
    attention = AttentionFile(attention_file, lm, open_session(attention_file, **lm.session_args))
    cfg, model = model.config, model.eval()
    rng = np.random.default_rng(1)
    checks, rows, fresh = [], [], []  # every run's weights; those from an empty cache (position 0 first)

    def compare(name, batch, length, got, want):
        diff = float(np.abs(got - want).max())
        checks.append(Check(f"attention weights: {name}", batch, length, diff, diff <= TOLERANCE))
        rows.append(got)

    for batch in (1, 3):
        for length in sorted({1, 7, cfg.block_size, 2 * cfg.block_size + 3}):
            ids = rng.integers(0, cfg.vocab_size, (batch, length))
            with torch.no_grad():
                want = model.attention(torch.from_numpy(ids)).numpy()
            compare("from an empty cache", batch, length, attention.run(ids), want)
            fresh.append(rows[-1])
            if length > 1:
                split = length - min(3, length - 1)
                _, past = lm.forward(ids[:, :split])
                compare(
                    f"after a prefill of {split}",
                    batch,
                    length,
                    attention.run(ids[:, split:], past),
                    want[..., split:, :],
                )
    sums = max(float(np.abs(w.sum(-1) - 1).max()) for w in rows)
    window = cfg.block_size
    before = max(
        float(np.abs(w[..., t, : window - 1 - t]).max(initial=0))
        for w in fresh
        for t in range(min(w.shape[3], window - 1))
    )
    checks.append(
        Check(
            "attention rows sum to 1, none before the text",
            "-",
            "-",
            None,
            sums <= 1e-5 and before == 0,
            f"|sum - 1| <= {sums:.1e}, before: {before:g}",
        )
    )
    return checks


def checks_table(checks: list[Check]) -> str:
    rows = [("check", "batch", "length", "max |Δ logit|", "result")]
    for c in checks:
        diff = f"{c.diff:.2e}" if c.diff is not None else (c.detail or "-")
        rows.append((c.name, str(c.batch), str(c.length), diff, "ok" if c.ok else "FAIL"))
    return table(rows, markdown=False) + (
        f"\ntolerance: max |Δ logit| <= {TOLERANCE:g} (float32); the plain loop at most "
        f"{PLAIN_LOOP_SLACK} nats/char above the last window, its cache within the window"
    )
