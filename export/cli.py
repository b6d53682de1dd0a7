"""`python -m export RUN_DIR --out DIR/ [--quantize int8]` (a model folder), `--out NAME.onnx`
(one file and its sidecars), `python -m export eval MODEL [--data FILE]` (onnxruntime alone), and
`python -m export about FOLDER --title ...` (what the pages say, rewritten without exporting again)
and `python -m export attention MODEL` (the attention file added to a model exported before it)."""

from __future__ import annotations

import argparse
import math
import os
import sys
from pathlib import Path

import numpy as np

from train.files import atomic_write, file_sha256, temp_file, write_json
from train.table import format_table
from webapp.inference.attention import attention_path
from webapp.inference.drafting import table_path
from webapp.inference.model_folder import FOLDER_FILES, MODEL_FILE
from webapp.inference.onnx_model import SIDECAR_SHA256, ModelLoadError, averaged_phrase, beside
from webapp.inference.ring import ring_path

USAGE_ERROR, VERIFICATION_FAILED = 2, 1
INT8_TOLERANCE = 0.02  # the int8 file may lose at most this much validation loss


class UsageError(Exception):
    pass


def fail(prog: str, message: str, code: int = USAGE_ERROR) -> int:
    print(f"{prog}: error: {message}", file=sys.stderr)
    return code


# -- eval: onnxruntime and numpy only ------------------------------------------------------


def eval_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m export eval",
        description="Validation loss of an exported model on a text file, with onnxruntime alone.",
    )
    p.add_argument("model", help="a model folder or an exported .onnx file")
    p.add_argument(
        "--data",
        help="UTF-8 text file (default: the model's training text where it can be found: "
        "the cached Tiny Shakespeare for a model trained on it)",
    )
    p.add_argument(
        "--split",
        choices=("val", "all"),
        default="val",
        help="val: the last 10%% of the file, as in training (default); all: the whole file",
    )
    p.add_argument("--batch-size", type=int, default=64, help="windows per onnxruntime call")
    return p


def measure_loss(model, text: str, split: str, batch_size: int = 64) -> tuple[float, int]:
    """(mean nats per character, number of predictions) of an OnnxModel on `text`, as
    docs/training.md defines the reported loss."""
    import numpy as np

    from train.text import split_index

    from .runtime import split_loss

    index = {c: i for i, c in enumerate(model.vocab)}
    unknown = sorted(set(text) - set(index))
    if unknown:
        shown = ", ".join(repr(c) for c in unknown[:5])
        raise UsageError(
            f"the text has {len(unknown)} characters the model's vocabulary lacks ({shown}); "
            "evaluate on text written in the model's alphabet."
        )
    ids = np.array([index[c] for c in text], dtype=np.int64)
    if split == "val":
        ids = ids[split_index(len(ids)) :]
    if len(ids) < 2:
        raise UsageError("the text is too short to evaluate: it needs at least two characters in the split.")
    return split_loss(model, ids, model.block_size, batch_size), len(ids) - 1


def eval_main(argv: list[str]) -> int:
    args = eval_parser().parse_args(argv)
    from train.text import DataError, read_text
    from webapp.inference.onnx_model import OnnxModel

    try:
        if args.batch_size < 1:
            raise UsageError("--batch-size must be at least 1.")
        model = OnnxModel(args.model)
        data = args.data or training_text(model.metadata["training"]["dataset_sha256"])
        text, _ = read_text(Path(data))
        loss, n = measure_loss(model, text, args.split, args.batch_size)
    except (UsageError, ModelLoadError, DataError) as e:
        return fail("python -m export eval", str(e))
    what = "whole validation split" if args.split == "val" else "whole file"
    print(f"val loss ({what}, {n:,} characters): {loss:.4f} nats/char ({loss / math.log(2):.4f} bits/char)")
    recorded = model.metadata["training"].get("val_loss")
    if recorded is not None:
        print(f"recorded in the model's metadata: {recorded:.4f}")
    return 0


# -- about: rename a model folder in place ----------------------------------------------------


