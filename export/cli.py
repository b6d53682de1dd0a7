"""`python -m export RUN_DIR --out MODEL.onnx [--quantize int8]` and
`python -m export eval MODEL.onnx --data FILE` (onnxruntime alone)."""

from __future__ import annotations

import argparse
import math
import os
import sys
from pathlib import Path

from webapp.onnx_model import SIDECAR_SHA256, ModelLoadError

USAGE_ERROR, VERIFICATION_FAILED = 2, 1
INT8_TOLERANCE = 0.02  # the int8 file may lose at most this much validation loss


class UsageError(Exception):
    pass


def fail(prog: str, message: str, code: int = USAGE_ERROR) -> int:
    print(f"{prog}: error: {message}", file=sys.stderr)
    return code


# -- eval: onnxruntime and numpy only ------------------------------------------------------

def eval_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m export eval",
                                description="Validation loss of an exported model on a text file, with onnxruntime alone.")
    p.add_argument("model", help="an exported .onnx file")
    p.add_argument("--data", required=True, help="UTF-8 text file (e.g. the one the model was trained on)")
    p.add_argument("--split", choices=("val", "all"), default="val",
                   help="val: the last 10%% of the file, as in training (default); all: the whole file")
    p.add_argument("--batch-size", type=int, default=64, help="windows per onnxruntime call")
    return p


def measure_loss(model, text: str, split: str, batch_size: int = 64) -> tuple[float, int]:
    """(mean nats per character, number of predictions) of an OnnxModel on `text`, per DESIGN.md."""
    import numpy as np

    from train.text import split_index

    from .runtime import split_loss

    index = {c: i for i, c in enumerate(model.vocab)}
    unknown = sorted(set(text) - set(index))
    if unknown:
        shown = ", ".join(repr(c) for c in unknown[:5])
        raise UsageError(f"the text has {len(unknown)} characters the model's vocabulary lacks ({shown}); "
                         "evaluate on text written in the model's alphabet.")
    ids = np.array([index[c] for c in text], dtype=np.int64)
    if split == "val":
        ids = ids[split_index(len(ids)) :]
    if len(ids) < 2:
        raise UsageError("the text is too short to evaluate: it needs at least two characters in the split.")
    return split_loss(model, ids, model.block_size, batch_size), len(ids) - 1


def eval_main(argv: list[str]) -> int:
    args = eval_parser().parse_args(argv)
    from train.text import DataError, read_text

    from webapp.onnx_model import OnnxModel

    try:
        if args.batch_size < 1:
            raise UsageError("--batch-size must be at least 1.")
        model = OnnxModel(args.model)
        text, _ = read_text(Path(args.data))
        loss, n = measure_loss(model, text, args.split, args.batch_size)
    except (UsageError, ModelLoadError, DataError) as e:
        return fail("python -m export eval", str(e))
    what = "whole validation split" if args.split == "val" else "whole file"
    print(f"val loss ({what}, {n:,} characters): {loss:.4f} nats/char ({loss / math.log(2):.4f} bits/char)")
    recorded = model.metadata["training"].get("val_loss")
    if recorded is not None:
        print(f"recorded in the model's metadata: {recorded:.4f}")
    return 0


# -- export ----------------------------------------------------------------------------------

def export_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m export",
        description="Export a training checkpoint to one self-contained ONNX file with a KV cache, "
        "verify it against PyTorch, and write its JSON sidecar and model card. "
        "See also: python -m export eval MODEL.onnx --data FILE",
    )
    p.add_argument("run_dir", help="checkpoint directory written by `python -m train` (or its best/ folder)")
    p.add_argument("--out", help="the .onnx file to write (default RUN_DIR/model.onnx); NAME.json and NAME.md go beside it")
    p.add_argument("--quantize", choices=("int8",), help="also write NAME.int8.onnx: int8 weights, float32 activations")
    p.add_argument("--data", help="text to measure validation loss on when needed (default: the run's own dataset)")
    p.add_argument("--force", action="store_true", help="replace existing output files")
    return p


