"""Text data: find or download the corpus, build the character vocabulary, split, batch.

Pure functions over tensors for the maths (encode, split, batches, evaluation windows);
file and network access only in `resolve_data_path` and `read_text`.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import torch

SHAKESPEARE_SHA256 = "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"
SHAKESPEARE_URL = "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt"
TRAIN_FRACTION = 0.9  # first 90% train, last 10% validation, as the seed and nanoGPT


class DataError(ValueError):
    """A data problem the user can fix; the message is one sentence saying how."""


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def cache_dir() -> Path:
    base = os.environ.get("CHARGPT_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "chargpt"
    )
    return Path(base)


def resolve_data_path(path: str | None) -> Path:
    """The file to train on: `path` if given, else Tiny Shakespeare from the cache, downloading
    and verifying it the first time."""
    if path is not None:
        return Path(path)
    cached = cache_dir() / "tinyshakespeare.txt"
    if cached.is_file() and sha256_bytes(cached.read_bytes()) == SHAKESPEARE_SHA256:
        return cached
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


def read_text(path: Path) -> tuple[str, str]:
    """The file's text and its SHA-256; DataError for a missing, empty or non-UTF-8 file."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"data file {path} does not exist; pass --data with the path of a UTF-8 text file.") from None
    except IsADirectoryError:
        raise DataError(f"data path {path} is a directory; pass --data with the path of a UTF-8 text file.") from None
    except OSError as e:
        raise DataError(f"data file {path} cannot be read ({e.strerror}).") from None
    if not raw:
        raise DataError(f"data file {path} is empty; give a UTF-8 text file with some text in it.")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise DataError(
            f"data file {path} is not UTF-8 text (byte {e.start} is invalid); convert it to UTF-8 first."
        ) from None
    return text, sha256_bytes(raw)


@dataclass(frozen=True)
class CharTokenizer:
    """Characters <-> ids; the vocabulary is the sorted set of the corpus's characters."""

    chars: tuple[str, ...]

    @classmethod
    def from_text(cls, text: str) -> "CharTokenizer":
        return cls(tuple(sorted(set(text))))

    @property
    def vocab_size(self) -> int:
        return len(self.chars)

    def encode(self, text: str) -> list[int]:
        index = {c: i for i, c in enumerate(self.chars)}
        return [index[c] for c in text]

    def decode(self, ids) -> str:
        return "".join(self.chars[int(i)] for i in ids)


def split_ids(ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    n = int(TRAIN_FRACTION * len(ids))
    return ids[:n], ids[n:]


def check_long_enough(train: torch.Tensor, val: torch.Tensor, block_size: int) -> None:
    shortest = min(len(train), len(val))
    if shortest < block_size + 1:
        raise DataError(
            f"the text is too short for block_size {block_size}: its {'validation' if len(val) < len(train) else 'training'} "
            f"split has {shortest} characters and needs at least {block_size + 1}; "
            f"use a longer file (at least {int((block_size + 1) / (1 - TRAIN_FRACTION)) + 1} characters) or a smaller --block-size."
        )


def get_batch(data: torch.Tensor, batch_size: int, block_size: int, generator: torch.Generator):
    """Random windows, as the seed: x [B, T] and y = x shifted by one character."""
    ix = torch.randint(len(data) - block_size, (batch_size,), generator=generator)
    positions = ix[:, None] + torch.arange(block_size)  # [B, T]
    return data[positions], data[positions + 1]


def eval_windows(data: torch.Tensor, block_size: int) -> list[tuple[int, int]]:
    """(start, length) of consecutive non-overlapping windows covering every next-character
    prediction of `data` once; the last window may be shorter."""
    n_targets = len(data) - 1
    return [(s, min(block_size, n_targets - s)) for s in range(0, n_targets, block_size)]