def add_about_flags(p: argparse.ArgumentParser, default: str) -> None:
    page = p.add_argument_group(f"what the pages and the card say about the model (default: {default})")
    page.add_argument("--title", help="the page's title (default 'chargpt: DATASET')")
    page.add_argument(
        "--dataset-name",
        help="a short name of the training text (default: from its file name; Tiny Shakespeare for it)",
    )
    page.add_argument("--description", help="one line under the title")
    page.add_argument(
        "--example",
        action="append",
        metavar="PROMPT",
        help="an example prompt (repeat the flag for several; "
        "the first is the default prompt; \\n stands for a newline). Default: the text's most frequent "
        "short lines and line openings",
    )


def about_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m export about",
        description="Rewrite what the pages and the model card say about an exported model folder "
        "(its title, dataset name, description, example prompts) in place: the weights "
        "and the verification stay as exported; it takes seconds, not an export.",
    )
    p.add_argument("folder", help="a model folder written by python -m export")
    add_about_flags(p, "as they are; a title or description derived from the old dataset name follows the new one")
    return p


def about_main(argv: list[str]) -> int:
    import json

    from . import about as page
    from . import metadata as md
    from .onnx_export import set_metadata

    args = about_parser().parse_args(argv)
    prog = "python -m export about"
    out = Path(args.folder)
    onnx_file, card_file = out / MODEL_FILE, out / "README.md"
    try:
        if not (onnx_file.is_file() and beside(onnx_file, ".json").is_file() and card_file.is_file()):
            raise UsageError(
                f"{out} is not a model folder written by python -m export (it needs {MODEL_FILE}, "
                f"{beside(Path(MODEL_FILE), '.json')} and README.md)."
            )
        if not any((args.title, args.dataset_name, args.description, args.example)):
            raise UsageError("give at least one of --title, --dataset-name, --description, --example.")
        try:
            sidecar_meta = json.loads(beside(onnx_file, ".json").read_text(encoding="utf-8"))
            about, vocab = sidecar_meta["about"], sidecar_meta["vocab"]
        except (ValueError, KeyError, TypeError) as e:
            raise UsageError(
                f"{beside(onnx_file, '.json')} is not the metadata python -m export writes ({e!r})."
            ) from None
        if sidecar_meta.get(SIDECAR_SHA256) != file_sha256(onnx_file):
            raise UsageError(
                f"{onnx_file} does not match the SHA-256 recorded beside it (truncated or altered): export it again."
            )
        metadata = {k: v for k, v in sidecar_meta.items() if k != SIDECAR_SHA256}
        card = card_file.read_text(encoding="utf-8")
        try:
            sample, verification = md.card_parts(card)
        except md.CardError as e:
            raise UsageError(f"{card_file} is not a card python -m export wrote: {e}.") from None
        metadata["about"] = page.renamed(about, vocab, args.title, args.dataset_name, args.description, args.example)
    except (UsageError, page.AboutError) as e:
        return fail(prog, str(e))
    license = card_license(card)
    for path in (onnx_file, ring_path(onnx_file), attention_path(onnx_file)):
        if path.is_file():  # the extra files carry the same metadata (their loaders read source_sha256)
            atomic_write(
                path,
                lambda tmp, path=path: (
                    Path(tmp).write_bytes(path.read_bytes()),
                    set_metadata(Path(tmp), md.to_props(metadata)),
                ),
            )
    write_json(beside(onnx_file, ".json"), sidecar(onnx_file, metadata))
    write_card(out, metadata, sample, verification, license)
    print(
        f'rewrote {out}{os.sep}: the page is now "{metadata["about"]["title"]}" '
        f"({len(metadata['about']['examples'])} example prompts)"
    )
    return 0


def card_license(card: str) -> str:
    """The Hub license id in a card's YAML metadata."""
    return next((line[9:] for line in card.splitlines() if line.startswith("license: ")), "mit")


# -- export ----------------------------------------------------------------------------------