def sibling(path: Path, suffix: str) -> Path:
    return path.with_name(path.name[: -len(".onnx")] + suffix)


def check_outputs(out: Path, quantize: bool, force: bool) -> None:
    if out.suffix != ".onnx":
        raise UsageError(f"--out {out} must end in .onnx.")
    if not out.parent.is_dir():
        raise UsageError(f"the directory of --out {out} does not exist; create it first or choose another --out.")
    targets = [out, sibling(out, ".json"), sibling(out, ".md"), sibling(out, ".loss.png")]
    if quantize:
        targets += [sibling(out, ".int8.onnx"), sibling(out, ".int8.json"), sibling(out, ".int8.md")]
    existing = [str(t) for t in targets if t.exists()]
    if existing and not force:
        raise UsageError(f"{', '.join(existing)} already exist; pass --force to replace them, or choose another --out.")


def write_atomic(path: Path, write) -> None:
    from train.checkpoint import atomic_write

    atomic_write(path, write)


def write_json(path: Path, data: dict) -> None:
    from train.checkpoint import write_json as write_json_atomically

    write_json_atomically(path, data)


def temp_onnx(directory: Path) -> Path:
    from train.checkpoint import temp_file

    return temp_file(directory, ".export-", ".onnx")


def export_main(argv: list[str]) -> int:
    args = export_parser().parse_args(argv)
    from train import checkpoint
    from train.model import GPTConfig, GPTLanguageModel
    from train.text import DataError, read_text

    from . import metadata as md
    from .onnx_export import export_onnx, format_table, name_weights, set_metadata, verify
    from webapp.onnx_model import OnnxModel

    prog = "python -m export"
    run_dir = Path(args.run_dir)
    out = Path(args.out) if args.out else run_dir / "model.onnx"
    try:
        meta = checkpoint.read_meta(run_dir)
        check_outputs(out, args.quantize is not None, args.force)
        model = GPTLanguageModel(GPTConfig.from_dict(meta["model"]))
        checkpoint.load_model_weights(model, checkpoint.load_weights(run_dir, meta), run_dir)
        model.eval()
        data_path = args.data or meta["dataset"]["path"]
        text = None
        if args.quantize or meta.get("val_loss_full") is None:
            text, sha = read_text(Path(data_path))
            if sha != meta["dataset"]["sha256"]:
                raise UsageError(f"{data_path} is not the text this model was trained on (SHA-256 differs); "
                                 "its validation loss is measured on the training text: pass that with --data.")
    except (UsageError, checkpoint.CheckpointError, DataError, ValueError) as e:
        if isinstance(e, DataError):
            e = UsageError(f"{e} The validation loss needs the training text: pass --data FILE.")
        return fail(prog, str(e))

    val_loss = meta.get("val_loss_full")
    metadata = md.build(meta, model.num_params(), val_loss)
    vocab = meta["vocab"]
    prompt = [vocab.index("\n")] if "\n" in vocab else [0]
    tmp = temp_onnx(out.parent)
    try:
        print(f"exporting {run_dir} (step {meta['step']}, {model.num_params() / 1e6} M parameters) ...")
        export_onnx(model, tmp)
        name_weights(tmp, model)
        set_metadata(tmp, md.to_props(metadata))
        checks, greedy_ids = verify(model, tmp, prompt)
        table = format_table(checks)
        print(table)
        if not all(c.ok for c in checks):
            return fail(prog, f"the ONNX export does not match PyTorch (see the table); nothing was written to {out}.",
                        VERIFICATION_FAILED)
        if val_loss is None:
            loss, _ = measure_loss(OnnxModel(tmp), text, "val")
            metadata["training"]["val_loss"] = loss
            set_metadata(tmp, md.to_props(metadata))
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    sample = "".join(vocab[i] for i in greedy_ids)
    write_sidecars(out, metadata, sample, table)
    draw_loss_curve(run_dir, out, meta["step"], metadata["training"]["val_loss"])
    print(f"wrote {out} ({out.stat().st_size / 1e6:.2f} MB), {sibling(out, '.json').name}, {sibling(out, '.md').name}; "
          f"val loss {metadata['training']['val_loss']:.4f}")
    if args.quantize:
        return quantize_int8(out, metadata, text, sample, table)
    return 0


