"""Training data: find or download the corpus, split it, draw batches (torch side).

The torch-free parts (reading text, the vocabulary, evaluation windows) are in `text.py`.
"""

from __future__ import annotations

import os
import tempfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import torch

from .text import (
    SHAKESPEARE_SHA256,
    TRAIN_FRACTION,
    CharTokenizer,
    DataError,
    cache_dir,
    cached_shakespeare,
    read_text,
    sha256_bytes,
    split_index,
)

SHAKESPEARE_URL = "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt"


def resolve_data_path(path: str | None) -> Path:
    """The file to train on: `path` if given, else Tiny Shakespeare from the cache, downloading
    and verifying it the first time."""
    if path is not None:
        return Path(path)
    found = cached_shakespeare()
    if found:
        return found
    cached = cache_dir() / "tinyshakespeare.txt"
    url = os.environ.get("CHARGPT_SHAKESPEARE_URL", SHAKESPEARE_URL)
    hint = f"download it yourself from {SHAKESPEARE_URL} and pass --data PATH, or save it as {cached}"
    try:
        with urllib.request.urlopen(url, timeout=30) as response:
            data = response.read()
    except OSError as e:
        raise DataError(f"Tiny Shakespeare is not cached and could not be downloaded ({e}); {hint}.") from None
    if sha256_bytes(data) != SHAKESPEARE_SHA256:
        raise DataError(f"the file downloaded from {url} is not Tiny Shakespeare (SHA-256 mismatch); {hint}.")
    cached.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=cached.parent, delete=False) as tmp:
        tmp.write(data)
    os.replace(tmp.name, cached)
    return cached


def split_ids(ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    n = split_index(len(ids))
    return ids[:n], ids[n:]


def check_long_enough(train: torch.Tensor, val: torch.Tensor, block_size: int) -> None:
    shortest = min(len(train), len(val))
    if shortest < block_size + 1:
        raise DataError(
            f"the text is too short for block_size {block_size}: its "
            f"{'validation' if len(val) < len(train) else 'training'} "
            f"split has {shortest} characters and needs at least {block_size + 1}; "
            f"use a longer file (at least {int((block_size + 1) / (1 - TRAIN_FRACTION)) + 1} characters) or a "
            "smaller --block-size."
        )


def get_batch(data: torch.Tensor, batch_size: int, block_size: int, generator: torch.Generator):
    """Random windows, as the lecture: x [B, T] and y = x shifted by one character."""
    ix = torch.randint(len(data) - block_size, (batch_size,), generator=generator)
    positions = ix[:, None] + torch.arange(block_size)  # [B, T]
    return data[positions], data[positions + 1]


@dataclass
class Corpus:
    path: str
    sha256: str
    tokenizer: CharTokenizer
    train: torch.Tensor  # int64 ids
    val: torch.Tensor


def load_corpus(data_path: str | None) -> Corpus:
    path = resolve_data_path(data_path)
    text, sha = read_text(path)
    tokenizer = CharTokenizer.from_text(text)
    train, val = split_ids(torch.tensor(tokenizer.encode(text), dtype=torch.long))
    return Corpus(str(path), sha, tokenizer, train, val)


def load_run_corpus(meta: dict, data_path: str | None = None) -> Corpus:
    """The text a run trained on: data_path, or else the path the run recorded; DataError when
    the file is not that text (its SHA-256 differs)."""
    corpus = load_corpus(data_path or meta["dataset"]["path"])
    if corpus.sha256 != meta["dataset"]["sha256"]:
        raise DataError(
            f"{corpus.path} is not the text this run was trained on (SHA-256 differs); pass the original with --data."
        )
    return corpus
