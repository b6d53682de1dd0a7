"""The files an export writes around a verified model file, each moved into place whole: the model
folder (webapp/inference/model_folder.py has its layout), or one file and its sidecars; the card,
the loss curve, the draft table; and the temporary files that become them."""

from __future__ import annotations

import os
from pathlib import Path

from train.files import atomic_write, file_sha256, temp_file, write_json
from webapp.inference.attention import attention_path
from webapp.inference.drafting import table_path
from webapp.inference.model_folder import MODEL_FILE
from webapp.inference.onnx_model import SIDECAR_SHA256, beside
from webapp.inference.phrases import averaged_phrase
from webapp.inference.ring import ring_path

from . import folder as mf
from . import metadata as md


def temp_onnx(near: Path) -> Path:
    """A temporary .onnx file in the nearest existing folder at or above `near` (the same
    file system as the target, so that moving it into place is one rename)."""
    directory = next(d for d in (near, *near.parents) if d.is_dir())
    return temp_file(directory, ".export-", ".onnx")


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


def place_extras(out: Path, ring: Path | None, attention: Path | None, drafts: dict | None) -> None:
    """A model file's ring step, attention file and draft table, moved or written beside it at `out`."""
    place_beside(ring, ring_path(out))
    place_beside(attention, attention_path(out))
    place_table(drafts, out)


def sidecar(onnx_file: Path, metadata: dict) -> dict:
    """NAME.json: the metadata, and the file's own checksum, which its metadata cannot hold (the
    engine refuses a model file that does not match it: truncated or altered after export)."""
    return {**metadata, SIDECAR_SHA256: file_sha256(onnx_file)}


def write_sidecars(out: Path, metadata: dict, sample: str, verification: str) -> None:
    """Beside one exported file NAME.onnx: NAME.json and the card NAME.md."""
    write_json(beside(out, ".json"), sidecar(out, metadata))
    card = md.model_card(out.name, metadata, out.stat().st_size, sample, verification)
    atomic_write(beside(out, ".md"), lambda tmp: Path(tmp).write_text(card, encoding="utf-8"))


def card_license(card: str) -> str:
    """The Hub license id in a card's YAML metadata."""
    return next((line[9:] for line in card.splitlines() if line.startswith("license: ")), "mit")


def write_card(out: Path, metadata: dict, sample: str, verification: str, license: str) -> None:
    """A model folder's README.md: the Hub's front matter, the card, and how to use the folder."""
    name = out.resolve().name
    card = (
        mf.front_matter(name, metadata, license)
        + md.model_card(name, metadata, (out / MODEL_FILE).stat().st_size, sample, verification)
        + mf.usage(name, metadata["about"]["examples"][0], mf.end_of_text_id(metadata))
    )
    atomic_write(out / "README.md", lambda tmp: Path(tmp).write_text(card, encoding="utf-8"))


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
    """The model folder: the verified graph (and its ring step and attention file) moved into
    onnx/, then its draft table, metadata, loss curve, configuration and tokenizer files, and the
    card."""
    onnx_file = out / MODEL_FILE
    onnx_file.parent.mkdir(parents=True, exist_ok=True)
    os.replace(model_file, onnx_file)
    place_extras(onnx_file, ring_file, attention_file, drafts)
    write_json(beside(onnx_file, ".json"), sidecar(onnx_file, metadata))
    draw_loss_curve(run_dir, beside(onnx_file, ".loss.png"), metadata["training"])
    for name, data in mf.config_files(metadata).items():
        write_json(out / name, data)
    write_card(out, metadata, sample, verification, license)


def write_file(out: Path, model_file: Path, metadata: dict, sample: str, verification: str, run_dir: Path) -> None:
    """One file NAME.onnx and its sidecars (NAME.json, the card NAME.md, NAME.loss.png); its ring
    step, attention file and draft table are placed by the caller."""
    out.parent.mkdir(parents=True, exist_ok=True)
    os.replace(model_file, out)
    write_sidecars(out, metadata, sample, verification)
    draw_loss_curve(run_dir, beside(out, ".loss.png"), metadata["training"])