def export_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m export",
        description="Export a training checkpoint to a model folder (onnx/model.onnx with a KV cache and the window "
        "in its graph, the configuration and tokenizer files that generation libraries read, a model card), "
        "or to one .onnx file with its JSON sidecar and card, verified against PyTorch first. "
        "See also: python -m export eval MODEL [--data FILE], python -m export about FOLDER --title ...",
    )
    p.add_argument("run_dir", help="checkpoint directory written by `python -m train` (or its best/ folder)")
    p.add_argument(
        "--out",
        help="DIR/ (ending in / or an existing directory): a model folder; NAME.onnx: one file, "
        "with NAME.json and NAME.md beside it (default: RUN_DIR/model/)",
    )
    p.add_argument(
        "--quantize",
        choices=("int8",),
        help="int8 weights, float32 activations: in a folder, onnx/model.onnx "
        "holds them; beside NAME.onnx, NAME.int8.onnx is written too",
    )
    p.add_argument(
        "--data",
        help="the training text, to measure the validation loss and the plain loop on (default: the run's own dataset)",
    )
    p.add_argument(
        "--lower-loss",
        action="store_true",
        help="RUN_DIR is a finished run: export whichever of its final "
        "weights, its best/ and its average/ checkpoints has the lowest whole-split validation loss (what "
        "training advised)",
    )
    p.add_argument(
        "--no-draft-table",
        action="store_true",
        help="write no MODEL.drafts.json: the training text's most "
        "frequent continuations of up to 5 characters, from which chargpt's engine and pages draft characters to "
        "check several a step (rotary models; webapp/inference/drafting.py). It quotes the training text in pieces "
        "of up "
        "to 6 characters; without it the engine drafts from the text's own repeats only",
    )
    p.add_argument(
        "--license", default="mit", help="license of a model folder's card, as a Hub license id (default mit)"
    )
    add_about_flags(p, "derived from the training text")
    p.add_argument("--force", action="store_true", help="replace existing output files")
    return p


def is_folder(out: str | None) -> bool:
    return out is None or out.endswith(("/", os.sep)) or Path(out).is_dir()


def planned_files(out: Path, folder: bool, quantize: bool) -> list[Path]:
    """Every file an export to `out` writes."""
    if folder:
        onnx_file = out / MODEL_FILE
        return [
            onnx_file,
            ring_path(onnx_file),
            attention_path(onnx_file),
            table_path(onnx_file),
            beside(onnx_file, ".json"),
            beside(onnx_file, ".loss.png"),
            out / "README.md",
            *(out / name for name in FOLDER_FILES if not name.startswith("onnx")),
        ]
    int8 = beside(out, ".int8.onnx")
    files = [
        out,
        ring_path(out),
        attention_path(out),
        table_path(out),
        beside(out, ".json"),
        beside(out, ".md"),
        beside(out, ".loss.png"),
    ]
    if quantize:
        files += [
            int8,
            ring_path(int8),
            attention_path(int8),
            table_path(int8),
            beside(out, ".int8.json"),
            beside(out, ".int8.md"),
        ]
    return files


def check_outputs(out: Path, folder: bool, quantize: bool, force: bool) -> None:
    if folder and out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} is a file, not a folder; choose another --out.")
    if not folder:
        if out.suffix != ".onnx":
            raise UsageError(f"--out {out} must be a folder (ending in /) or a file ending in .onnx.")
    existing = [str(t) for t in planned_files(out, folder, quantize) if t.exists()]
    if existing and not force:
        raise UsageError(
            f"{', '.join(existing)} already exist{'s' if len(existing) == 1 else ''}; pass --force to replace "
            f"{'it' if len(existing) == 1 else 'them'}, or choose another --out."
        )


def temp_onnx(near: Path) -> Path:
    """A temporary .onnx file in the nearest existing folder at or above `near` (the same
    file system as the target, so that moving it into place is one rename)."""
    directory = next(d for d in (near, *near.parents) if d.is_dir())
    return temp_file(directory, ".export-", ".onnx")


def training_text(sha256: str, recorded_path: str | None = None) -> str:
    """Where a model's training text is: the path its run recorded, if the file there is still
    that text, else, for a model trained on Tiny Shakespeare, the cached copy, which is downloaded
    the first time as `python -m train` does (DataError, saying how to supply it, when it cannot
    be); UsageError for another text."""
    from train.data import resolve_data_path
    from train.text import SHAKESPEARE_SHA256, sha256_bytes

    if recorded_path and Path(recorded_path).is_file() and sha256_bytes(Path(recorded_path).read_bytes()) == sha256:
        return recorded_path
    if sha256 == SHAKESPEARE_SHA256:
        return str(resolve_data_path(None))  # verified by its SHA-256
    where = f" (the run recorded {recorded_path}, which is gone or has changed)" if recorded_path else ""
    raise UsageError(f"the model's training text was not found{where}; pass it with --data FILE.")


