"""`python -m export about FOLDER --title ...`: rewrite what the pages and the card say about an
exported model folder (its title, dataset name, description, example prompts) in place, in
seconds; the weights, the sample and the verification stay as exported."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from train.files import atomic_write, file_sha256, write_json
from train.usage import fail
from webapp.inference.attention import attention_path
from webapp.inference.model_folder import MODEL_FILE
from webapp.inference.onnx_model import SIDECAR_SHA256, beside
from webapp.inference.ring import ring_path

from . import about as page
from . import metadata as md
from .errors import UsageError
from .onnx_export import set_metadata
from .writing import card_license, sidecar, write_card

PROG = "python -m export about"
DESCRIPTION = (
    "Rewrite what the pages and the model card say about an exported model folder "
    "(its title, dataset name, description, example prompts) in place: the weights "
    "and the verification stay as exported; it takes seconds, not an export."
)


def add_about_flags(p: argparse.ArgumentParser, default: str) -> None:
    """The flags that say what the pages and the card say (export takes them too)."""
    words = p.add_argument_group(f"what the pages and the card say about the model (default: {default})")
    words.add_argument("--title", help="the page's title (default 'chargpt: DATASET')")
    words.add_argument(
        "--dataset-name",
        help="a short name of the training text (default: from its file name; Tiny Shakespeare for it)",
    )
    words.add_argument("--description", help="one line under the title")
    words.add_argument(
        "--example",
        action="append",
        metavar="PROMPT",
        help="an example prompt (repeat the flag for several; "
        "the first is the default prompt; \\n stands for a newline). Default: the text's most frequent "
        "short lines and line openings",
    )


def about_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description=DESCRIPTION)
    p.add_argument("folder", help="a model folder written by python -m export")
    add_about_flags(p, "as they are; a title or description derived from the old dataset name follows the new one")
    return p


def require_folder(out: Path) -> None:
    """UsageError unless `out` holds a model folder's files."""
    onnx_file = out / MODEL_FILE
    if not (onnx_file.is_file() and beside(onnx_file, ".json").is_file() and (out / "README.md").is_file()):
        raise UsageError(
            f"{out} is not a model folder written by python -m export (it needs {MODEL_FILE}, "
            f"{beside(Path(MODEL_FILE), '.json')} and README.md)."
        )


def read_folder(out: Path) -> tuple[dict, str, str, str]:
    """A model folder's metadata (without the file's checksum), its card, and the card's sample
    and verification; UsageError if they are not what python -m export wrote, whole."""
    onnx_file, card_file = out / MODEL_FILE, out / "README.md"
    try:
        sidecar_meta = json.loads(beside(onnx_file, ".json").read_text(encoding="utf-8"))
        _ = sidecar_meta["about"], sidecar_meta["vocab"]  # both must be there
    except (ValueError, KeyError, TypeError) as e:
        raise UsageError(f"{beside(onnx_file, '.json')} is not the metadata python -m export writes ({e!r}).") from None
    if sidecar_meta.get(SIDECAR_SHA256) != file_sha256(onnx_file):
        raise UsageError(
            f"{onnx_file} does not match the SHA-256 recorded beside it (truncated or altered): export it again."
        )
    card = card_file.read_text(encoding="utf-8")
    try:
        sample, verification = md.card_parts(card)
    except md.CardError as e:
        raise UsageError(f"{card_file} is not a card python -m export wrote: {e}.") from None
    return {k: v for k, v in sidecar_meta.items() if k != SIDECAR_SHA256}, card, sample, verification


def about_main(argv: list[str]) -> int:
    args = about_parser().parse_args(argv)
    out = Path(args.folder)
    onnx_file = out / MODEL_FILE
    try:
        require_folder(out)
        if not any((args.title, args.dataset_name, args.description, args.example)):
            raise UsageError("give at least one of --title, --dataset-name, --description, --example.")
        metadata, card, sample, verification = read_folder(out)
        metadata["about"] = page.renamed(
            metadata["about"], metadata["vocab"], args.title, args.dataset_name, args.description, args.example
        )
    except (UsageError, page.AboutError) as e:
        return fail(PROG, str(e))
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
    write_card(out, metadata, sample, verification, card_license(card))
    print(
        f'rewrote {out}{os.sep}: the page is now "{metadata["about"]["title"]}" '
        f"({len(metadata['about']['examples'])} example prompts)"
    )
    return 0
