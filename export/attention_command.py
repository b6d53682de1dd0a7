"""`python -m export attention MODEL`: add the attention file (where every head looked, for the
pages' attention view and /inspect) to a model exported before chargpt wrote it, from the weights
its model file carries, checked against PyTorch with those weights. The model file stays byte
for byte as it is."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from train.usage import fail
from webapp.inference.attention import attention_path
from webapp.inference.model_folder import MODEL_FILE
from webapp.inference.onnx_model import SIDECAR_SHA256, ModelLoadError, OnnxModel, beside

from . import metadata as md
from .errors import VERIFICATION_FAILED, AttentionMismatch, UsageError
from .onnx_export import export_attention, int8_weights, name_weights, set_metadata, torch_model_from_onnx
from .verified import ATTENTION_TABLE, checked_attention, quantize_attention
from .writing import card_license, temp_onnx, write_card

PROG = "python -m export attention"
DESCRIPTION = (
    "Add the attention file (onnx/model.attention.onnx: where every head looked, "
    "for the pages' attention view and /inspect) to a model exported before chargpt wrote it, "
    "from the weights in its model file, checked against PyTorch with those weights. "
    "The model file and its text stay as they are."
)


def attention_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description=DESCRIPTION)
    p.add_argument("model", help="a model folder, or an .onnx file, written by python -m export")
    p.add_argument("--force", action="store_true", help="replace an attention file that is already there")
    return p


def write_attention(onnx_file: Path, target: Path, model, metadata: dict) -> str:
    """The attention file for `onnx_file`'s weights (an int8 file's own int8 values, not a second
    rounding of them), checked and moved to `target`; returns its check table."""
    given = int8_weights(onnx_file)
    fp32_tmp, tmp = temp_onnx(onnx_file.parent), temp_onnx(onnx_file.parent)
    try:
        export_attention(model, fp32_tmp)
        name_weights(fp32_tmp, model)
        if given:
            table = quantize_attention(onnx_file, fp32_tmp, tmp, metadata, given)
        else:
            os.replace(fp32_tmp, tmp)
            set_metadata(tmp, md.to_props(metadata))
            table = checked_attention(model, onnx_file, tmp)
        os.replace(tmp, target)
    finally:
        for path in (fp32_tmp, tmp):
            path.unlink(missing_ok=True)
    return table


def add_to_card(out: Path, metadata: dict, table: str) -> None:
    """A folder's card with the attention file's check table in its verification (replacing one
    an earlier run wrote)."""
    card = (out / "README.md").read_text(encoding="utf-8")
    sample, verification = md.card_parts(card)
    kept = verification.split(f"\n\n{ATTENTION_TABLE}")[0]
    write_card(out, metadata, sample, f"{kept}\n\n{table}", card_license(card))


def attention_main(argv: list[str]) -> int:
    args = attention_parser().parse_args(argv)
    out = Path(args.model)
    folder = out.is_dir()
    onnx_file = out / MODEL_FILE if folder else out
    target = attention_path(onnx_file) if onnx_file.suffix == ".onnx" else None
    try:
        if target is None:
            raise UsageError(f"{out} is neither a model folder nor an .onnx file.")
        OnnxModel(out)  # every check a served model passes
        if target.exists() and not args.force:
            raise UsageError(f"{target} already exists; pass --force to replace it.")
        model = torch_model_from_onnx(onnx_file)
        sidecar_meta = json.loads(beside(onnx_file, ".json").read_text(encoding="utf-8"))
        metadata = {k: v for k, v in sidecar_meta.items() if k != SIDECAR_SHA256}
    except (UsageError, ModelLoadError, ValueError, OSError) as e:
        return fail(PROG, str(e))
    try:
        table = write_attention(onnx_file, target, model, metadata)
        if folder and (out / "README.md").is_file():
            add_to_card(out, metadata, table)
    except (AttentionMismatch, md.CardError) as e:
        return fail(PROG, str(e), VERIFICATION_FAILED)
    print(f"wrote {target} ({target.stat().st_size / 1e6:.2f} MB)")
    return 0