def lower_loss_checkpoint(run_dir: Path) -> Path:
    """Of the finished run's final weights, its best/ and its average/ checkpoints, the one with
    the lowest whole-split validation loss (training records each when it ends)."""
    from train import checkpoint

    final = checkpoint.read_meta(run_dir)
    if "val_loss_full" not in final:
        raise UsageError(
            f"--lower-loss needs a finished run, and {run_dir} has not finished (no whole-split loss recorded)."
        )
    losses = {run_dir: final["val_loss_full"]}
    for other in (run_dir / name for name in checkpoint.KEPT_DIRS):
        if (other / checkpoint.CONFIG).is_file():
            losses[other] = checkpoint.read_meta(other).get("val_loss_full", math.inf)
    return checkpoint.lower_loss_checkpoint(losses)


def page_about(args: argparse.Namespace, vocab: list[str], data_path: str, sha256: str, text: str) -> dict:
    from . import about

    try:
        return about.build(
            vocab,
            data_path,
            sha256,
            text,
            title=args.title,
            dataset=args.dataset_name,
            description=args.description,
            examples=args.example,
        )
    except about.AboutError as e:
        raise UsageError(str(e)) from None


def export_main(argv: list[str]) -> int:
    args = export_parser().parse_args(argv)
    from train import checkpoint
    from train.text import DataError, read_text, split_index
    from webapp.inference.onnx_model import OnnxModel

    from . import metadata as md
    from .onnx_export import (
        checks_table,
        export_onnx,
        export_ring,
        name_weights,
        set_metadata,
        verify,
        verify_attention,
        verify_ring,
    )

    prog = "python -m export"
    run_dir = Path(args.run_dir)
    folder = is_folder(args.out)
    out = Path(args.out) if args.out else run_dir / "model"
    try:
        if args.lower_loss:
            run_dir = lower_loss_checkpoint(run_dir)
        meta = checkpoint.read_meta(run_dir)
        check_outputs(out, folder, args.quantize is not None, args.force)
        model = checkpoint.load_model(run_dir, meta)
        data_path = args.data or training_text(meta["dataset"]["sha256"], meta["dataset"]["path"])
        text, sha = read_text(Path(data_path))
        if sha != meta["dataset"]["sha256"]:
            raise UsageError(
                f"{data_path} is not the text this model was trained on (SHA-256 differs); "
                "its validation loss and the plain loop are measured on the training text: pass that with --data."
            )
        about = page_about(args, meta["vocab"], str(data_path), sha, text)
    except (UsageError, checkpoint.CheckpointError, DataError, ValueError) as e:
        if isinstance(e, DataError):
            e = UsageError(f"{e} The export measures the model on its training text: pass --data FILE.")
        return fail(prog, str(e))

    vocab = meta["vocab"]
    index = {c: i for i, c in enumerate(vocab)}
    val_ids = np.array([index[c] for c in text[split_index(len(text)) :]], dtype=np.int64)
    val_loss = meta.get("val_loss_full")
    metadata = md.build(meta, model.num_params(), val_loss, about)
    prompt = [index["\n"]] if "\n" in index else [0]
    tmp = temp_onnx(out if folder else out.parent)
    # The ring step (webapp/inference/ring.py; chargpt's engine and pages step with it), for rotary models:
    # written beside each model file. Where none is written, one left by an earlier export is removed.
    ring_tmp = temp_onnx(tmp.parent) if model.config.position == "rotary" else None
    # The attention file (webapp/inference/attention.py; the pages' view of where the heads looked), for every model.
    attention_tmp = temp_onnx(tmp.parent)
    int8_tmp = int8_ring_tmp = int8_attention_tmp = None
    # The draft table (webapp/inference/drafting.py) serves the ring step's drafts, so only beside a ring file.
    drafts = draft_table(text, vocab, sha) if ring_tmp and not args.no_draft_table else None
    try:
        print(f"exporting {run_dir} (step {meta['step']}, {model.num_params() / 1e6} M parameters) ...")
        export_onnx(model, tmp, attention_tmp)
        name_weights(tmp, model)
        set_metadata(tmp, md.to_props(metadata))
        checks, greedy_ids = verify(model, tmp, prompt, val_ids)
        if ring_tmp:
            export_ring(model, ring_tmp)
            set_metadata(ring_tmp, md.to_props(metadata))
            checks += verify_ring(tmp, ring_tmp)
        name_weights(attention_tmp, model)
        set_metadata(attention_tmp, md.to_props(metadata))
        checks += verify_attention(model, tmp, attention_tmp)
        table = checks_table(checks)
        print(table)
        if not all(c.ok for c in checks):
            return fail(
                prog,
                f"the ONNX export does not match PyTorch (see the table); nothing was written to {out}.",
                VERIFICATION_FAILED,
            )
        if val_loss is None:
            metadata["training"]["val_loss"] = measure_loss(OnnxModel(tmp), text, "val")[0]
            set_metadata(tmp, md.to_props(metadata))
        sample = "".join(vocab[i] for i in greedy_ids)
        if args.quantize:
            int8_tmp = temp_onnx(tmp.parent)
            int8_meta, int8_table = quantize_int8(tmp, int8_tmp, metadata, text)
            if ring_tmp:
                int8_ring_tmp = temp_onnx(tmp.parent)
                int8_table += "\n\n" + quantize_ring(int8_tmp, ring_tmp, int8_ring_tmp, int8_meta)
            int8_attention_tmp = temp_onnx(tmp.parent)
            int8_table += "\n\n" + quantize_attention(int8_tmp, attention_tmp, int8_attention_tmp, int8_meta)
        if folder:
            shipped, shipped_meta = (int8_tmp, int8_meta) if args.quantize else (tmp, metadata)
            verification = f"{table}\n\n{int8_table}" if args.quantize else table
            write_folder(
                out,
                shipped,
                shipped_meta,
                sample,
                verification,
                args.license,
                run_dir,
                int8_ring_tmp if args.quantize else ring_tmp,
                int8_attention_tmp if args.quantize else attention_tmp,
                drafts,
            )
        else:
            out.parent.mkdir(parents=True, exist_ok=True)
            os.replace(tmp, out)
            place_beside(ring_tmp, ring_path(out))
            place_beside(attention_tmp, attention_path(out))
            place_table(drafts, out)
            write_sidecars(out, metadata, sample, table)
            draw_loss_curve(run_dir, beside(out, ".loss.png"), metadata["training"])
            if args.quantize:
                int8_path = beside(out, ".int8.onnx")
                os.replace(int8_tmp, int8_path)
                place_beside(int8_ring_tmp, ring_path(int8_path))
                place_beside(int8_attention_tmp, attention_path(int8_path))
                place_table(drafts, int8_path)
                write_sidecars(int8_path, int8_meta, sample, f"{table}\n\n{int8_table}")
    except (Int8TooLossy, RingMismatch, AttentionMismatch) as e:
        return fail(prog, str(e), VERIFICATION_FAILED)
    finally:
        for path in (tmp, ring_tmp, attention_tmp, int8_tmp, int8_ring_tmp, int8_attention_tmp):
            if path is not None:
                path.unlink(missing_ok=True)
    loss = (int8_meta if args.quantize else metadata)["training"]["val_loss"]
    print(
        f"wrote {out}{os.sep if folder else ''} ({'model folder' if folder else 'one file and its sidecars'}); "
        f"val loss {loss:.4f}"
    )
    return 0


