"""`python -m export RUN_DIR [--out DIR/ | --out NAME.onnx] [--quantize int8]`: a training
checkpoint to a verified model folder (or one file and its sidecars). Every file is written to
a temporary name, checked against PyTorch, and moved into place only when every check passes;
a failure writes nothing (docs/model-folder.md, "Export")."""

from __future__ import annotations

import argparse
import math
import os
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np

from train import checkpoint
from train.model import GPTLanguageModel
from train.text import DataError, read_text, split_index
from train.usage import fail
from webapp.inference.attention import attention_path
from webapp.inference.drafting import table_path
from webapp.inference.model_folder import FOLDER_FILES, MODEL_FILE
from webapp.inference.onnx_model import OnnxModel, beside
from webapp.inference.ring import ring_path

from . import about as page
from . import metadata as md
from .about_command import add_about_flags
from .errors import VERIFICATION_FAILED, UsageError, VerificationError
from .eval_command import measure_loss, training_text
from .onnx_export import export_onnx, export_ring, name_weights, set_metadata
from .verification import checks_table, verify, verify_attention, verify_ring
from .verified import quantize_attention, quantize_int8, quantize_ring
from .writing import draft_table, place_extras, temp_onnx, write_file, write_folder, write_sidecars

PROG = "python -m export"
DESCRIPTION = (
    "Export a training checkpoint to a model folder (onnx/model.onnx with a KV cache and the window "
    "in its graph, the configuration and tokenizer files that generation libraries read, a model card), "
    "or to one .onnx file with its JSON sidecar and card, verified against PyTorch first. "
    "See also: python -m export eval MODEL [--data FILE], python -m export about FOLDER --title ..."
)


def export_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description=DESCRIPTION)
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
        "of up to 6 characters; without it the engine drafts from the text's own repeats only",
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
            *(f(onnx_file) for f in (ring_path, attention_path, table_path)),
            onnx_file,
            beside(onnx_file, ".json"),
            beside(onnx_file, ".loss.png"),
            out / "README.md",
            *(out / name for name in FOLDER_FILES if not name.startswith("onnx")),
        ]
    files = [out, *(f(out) for f in (ring_path, attention_path, table_path))]
    files += [beside(out, suffix) for suffix in (".json", ".md", ".loss.png")]
    if quantize:
        int8 = beside(out, ".int8.onnx")
        files += [int8, *(f(int8) for f in (ring_path, attention_path, table_path))]
        files += [beside(out, suffix) for suffix in (".int8.json", ".int8.md")]
    return files


def check_outputs(out: Path, folder: bool, quantize: bool, force: bool) -> None:
    if folder and out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} is a file, not a folder; choose another --out.")
    if not folder and out.suffix != ".onnx":
        raise UsageError(f"--out {out} must be a folder (ending in /) or a file ending in .onnx.")
    existing = [str(t) for t in planned_files(out, folder, quantize) if t.exists()]
    if existing and not force:
        raise UsageError(
            f"{', '.join(existing)} already exist{'s' if len(existing) == 1 else ''}; pass --force to replace "
            f"{'it' if len(existing) == 1 else 'them'}, or choose another --out."
        )


def lower_loss_checkpoint(run_dir: Path) -> Path:
    """Of the finished run's final weights, its best/ and its average/ checkpoints, the one with
    the lowest whole-split validation loss (training records each when it ends)."""
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


@dataclass
class Plan:
    """What an export works from, every input checked: the checkpoint and its model, the
    training text, where the files go, and what the pages will say."""

    run_dir: Path
    meta: dict
    model: GPTLanguageModel
    text: str
    sha256: str
    out: Path
    folder: bool
    about: dict


def plan_export(args: argparse.Namespace) -> Plan:
    """The export's inputs, checked before anything is traced: UsageError (or a checkpoint's or
    text's own error) naming the first that is wrong."""
    run_dir = Path(args.run_dir)
    folder = is_folder(args.out)
    out = Path(args.out) if args.out else run_dir / "model"
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
    try:
        words = dict(title=args.title, dataset=args.dataset_name, description=args.description, examples=args.example)
        about = page.build(meta["vocab"], str(data_path), sha, text, **words)
    except page.AboutError as e:
        raise UsageError(str(e)) from None
    return Plan(run_dir, meta, model, text, sha, out, folder, about)


@dataclass
class TempFiles:
    """The export's files under temporary names, beside where they go; None: not made."""

    model: Path
    ring: Path | None = None  # the ring step (webapp/inference/ring.py), rotary models only
    attention: Path | None = None  # where every head looked (webapp/inference/attention.py)
    int8: Path | None = None
    int8_ring: Path | None = None
    int8_attention: Path | None = None
    drafts: dict | None = None  # the draft table's contents, beside a ring step only

    def remove(self) -> None:
        for f in fields(self):
            path = getattr(self, f.name)
            if isinstance(path, Path):
                path.unlink(missing_ok=True)


class ExportMismatch(VerificationError):
    pass


