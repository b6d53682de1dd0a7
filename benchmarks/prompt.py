"""The benchmarks' prompt: the start of the validation split of the training text (torch-free)."""

from __future__ import annotations

from pathlib import Path

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "tinyshakespeare.txt"
FALLBACK_PROMPT = "ROMEO:\nBut soft, what light through yonder window breaks?\n"


def load_prompt(path: Path | None, length: int) -> str:
    """The first `length` characters of the validation split (the last 10%) of the text."""
    if path is None or not path.is_file():
        return (FALLBACK_PROMPT * (length // len(FALLBACK_PROMPT) + 1))[:length]
    text = path.read_text(encoding="utf-8")
    return text[int(0.9 * len(text)) :][:length]