class Int8TooLossy(Exception):
    pass


class RingMismatch(Exception):
    pass


class AttentionMismatch(Exception):
    pass


def write_folder(
    out: Path,
    model_file: Path,
    metadata: dict,
    sample: str,
    verification: str,
    license: str,
    run_dir: Path,
    ring_file: Path | None,
    attention_file: Path,
    drafts: dict | None,
) -> None:
    """The model folder (webapp/inference/model_folder.py): the verified graph (and its ring step and
    attention file) moved into onnx/, then its draft table, metadata, loss curve, configuration and
    tokenizer files, and the card."""
    from . import folder as mf

    onnx_file = out / MODEL_FILE
    onnx_file.parent.mkdir(parents=True, exist_ok=True)
    os.replace(model_file, onnx_file)
    place_beside(ring_file, ring_path(onnx_file))
    place_beside(attention_file, attention_path(onnx_file))
    place_table(drafts, onnx_file)
    write_json(beside(onnx_file, ".json"), sidecar(onnx_file, metadata))
    draw_loss_curve(run_dir, beside(onnx_file, ".loss.png"), metadata["training"])
    for name, data in mf.config_files(metadata).items():
        write_json(out / name, data)
    write_card(out, metadata, sample, verification, license)


def write_card(out: Path, metadata: dict, sample: str, verification: str, license: str) -> None:
    from . import folder as mf
    from . import metadata as md

    name = out.resolve().name
    card = (
        mf.front_matter(name, metadata, license)
        + md.model_card(name, metadata, (out / MODEL_FILE).stat().st_size, sample, verification)
        + mf.usage(name, metadata["about"]["examples"][0], mf.end_of_text_id(metadata))
    )
    atomic_write(out / "README.md", lambda tmp: Path(tmp).write_text(card, encoding="utf-8"))