def trace_and_verify(plan: Plan, files: TempFiles, metadata: dict) -> tuple[str, str]:
    """Trace the model file, its ring step and its attention file, and check each against
    PyTorch; ExportMismatch if any check fails. Returns the check table and the greedy sample."""
    vocab, model = plan.meta["vocab"], plan.model
    index = {c: i for i, c in enumerate(vocab)}
    val_ids = np.array([index[c] for c in plan.text[split_index(len(plan.text)) :]], dtype=np.int64)
    prompt = [index["\n"]] if "\n" in index else [0]
    export_onnx(model, files.model, files.attention)
    name_weights(files.model, model)
    set_metadata(files.model, md.to_props(metadata))
    checks, greedy_ids = verify(model, files.model, prompt, val_ids)
    if files.ring:
        export_ring(model, files.ring)
        set_metadata(files.ring, md.to_props(metadata))
        checks += verify_ring(files.model, files.ring)
    name_weights(files.attention, model)
    set_metadata(files.attention, md.to_props(metadata))
    checks += verify_attention(model, files.model, files.attention)
    table = checks_table(checks)
    print(table)
    if not all(c.ok for c in checks):
        raise ExportMismatch(
            f"the ONNX export does not match PyTorch (see the table); nothing was written to {plan.out}."
        )
    return table, "".join(vocab[i] for i in greedy_ids)


def make_int8(plan: Plan, files: TempFiles, metadata: dict) -> tuple[dict, str]:
    """The int8 model file and its extra files, each checked; returns its metadata and tables."""
    files.int8 = temp_onnx(files.model.parent)
    int8_meta, int8_table = quantize_int8(files.model, files.int8, metadata, plan.text)
    if files.ring:
        files.int8_ring = temp_onnx(files.model.parent)
        int8_table += "\n\n" + quantize_ring(files.int8, files.ring, files.int8_ring, int8_meta)
    files.int8_attention = temp_onnx(files.model.parent)
    int8_table += "\n\n" + quantize_attention(files.int8, files.attention, files.int8_attention, int8_meta)
    return int8_meta, int8_table


def export_main(argv: list[str]) -> int:
    args = export_parser().parse_args(argv)
    try:
        plan = plan_export(args)
    except (UsageError, checkpoint.CheckpointError, DataError, ValueError) as e:
        if isinstance(e, DataError):
            e = UsageError(f"{e} The export measures the model on its training text: pass --data FILE.")
        return fail(PROG, str(e))
    model, meta = plan.model, plan.meta
    metadata = md.build(meta, model.num_params(), meta.get("val_loss_full"), plan.about)
    files = TempFiles(temp_onnx(plan.out if plan.folder else plan.out.parent))
    files.ring = temp_onnx(files.model.parent) if model.config.position == "rotary" else None
    files.attention = temp_onnx(files.model.parent)
    if files.ring and not args.no_draft_table:
        files.drafts = draft_table(plan.text, meta["vocab"], plan.sha256)
    try:
        print(f"exporting {plan.run_dir} (step {meta['step']}, {model.num_params() / 1e6} M parameters) ...")
        table, sample = trace_and_verify(plan, files, metadata)
        if metadata["training"]["val_loss"] is None:
            metadata["training"]["val_loss"] = measure_loss(OnnxModel(files.model), plan.text, "val")[0]
            set_metadata(files.model, md.to_props(metadata))
        int8_meta, int8_table = make_int8(plan, files, metadata) if args.quantize else (None, "")
        shipped_meta = place_outputs(plan, files, args, (metadata, table), (int8_meta, int8_table), sample)
    except VerificationError as e:
        return fail(PROG, str(e), VERIFICATION_FAILED)
    finally:
        files.remove()
    kind = "model folder" if plan.folder else "one file and its sidecars"
    loss = shipped_meta["training"]["val_loss"]
    print(f"wrote {plan.out}{os.sep if plan.folder else ''} ({kind}); val loss {loss:.4f}")
    return 0


def place_outputs(plan: Plan, files: TempFiles, args, fp32: tuple, int8: tuple, sample: str) -> dict:
    """Move the verified files into place: a folder ships the int8 file when there is one; one
    file NAME.onnx gets NAME.int8.onnx beside it. Returns the shipped file's metadata."""
    (metadata, table), (int8_meta, int8_table) = fp32, int8
    both = f"{table}\n\n{int8_table}"
    if plan.folder:
        shipped = (files.int8, files.int8_ring, files.int8_attention) if args.quantize else None
        model, ring, attention = shipped or (files.model, files.ring, files.attention)
        shipped_meta = int8_meta if args.quantize else metadata
        verification = both if args.quantize else table
        write_folder(
            plan.out,
            model,
            shipped_meta,
            sample,
            verification,
            args.license,
            plan.run_dir,
            ring,
            attention,
            files.drafts,
        )
        return shipped_meta
    write_file(plan.out, files.model, metadata, sample, table, plan.run_dir)
    place_extras(plan.out, files.ring, files.attention, files.drafts)
    if args.quantize:
        int8_path = beside(plan.out, ".int8.onnx")
        os.replace(files.int8, int8_path)
        place_extras(int8_path, files.int8_ring, files.int8_attention, files.drafts)
        write_sidecars(int8_path, int8_meta, sample, both)
        return int8_meta
    return metadata
