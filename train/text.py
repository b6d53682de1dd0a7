"""Text without torch: reading a corpus, the character vocabulary, the split, evaluation
windows. Shared by training, export and the onnxruntime-only evaluation."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

TRAIN_FRACTION = 0.9  # first 90% train, last 10% validation, as the lecture and nanoGPT
SHAKESPEARE_SHA256 = "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"


class DataError(ValueError):
    """A data problem the user can fix; the message is one sentence saying how."""


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def cache_dir() -> Path:
    base = os.environ.get("CHARGPT_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "chargpt"
    )
    return Path(base)


def cached_shakespeare() -> Path | None:
    """Tiny Shakespeare in the cache (`python -m train` downloads it there), if it is there whole."""
    cached = cache_dir() / "tinyshakespeare.txt"
    if cached.is_file() and sha256_bytes(cached.read_bytes()) == SHAKESPEARE_SHA256:
        return cached
    return None


def read_text(path: Path) -> tuple[str, str]:
    """The file's text and its SHA-256; DataError for a missing, empty or non-UTF-8 file."""
    try:
        raw = Path(path).read_bytes()
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


def split_index(n: int) -> int:
    """Where the validation split starts in a sequence of n characters."""
    return int(TRAIN_FRACTION * n)


@dataclass(frozen=True)
class CharTokenizer:
    """Characters <-> ids; the vocabulary is the sorted set of the corpus's characters."""

    chars: tuple[str, ...]

    @classmethod
    def from_text(cls, text: str) -> CharTokenizer:
        return cls(tuple(sorted(set(text))))

    @property
    def vocab_size(self) -> int:
        return len(self.chars)

    def encode(self, text: str) -> list[int]:
        index = {c: i for i, c in enumerate(self.chars)}
        return [index[c] for c in text]

    def decode(self, ids) -> str:
        return "".join(self.chars[int(i)] for i in ids)


def eval_windows(n: int, block_size: int) -> list[tuple[int, int]]:
    """(start, length) of consecutive non-overlapping windows that cover every next-character
    prediction in a sequence of n ids once; the last window may be shorter."""
    n_targets = n - 1
    return [(s, min(block_size, n_targets - s)) for s in range(0, n_targets, block_size)]


def eval_batches(n: int, block_size: int, batch_size: int):
    """The windows of eval_windows(n, block_size) in groups of batch_size, each group split by
    window length (only the very last window can be shorter): yields (starts, length)."""
    windows = eval_windows(n, block_size)
    for i in range(0, len(windows), batch_size):
        group = windows[i : i + batch_size]
        for length in sorted({w for _, w in group}, reverse=True):
            yield [s for s, w in group if w == length], length