def sidecar(onnx_file: Path, metadata: dict) -> dict:
    """NAME.json: the metadata, and the file's own checksum, which its metadata cannot hold (the
    engine refuses a model file that does not match it: truncated or altered after export)."""
    return {**metadata, SIDECAR_SHA256: file_sha256(onnx_file)}


def write_sidecars(out: Path, metadata: dict, sample: str, verification: str) -> None:
    from . import metadata as md

    write_json(beside(out, ".json"), sidecar(out, metadata))
    card = md.model_card(out.name, metadata, out.stat().st_size, sample, verification)
    atomic_write(beside(out, ".md"), lambda tmp: Path(tmp).write_text(card, encoding="utf-8"))


def draw_loss_curve(run_dir: Path, target: Path, training: dict) -> None:
    """The run's loss curve (a best/ or average/ checkpoint's run is its parent), with the
    exported checkpoint marked (`training`: its metadata's training section)."""
    from train import checkpoint
    from train.plot import plot_losses

    metrics = checkpoint.run_metrics(run_dir)
    if metrics is None:
        return
    step, val_loss, averaged = training["step"], training["val_loss"], training.get("averaged_steps")
    mark = (step, val_loss) if val_loss is not None else None
    label = f"exported: {averaged_phrase(averaged)}" if averaged else None
    atomic_write(target, lambda tmp: plot_losses(metrics, Path(tmp), mark, label))


def quantize_int8(fp32: Path, target: Path, metadata: dict, text: str) -> tuple[dict, str]:
    """Write the int8 form of the float32 file `fp32` to `target`: every MatMul weight stored as
    int8 (symmetric, one scale per output column; see quantize_weights_int8), activations kept
    in float32. Weight-only on purpose: onnxruntime's dynamic quantization picks activation
    scales per call, so a prefill and cached decoding of the same text disagree (the export's
    checks require them equal: docs/model-folder.md, "Export"). Int8TooLossy unless its
    validation loss is within INT8_TOLERANCE of the float32 file's. Returns its metadata and a
    table of the two losses."""
    from webapp.inference.onnx_model import OnnxModel

    from . import metadata as md
    from .onnx_export import quantize_weights_int8, set_metadata

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


def place_beside(verified: Path | None, target: Path) -> None:
    """Move a verified extra file (the ring step, the attention file) to `target`, beside its model
    file; without one, remove what an earlier export left there (it belongs to other weights:
    the engine would refuse it anyway)."""
    if verified:
        os.replace(verified, target)
    else:
        target.unlink(missing_ok=True)


def draft_table(text: str, vocab: list[str], sha256: str) -> dict:
    """The draft table file's contents (webapp/inference/drafting.py), from the training split of `text`
    (the characters the model was fitted to; the validation split stays unseen)."""
    from train.text import split_index
    from webapp.inference.drafting import TABLE_MIN_COUNT, as_text, build_table, table_json

    index = {c: i for i, c in enumerate(vocab)}
    train = text[: split_index(len(text))]
    source = {"dataset_sha256": sha256, "split": "train", "characters": len(train)}
    return table_json(build_table(as_text(index[c] for c in train)), vocab, TABLE_MIN_COUNT, source)


def place_table(drafts: dict | None, model_file: Path) -> None:
    """Write the draft table beside `model_file`; without one, remove one an earlier export left."""
    if drafts:
        write_json(table_path(model_file), drafts)
    else:
        table_path(model_file).unlink(missing_ok=True)