def write_sidecars(out: Path, metadata: dict, sample: str, verification: str) -> None:
    from . import metadata as md

    from train.checkpoint import file_sha256

    # The file's own checksum, which its metadata cannot hold: the engine refuses a model file
    # that does not match it (truncated or altered after export).
    write_json(sibling(out, ".json"), {**metadata, SIDECAR_SHA256: file_sha256(out)})
    card = md.model_card(out.name, metadata, out.stat().st_size, sample, verification)
    write_atomic(sibling(out, ".md"), lambda tmp: Path(tmp).write_text(card, encoding="utf-8"))


def draw_loss_curve(run_dir: Path, out: Path, step: int, val_loss: float | None) -> None:
    """NAME.loss.png beside the model: the run's curve (a best/ checkpoint's run is its parent),
    with the exported checkpoint marked."""
    from train.plot import plot_losses

    runs = [run_dir, run_dir.parent] if run_dir.name == "best" else [run_dir]
    metrics = next((d / "metrics.jsonl" for d in runs if (d / "metrics.jsonl").is_file()), None)
    if metrics is None:
        return
    mark = (step, val_loss) if val_loss is not None else None
    write_atomic(sibling(out, ".loss.png"), lambda tmp: plot_losses(metrics, Path(tmp), mark))


def quantize_int8(out: Path, metadata: dict, text: str, sample: str, verification: str) -> int:
    """NAME.int8.onnx: every MatMul weight stored as int8 (symmetric, one scale per output
    column; see quantize_weights_int8), activations kept in float32. Weight-only on purpose:
    onnxruntime's dynamic quantization picks activation scales per call, so a prefill and
    cached decoding of the same text disagree (DESIGN.md requires them equal). Kept only if
    its validation loss is within INT8_TOLERANCE of the float32 file's."""
    from . import metadata as md
    from .onnx_export import quantize_weights_int8, set_metadata
    from webapp.onnx_model import OnnxModel

    int8_path = sibling(out, ".int8.onnx")
    tmp = temp_onnx(out.parent)
    try:
        quantize_weights_int8(out, tmp)
        fp32_loss, n = measure_loss(OnnxModel(out), text, "val")
        int8_loss, _ = measure_loss(OnnxModel(tmp), text, "val")  # metadata survives quantization
        rows = [("file", "size (MB)", "val loss"), (out.name, f"{out.stat().st_size / 1e6:.2f}", f"{fp32_loss:.4f}"),
                (int8_path.name, f"{tmp.stat().st_size / 1e6:.2f}", f"{int8_loss:.4f}")]
        delta = int8_loss - fp32_loss
        int8_table = "\n".join(f"{r[0]:<28}{r[1]:>10}{r[2]:>10}" for r in rows)
        int8_table += f"\nint8 - fp32: {delta:+.4f} nats/char over {n:,} characters (allowed: +{INT8_TOLERANCE})"
        print(int8_table)
        if delta > INT8_TOLERANCE:
            return fail("python -m export", f"int8 quantization loses {delta:.4f} nats/char, more than "
                        f"{INT8_TOLERANCE}; {int8_path} was not written (ship the float32 file).", VERIFICATION_FAILED)
        int8_meta = {**metadata, "training": {**metadata["training"], "val_loss": int8_loss,
                                              "quantization": "int8 weights (one scale per output column), float32 activations"}}
        set_metadata(tmp, md.to_props(int8_meta))
        os.replace(tmp, int8_path)
    finally:
        tmp.unlink(missing_ok=True)
    # The float32 file's checks against PyTorch, then what int8 weights cost.
    write_sidecars(int8_path, int8_meta, sample, f"{verification}\n\n{int8_table}")
    print(f"wrote {int8_path}, {sibling(int8_path, '.json').name}, {sibling(int8_path, '.md').name}")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["eval"]:
        return eval_main(argv[1:])
    return export_main(argv)
