"""The ways benchmarks/generation.py decodes, each as a Decoder: (prompt ids [B, T], number of
new characters) -> an iterator of the new ids [B], one per step, all greedy; and the float32 and
int8 forms of a model they run on."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import onnx
import torch

from export.onnx_export import (
    dequantize_weights,
    export_onnx,
    export_ring,
    name_weights,
    quantize_weights_int8,
    set_metadata,
)
from train.model import GPTLanguageModel
from webapp.inference.drafting import table_path
from webapp.inference.engine import EncodedPrompt, Engine
from webapp.inference.ring import ring_path
from webapp.inference.sampling import SamplingParams

# A decoder: (prompt ids [B, T], number of new characters) -> an iterator of new ids [B] per step.
Decoder = Callable[[np.ndarray, int], Iterator[np.ndarray]]


def lecture_style(model: GPTLanguageModel) -> Decoder:
    def run(prompt: np.ndarray, n: int):
        for next_id in model.generate_steps(torch.from_numpy(prompt), n, temperature=0):
            yield next_id[:, 0].numpy()

    return run


def torch_cached(model: GPTLanguageModel) -> Decoder:
    def run(prompt: np.ndarray, n: int):
        for next_id in model.generate_cached(torch.from_numpy(prompt), n, temperature=0):
            yield next_id[:, 0].numpy()

    return run


def onnx_uncached(engine: Engine) -> Decoder:
    def run(prompt: np.ndarray, n: int):
        text = prompt
        for _ in range(n):
            logits, _ = engine.forward(text[:, -engine.block_size :])
            next_id = logits[:, -1].argmax(axis=-1)
            yield next_id
            text = np.concatenate([text, next_id[:, None]], axis=1)

    return run


def engine_decoder(engine: Engine, alternatives: int = 0) -> Decoder:
    """The web app's engine as it serves (characters, stop filters), read at the level of ids;
    `alternatives`: the likeliest characters it reports with each (SamplingParams.alternatives)."""

    def run(prompt: np.ndarray, n: int):
        encoded = EncodedPrompt(prompt[0].tolist(), "")
        settings = SamplingParams(
            max_new_tokens=n, temperature=0, num_samples=prompt.shape[0], alternatives=alternatives
        )
        for step in engine.generate(encoded, settings):
            if step.ids is not None:  # the last Step only flushes the stop filters
                yield step.ids

    return run


def steps_floor(steps) -> Decoder:
    """The step interface alone (webapp/inference/onnx_model.py, PlainSteps: the model file's, or
    the ring file's RingStep), one character a step, feeding id 0: a prefill, then forward and
    commit per character, with no sampling, drafting or bookkeeping around them."""

    def run(prompt: np.ndarray, n: int):
        _, state = steps.prefill(prompt)
        step_ids = np.zeros((prompt.shape[0], 1), np.int64)
        for _ in range(n):
            _, uncommitted = steps.forward(step_ids, state)
            state = steps.commit(state, uncommitted, 1)
            yield step_ids[:, 0]

    return run


def float32_and_int8(
    engine: Engine, tmp: Path, checkpoint_model: GPTLanguageModel | None = None
) -> tuple[Engine, Engine]:
    """Engines on the float32 and the int8 form of the model: the given file is one of them,
    the other is made from it: quantized, or, for an int8 file, its weights stored back as
    float32 (seconds), or exported from `checkpoint_model` when one is given (--checkpoint: the
    float32 rows then run the PyTorch rows' weights, not their int8 rounding). The other one
    gets the given file's draft table and thread settings too."""
    spinning = engine.session_args["spinning"]
    if engine.metadata["training"].get("quantization"):
        fp32_path = tmp / "float32.onnx"
        if checkpoint_model is None:
            dequantize_weights(engine.path, fp32_path)
            if engine.ring:
                dequantize_weights(engine.ring.path, ring_path(fp32_path))
            copy_table(engine.path, fp32_path)
            return Engine(fp32_path, device="cpu", spinning=spinning), engine
        props = {p.key: p.value for p in onnx.load(str(engine.path)).metadata_props}
        export_onnx(checkpoint_model, fp32_path)
        name_weights(fp32_path, checkpoint_model)
        set_metadata(fp32_path, props)
        if engine.ring:
            export_ring(checkpoint_model, ring_path(fp32_path))
            set_metadata(ring_path(fp32_path), props)
        copy_table(engine.path, fp32_path)
        return Engine(fp32_path, device="cpu", spinning=spinning), engine
    int8_path = tmp / "int8.onnx"
    quantize_weights_int8(engine.path, int8_path)
    if engine.ring:
        quantize_weights_int8(engine.ring.path, ring_path(int8_path))
    copy_table(engine.path, int8_path)
    return engine, Engine(int8_path, device="cpu", spinning=spinning)


def copy_table(model_file: Path, to: Path) -> None:
    """The draft table beside `model_file` (if any) beside `to`: a model's other form drafts alike."""
    if table_path(model_file).is_file():
        shutil.copy(table_path(model_file), table_path(to))
