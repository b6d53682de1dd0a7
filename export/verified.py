"""Files made from a verified model file, each checked before it is kept: the int8 model file,
the ring step with its int8 weights, and the attention file (float32 or int8)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from train.table import format_table
from webapp.inference.onnx_model import OnnxModel

from . import metadata as md
from .errors import AttentionMismatch, Int8TooLossy, RingMismatch
from .eval_command import measure_loss
from .onnx_export import quantize_weights_int8, set_metadata, torch_model_from_onnx
from .verification import checks_table, verify_attention, verify_ring

INT8_TOLERANCE = 0.02  # the int8 file may lose at most this much validation loss
ATTENTION_TABLE = "the attention file"  # how its check table opens in a card


def quantize_int8(fp32: Path, target: Path, metadata: dict, text: str) -> tuple[dict, str]:
    """Write the int8 form of the float32 file `fp32` to `target`: every MatMul weight stored as
    int8 (symmetric, one scale per output column; see quantize_weights_int8), activations kept
    in float32. Weight-only, because dynamic quantization picks activation scales per call, so a
    prefill and cached decoding of the same text would disagree (docs/model-folder.md, "Export").
    Int8TooLossy unless its validation loss is within INT8_TOLERANCE of the float32 file's.
    Returns its metadata and a table of the two losses."""
    quantize_weights_int8(fp32, target)
    fp32_loss, n = measure_loss(OnnxModel(fp32), text, "val")
    int8_loss, _ = measure_loss(OnnxModel(target), text, "val")  # metadata survives quantization
    rows = [
        ("weights", "size (MB)", "val loss"),
        ("float32", f"{fp32.stat().st_size / 1e6:.2f}", f"{fp32_loss:.4f}"),
        ("int8", f"{target.stat().st_size / 1e6:.2f}", f"{int8_loss:.4f}"),
    ]
    delta = int8_loss - fp32_loss
    table = format_table(rows, markdown=False)
    table += f"\nint8 - fp32: {delta:+.4f} nats/char over {n:,} characters (allowed: +{INT8_TOLERANCE})"
    print(table)
    if delta > INT8_TOLERANCE:
        raise Int8TooLossy(
            f"int8 quantization loses {delta:.4f} nats/char, more than {INT8_TOLERANCE}; nothing was "
            "written (export without --quantize)."
        )
    int8_meta = {
        **metadata,
        "training": {
            **metadata["training"],
            "val_loss": int8_loss,
            "quantization": "int8 weights (one scale per output column), float32 activations",
        },
    }
    set_metadata(target, md.to_props(int8_meta))
    return int8_meta, table


def quantize_ring(model_file: Path, ring_fp32: Path, target: Path, metadata: dict) -> str:
    """The ring step with the int8 weights of `model_file` (the same quantization of the same
    weights), verified against it; RingMismatch if they disagree. Returns its check table."""
    quantize_weights_int8(ring_fp32, target)
    set_metadata(target, md.to_props(metadata))
    checks = verify_ring(model_file, target)
    table = (
        "the ring step with int8 weights, against the int8 model file:\n" + checks_table(checks).split("\ntolerance")[0]
    )
    print(table)
    if not all(c.ok for c in checks):
        raise RingMismatch(
            "the int8 ring step does not match the int8 model file (see the table); nothing was written."
        )
    return table


def quantize_attention(
    model_file: Path,
    attention_fp32: Path,
    target: Path,
    metadata: dict,
    given: dict[str, tuple[np.ndarray, np.ndarray]] | None = None,
) -> str:
    """The attention file with the int8 weights of `model_file` (the same quantization of the same
    weights, or `given` ones: quantize_weights_int8), checked against PyTorch with those weights;
    AttentionMismatch if they disagree. Returns its check table."""
    quantize_weights_int8(attention_fp32, target, given)
    set_metadata(target, md.to_props(metadata))
    return checked_attention(torch_model_from_onnx(model_file), model_file, target, "with int8 weights")


def checked_attention(model, model_file: Path, attention_file: Path, what: str = "") -> str:
    """verify_attention's table for `attention_file`, printed; AttentionMismatch if a check fails."""
    checks = verify_attention(model, model_file, attention_file)
    table = (
        f"{ATTENTION_TABLE}{' ' + what if what else ''}, against PyTorch with the weights of {model_file.name}:\n"
        + checks_table(checks).split("\ntolerance")[0]
    )
    print(table)
    if not all(c.ok for c in checks):
        raise AttentionMismatch("the attention file does not match PyTorch (see the table); nothing was written.")
    return table