def quantize_ring(model_file: Path, ring_fp32: Path, target: Path, metadata: dict) -> str:
    """The ring step with the int8 weights of `model_file` (the same quantization of the same
    weights), verified against it; RingMismatch if they disagree. Returns its check table."""
    from . import metadata as md
    from .onnx_export import checks_table, quantize_weights_int8, set_metadata, verify_ring

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
    from . import metadata as md
    from .onnx_export import quantize_weights_int8, set_metadata, torch_model_from_onnx

    quantize_weights_int8(attention_fp32, target, given)
    set_metadata(target, md.to_props(metadata))
    return checked_attention(torch_model_from_onnx(model_file), model_file, target, "with int8 weights")


ATTENTION_TABLE = "the attention file"  # how its check table opens in a card


def checked_attention(model, model_file: Path, attention_file: Path, what: str = "") -> str:
    """verify_attention's table for `attention_file`, printed; AttentionMismatch if a check fails."""
    from .onnx_export import checks_table, verify_attention

    checks = verify_attention(model, model_file, attention_file)
    table = (
        f"{ATTENTION_TABLE}{' ' + what if what else ''}, against PyTorch with the weights of {model_file.name}:\n"
        + checks_table(checks).split("\ntolerance")[0]
    )
    print(table)
    if not all(c.ok for c in checks):
        raise AttentionMismatch("the attention file does not match PyTorch (see the table); nothing was written.")
    return table


# -- attention: add the attention file to a model exported before it ---------------------------


def attention_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m export attention",
        description="Add the attention file (onnx/model.attention.onnx: where every head looked, "
        "for the pages' attention view and /inspect) to a model exported before chargpt wrote it, "
        "from the weights in its model file, checked against PyTorch with those weights. "
        "The model file and its text stay as they are.",
    )
    p.add_argument("model", help="a model folder, or an .onnx file, written by python -m export")
    p.add_argument("--force", action="store_true", help="replace an attention file that is already there")
    return p


def attention_main(argv: list[str]) -> int:
    import json

    import onnx
    from onnx import numpy_helper

    from webapp.inference.onnx_model import OnnxModel

    from . import metadata as md
    from .onnx_export import INT8_SUFFIXES, export_attention, name_weights, set_metadata, torch_model_from_onnx

    args = attention_parser().parse_args(argv)
    prog = "python -m export attention"
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
        metadata = {
            k: v
            for k, v in json.loads(beside(onnx_file, ".json").read_text(encoding="utf-8")).items()
            if k != SIDECAR_SHA256
        }
    except (UsageError, ModelLoadError, ValueError, OSError) as e:
        return fail(prog, str(e))
    arrays = {i.name: numpy_helper.to_array(i) for i in onnx.load(str(onnx_file)).graph.initializer}
    q_suffix, scale_suffix = INT8_SUFFIXES
    given = {
        name[: -len(q_suffix)]: (q, arrays[name[: -len(q_suffix)] + scale_suffix])
        for name, q in arrays.items()
        if name.endswith(q_suffix)
    }
    fp32_tmp, tmp = temp_onnx(onnx_file.parent), temp_onnx(onnx_file.parent)
    try:
        export_attention(model, fp32_tmp)
        name_weights(fp32_tmp, model)
        if given:  # the int8 model's own int8 weights, not a second rounding of them
            table = quantize_attention(onnx_file, fp32_tmp, tmp, metadata, given)
        else:
            os.replace(fp32_tmp, tmp)
            set_metadata(tmp, md.to_props(metadata))
            table = checked_attention(model, onnx_file, tmp)
        os.replace(tmp, target)
        card_file = out / "README.md"
        if folder and card_file.is_file():  # the card's verification gets the new file's table
            card = card_file.read_text(encoding="utf-8")
            sample, verification = md.card_parts(card)
            kept = verification.split(f"\n\n{ATTENTION_TABLE}")[0]
            write_card(out, metadata, sample, f"{kept}\n\n{table}", card_license(card))
    except (AttentionMismatch, md.CardError) as e:
        return fail(prog, str(e), VERIFICATION_FAILED)
    finally:
        for path in (fp32_tmp, tmp):
            path.unlink(missing_ok=True)
    print(f"wrote {target} ({target.stat().st_size / 1e6:.2f} MB)")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["eval"]:
        return eval_main(argv[1:])
    if argv[:1] == ["about"]:
        return about_main(argv[1:])
    if argv[:1] == ["attention"]:
        return attention_main(argv[1:])
    return export_main(argv)
