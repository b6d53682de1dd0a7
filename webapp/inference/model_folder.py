"""The model folder (docs/model-folder.md): what `python -m export RUN --out DIR/` writes and generation
libraries load, in the Hugging Face layout.

    DIR/onnx/model.onnx          the graph (chargpt format 2)
    DIR/onnx/model.json          its metadata, for runtimes that cannot read metadata_props
    DIR/onnx/model.ring.onnx     rotary models: the engine's faster cached step (webapp/inference/ring.py), optional
    DIR/onnx/model.drafts.json   with it: the training text's frequent continuations to draft from
                                 (webapp/inference/drafting.py), optional
    DIR/config.json              for transformers.js (and anything reading a Hub config)
    DIR/generation_config.json
    DIR/tokenizer.json           the character vocabulary in the tokenizers format
    DIR/tokenizer_config.json
    DIR/genai_config.json        for onnxruntime-genai (Python, C#, Java, C)
    DIR/README.md                the model card

The tokenizer is GPT-2's byte-level BPE, the one kind every tool implements the same way:
each character is spelled in GPT-2's byte alphabet (its UTF-8 bytes, each shown as a printable
character) and merged back into one token, so any text, in any script, gets exactly the ids of
the model's vocabulary. This module holds that alphabet and the checks run when a folder is
loaded; export/folder.py writes the files.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

MODEL_FILE = Path("onnx") / "model.onnx"
TOKENIZER = "tokenizer.json"
FOLDER_FILES = (
    "config.json",
    "generation_config.json",
    TOKENIZER,
    "tokenizer_config.json",
    "genai_config.json",
    str(MODEL_FILE),
    str(MODEL_FILE.with_suffix(".json")),
)


class ModelLoadError(ValueError):
    """A model (folder or file) that cannot be used; the message names the file and what to do."""


@functools.cache
def byte_alphabet() -> dict[int, str]:
    """GPT-2's reversible map from the 256 byte values to printable characters: the printable
    Latin-1 bytes stand for themselves, the others (space, newline, controls) for U+0100 on."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table, shifted = {}, 0
    for byte in range(256):
        if byte in printable:
            table[byte] = chr(byte)
        else:
            table[byte] = chr(256 + shifted)
            shifted += 1
    return table


@functools.cache
def byte_values() -> dict[str, int]:
    return {c: b for b, c in byte_alphabet().items()}


def byte_level(data: bytes) -> str:
    """UTF-8 bytes spelled in the byte alphabet: how tokenizer.json writes a token."""
    alphabet = byte_alphabet()
    return "".join(alphabet[b] for b in data)


def from_byte_level(token: str) -> str | None:
    """The text a byte-level token stands for, or None if it is not whole UTF-8 (a piece of a
    character, which only exists on the way to being merged)."""
    inverse = byte_values()
    try:
        return bytes(inverse[c] for c in token).decode("utf-8")
    except (KeyError, UnicodeDecodeError):
        return None


def check_files(folder: Path) -> None:
    missing = [name for name in FOLDER_FILES if not (folder / name).is_file()]
    if missing:
        raise ModelLoadError(
            f"the model folder {folder} has no {missing[0]}"
            + (f" (nor {', '.join(missing[1:])})" if missing[1:] else "")
            + "; export the folder again with `python -m export RUN_DIR --out DIR/`."
        )


def check_tokenizer(folder: Path, vocab: list[str]) -> None:
    """ModelLoadError unless tokenizer.json gives each character of the model's vocabulary its id."""
    path = folder / TOKENIZER
    try:
        ids = json.loads(path.read_text(encoding="utf-8"))["model"]["vocab"]
        chars = {i: from_byte_level(token) for token, i in ids.items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise ModelLoadError(
            f"{path} is not a tokenizer.json with a vocabulary ({type(e).__name__}: {e}); export the folder again."
        ) from None
    wrong = next((i for i, c in enumerate(vocab) if chars.get(i) != c), None)
    if wrong is not None:
        raise ModelLoadError(
            f"{path} disagrees with the model's vocabulary: id {wrong} is {chars.get(wrong)!r} there and "
            f"{vocab[wrong]!r} in the model; export the folder again so that both come from one checkpoint."
        )


def config_fields(n_layer: int, n_head: int, head_dim: int, vocab_size: int) -> dict[str, dict[str, int]]:
    """What each configuration file must say about the graph, by file and dotted key: the sizes
    generation libraries build their caches and logits from, and the special ids (the end of
    text, the graph's last logit column: vocab_size - 1). export/folder.py writes these files."""
    end = vocab_size - 1
    ids = {"bos_token_id": end, "eos_token_id": end, "pad_token_id": end}
    return {
        "config.json": {
            "n_layer": n_layer,
            "n_head": n_head,
            "n_embd": n_head * head_dim,
            "vocab_size": vocab_size,
            **ids,
        },
        "generation_config.json": ids,
        "genai_config.json": {
            "model.vocab_size": vocab_size,
            **{f"model.{k}": v for k, v in ids.items()},
            "model.decoder.num_hidden_layers": n_layer,
            "model.decoder.num_attention_heads": n_head,
            "model.decoder.num_key_value_heads": n_head,
            "model.decoder.head_size": head_dim,
            "model.decoder.hidden_size": n_head * head_dim,
        },
    }


def check_configs(folder: Path, n_layer: int, n_head: int, head_dim: int, vocab_size: int) -> None:
    """ModelLoadError, naming the file and the field, unless every configuration file agrees
    with the graph's sizes (config_fields): a library that trusts a wrong one builds caches of
    the wrong shape or stops on the wrong id."""
    for name, fields in config_fields(n_layer, n_head, head_dim, vocab_size).items():
        path = folder / name
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            raise ModelLoadError(f"{path} is not readable JSON; export the folder again.") from None
        for key, want in fields.items():
            got = data
            for part in key.split("."):
                got = got.get(part) if isinstance(got, dict) else None
            if got != want or isinstance(got, bool):
                raise ModelLoadError(
                    f"{path} disagrees with the model's graph: {key} is {json.dumps(got)} there and {want} in "
                    "the graph; export the folder again so that all its files come from one checkpoint."
                )
